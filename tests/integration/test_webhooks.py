"""Standard Webhooks on the real stack: a receiver that verifies `webhook-signature` with the standardwebhooks
package; a receiver that stays down until the delivery is given up (status failed, metric counted), then
POST /webhooks/deliveries/{id}/retry re-arms it and the receiver, now up, gets it.

The stack runs with ZORGPOT_WEBHOOK_GIVE_UP_HOURS=0.001 (3.6 s) and a short backoff, so the give-up happens
within seconds; the test waits on the delivery's status, never for a fixed time."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ops.stack import Stack, free_port, start_on_free_ports
from tests.integration.client import Api, Region
from tests.integration.conftest import database_env
from tests.integration.test_settlement import wait_applied

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, database_server: object) -> Iterator[Stack]:
    env = {**database_env(), "ZORGPOT_WEBHOOK_GIVE_UP_HOURS": "0.001", "ZORGPOT_WEBHOOK_BACKOFF_BASE_S": "0.2",
           "ZORGPOT_WEBHOOK_BACKOFF_MAX_S": "1"}
    stack = start_on_free_ports(tmp_path_factory.mktemp("webhooks"), "zp_wh", env_extra=env)
    yield stack
    stack.stop_all()


class StandardReceiver:
    """Verifies every delivery with the standardwebhooks package (401 when it fails) and the old header."""

    def __init__(self, secret: str, key: str | bytes, port: int = 0) -> None:
        self.verifier = Webhook(key)
        self.secret = secret
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.headers: list[dict[str, str]] = []
        self.refused: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = dict(self.headers.items())
                try:
                    statement = receiver.verifier.verify(body, headers)
                    legacy = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
                    assert hmac.compare_digest(legacy, headers["X-Zorgpot-Signature"])
                    receiver.headers.append(headers)
                    receiver.received.setdefault(headers["webhook-id"], []).append(statement)
                    status = 204
                except (WebhookVerificationError, AssertionError, KeyError) as exc:
                    receiver.refused.append(repr(exc))
                    status = 401
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/statements"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _delivery(api: Api, statement_id: str) -> dict[str, Any]:
    reply = api.get("/webhooks/deliveries", params={"statement_id": statement_id})
    assert reply.status_code == 200, reply.text
    return reply.json()[0]


def _wait(predicate, timeout: float = 60) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except IndexError:
            pass  # the feed has not recorded the statement's delivery yet
        time.sleep(0.1)
    return False


def _give_ups(stack: Stack) -> float:
    text = httpx.get(f"{stack.gateway_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("zorgpot_webhook_give_ups_total "):
            return float(line.split()[1])
    return 0.0


def test_standard_webhooks_signatures_give_up_and_retry(stack: Stack, tmp_path: Path) -> None:
    with Api(stack) as api:
        region = Region(api).build(pupils_per_group=5)  # pupils p0 live in GM1507, the others in GM0984
        for i in range(4):
            reply = api.post_retrying("/hours", json=region.registration(f"wh-{i}", day=dt.date(2025, 9, 1 + i),
                                                                         pupils=[f"g1-p{i + 1}", "g1-p0"]))
            assert reply.status_code == 202, reply.text
        wait_applied(stack, region.arrangement_id, 4)

        # GM0984: a secret in the spec's whsec_ form. GM1507: a plain secret (its UTF-8 bytes are the key)
        # and a receiver that is down: nothing listens on its port yet.
        whsec = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        plain = secrets.token_hex(16)
        up = StandardReceiver(whsec, whsec)
        down_port = free_port()
        assert api.put("/municipalities/GM0984/webhook", {"url": up.url, "secret": whsec}).status_code == 200
        assert api.put("/municipalities/GM1507/webhook",
                       {"url": f"http://127.0.0.1:{down_port}/statements", "secret": plain}).status_code == 200
        bad = api.put("/municipalities/GM1507/webhook", {"url": up.url, "secret": "whsec_not*base64*at*all"})
        assert bad.status_code == 422 and "base64" in bad.text
        give_ups_before = _give_ups(stack)

        close = api.post("/settlements/close", json={"arrangement_id": region.arrangement_id,
                                                     "period_start": "2025-09-01", "period_end": "2025-09-30"})
        assert close.status_code == 201, close.text
        ids = {s["municipality"]: s["statement_id"] for s in close.json()["statements"]}
        assert set(ids) == {"GM0984", "GM1507"}
        try:
            # The receiver that is up verified the Standard Webhooks signature (and the old header).
            assert _wait(lambda: _delivery(api, ids["GM0984"])["status"] == "delivered"), _delivery(api, ids["GM0984"])
            assert up.refused == [] and list(up.received) == [ids["GM0984"]]
            headers = up.headers[0]
            assert headers["webhook-signature"].startswith("v1,")
            assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
            assert up.received[ids["GM0984"]][0]["statement_id"] == ids["GM0984"]

            # The receiver that stays down: retried with backoff, then given up after webhook_give_up_hours.
            sid = ids["GM1507"]
            assert _wait(lambda: _delivery(api, sid)["status"] == "failed", timeout=90), _delivery(api, sid)
            failed = _delivery(api, sid)
            assert failed["attempts"] >= 2 and failed["failed_at"] and failed["next_attempt_at"] is None
            assert "ConnectError" in failed["last_error"]
            assert _give_ups(stack) == give_ups_before + 1
            attempts = failed["attempts"]
            later = time.monotonic() + 2.0  # a failed delivery is no longer tried (a few backoff periods)
            while time.monotonic() < later:
                assert _delivery(api, sid)["attempts"] == attempts
                time.sleep(0.2)

            # Who may retry, and what: a municipality no; an unknown id 404; a delivered one 200, untouched.
            with api.as_token(api.token_for("municipality", "GM1507")) as municipality:
                assert municipality.post(f"/webhooks/deliveries/{sid}/retry").status_code == 403
            assert api.post("/webhooks/deliveries/no-such:2025-09-01:2025-09-30:GM1507/retry").status_code == 404
            done = api.post(f"/webhooks/deliveries/{ids['GM0984']}/retry")
            assert done.status_code == 200 and done.json()["rearmed"] is False

            # The receiver comes up (plain secret: its UTF-8 bytes are the key); retry re-arms the delivery.
            late = StandardReceiver(plain, plain.encode(), port=down_port)
            try:
                retry = api.post(f"/webhooks/deliveries/{sid}/retry")
                assert retry.status_code == 202 and retry.json()["previous_status"] == "failed", retry.text
                assert _wait(lambda: _delivery(api, sid)["status"] == "delivered"), _delivery(api, sid)
                assert late.refused == [] and list(late.received) == [sid]
                delivered = _delivery(api, sid)
                assert delivered["attempts"] == attempts + 1 and delivered["failed_at"] is None
            finally:
                late.close()
            assert len(up.received[ids["GM0984"]]) == 1  # the delivered one was not sent again
        finally:
            up.close()
