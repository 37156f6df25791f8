"""Crashes and broker restarts lose nothing and count nothing twice (design.md section 7)."""
from __future__ import annotations

import datetime as dt
import signal
import threading
import time

import pytest

from ops.stack import Stack
from tests.integration.client import Api, Region

pytestmark = pytest.mark.stack


def _stream(api: Api, region: Region, prefix: str, count: int, batch: int = 100) -> list[dict]:
    sent: list[dict] = []
    for start in range(0, count, batch):
        items = [region.registration(f"{prefix}-{i}", day=region.start + dt.timedelta(days=i % 300),
                                     minutes=1 + i % 240, group="g1" if i % 2 else "g2")
                 for i in range(start, min(start + batch, count))]
        reply = api.post_retrying("/hours/batch", json=items)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["rejected"] == [], body
        # After a broker restart a batch may be resent by the client: then it counts as duplicates.
        assert body["accepted"] + body["duplicates"] == len(items)
        sent.extend(items)
    return sent


def _expect_all_accepted_once(api: Api, region: Region, sent: list[dict], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    expected_cost = sum(r["minutes"] * region.rate_cents for r in sent)
    while True:
        stats = api.hours_stats()
        accepted = stats.get("accepted", {"count": 0, "cost_cent_minutes": 0})
        if accepted["count"] >= len(sent) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert accepted["count"] == len(sent), stats
    assert accepted["cost_cent_minutes"] == expected_cost
    assert set(stats) == {"accepted"}, stats
    for reg in sent[:: max(1, len(sent) // 50)]:
        assert api.wait_status(reg["registration_id"], {"accepted"})["status"] == "accepted"


def test_hours_service_sigkilled_mid_stream_loses_and_doubles_nothing(own_stack: Stack) -> None:
    with Api(own_stack) as api:
        region = Region(api).build()
        killer_done = threading.Event()

        def kill_twice() -> None:
            for _ in range(2):
                time.sleep(1.5)
                own_stack.kill("hours", signal.SIGKILL, wanted=True)  # the supervisor starts it again
                own_stack.wait_ready(60)  # the next kill hits a worker that is consuming again
            killer_done.set()

        killer = threading.Thread(target=kill_twice)
        killer.start()
        sent = _stream(api, region, "kill", 3000)
        killer.join()
        assert killer_done.is_set() and own_stack.children["hours"].restarts == 2
        _expect_all_accepted_once(api, region, sent)


def test_broker_restart_mid_stream_loses_nothing(own_stack: Stack) -> None:
    with Api(own_stack) as api:
        region = Region(api).build()
        first = _stream(api, region, "before", 1000)
        own_stack.restart_broker()  # Tansu forgets every topic, record and offset
        second = _stream(api, region, "after", 1000)
        _expect_all_accepted_once(api, region, first + second, timeout=180)
        # Reference data survived too: a new registration for an existing group is accepted.
        rid = "after-restart-single"
        assert api.post_retrying("/hours", json=region.registration(rid)).status_code == 202
        assert api.wait_status(rid, {"accepted", "rejected"})["status"] == "accepted"


def test_gateway_answers_503_while_the_broker_is_down_and_keeps_what_it_took(own_stack: Stack) -> None:
    with Api(own_stack) as api:
        region = Region(api).build()
        own_stack.kill("broker", signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reply = api.post("/hours", json=region.registration(f"down-{time.monotonic_ns()}"))
            if reply.status_code == 503:
                break
            assert reply.status_code == 202  # taken before the gateway noticed: must survive
            time.sleep(0.2)
        assert reply.status_code == 503
        assert reply.headers["Retry-After"].isdigit()
        assert "broker" in reply.json()["detail"]
        own_stack.start("broker")
        taken = [rid for rid in _received_ids(api) if rid.startswith("down-")]
        for rid in taken:
            assert api.wait_status(rid, {"accepted"}, timeout=120)["status"] == "accepted"


def _received_ids(api: Api) -> list[str]:
    from tests.integration.service_db import query  # SQLite or PostgreSQL, whichever the stack runs on

    return [row[0] for row in query(api.stack, "gateway", "select registration_id from submissions")]
