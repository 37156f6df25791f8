"""`make faults`: the fault-injection suite. Money is neither lost nor counted twice whatever crashes.

One run, against an embedded stack of its own:

* a producer streams `--registrations` registrations in batches of 100 through the gateway, resending about
  10 % of them (duplicates: identical bodies) and voiding about 1 % (after they were accepted); each
  registration lists 1-3 pupils living in three municipalities;
* meanwhile each service (gateway, hours, budget, settlement) is SIGKILLed once at a random point of the
  stream and started again by the supervisor, and the broker is restarted once (the embedded broker then
  forgets every topic, record and offset: the gateway re-publishes from its outbox, the services re-read);
* at the end, with the expected figures computed here from what was sent:
  - budget: the pot's registrations, minutes and spent cents equal the live registrations' exact cost
    (GET /internal/pots/<arrangement>), and the reconciliation gauge (/internal/reconciliation) reads 0;
  - settlement: every registration and void applied once (/internal/invariant), the close of the whole
    year issues statements whose total is the exact cost rounded once and whose per-municipality totals
    are within a cent of the exact shares, and the invariant holds;
  - webhooks: a real HTTP receiver on 127.0.0.1 that first refuses connections and then answers 500 for a
    while still receives every statement, each exactly once by statement id, correctly signed.

`python -m ops.faults --registrations 50000` (make faults) is the full run; tests/integration/
test_fault_suite.py calls `run` with ~3,000 registrations so `make test` covers the same code.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import json
import random
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import httpx

from ops.stack import SERVICES, Stack, free_port, start_on_free_ports
from shared.money import round_half_up

START, END = dt.date(2025, 8, 1), dt.date(2026, 7, 31)
RATE = 6500
HOMES = {"GM0984": "Venray", "GM1507": "Horst aan de Maas", "GM0907": "Gennep"}
HOST = "GM0984"
FAULTS = (*SERVICES, "broker")


class FaultSuiteFailure(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise FaultSuiteFailure(message)


def start_stack(data_dir: Path, env_extra: dict[str, str] | None = None) -> Stack:
    """A stack of its own on free ports, webhooks retried every few seconds at most."""
    return start_on_free_ports(data_dir, "zp_faults",
                               env_extra={"ZORGPOT_WEBHOOK_BACKOFF_MAX_S": "4", **(env_extra or {})})


# --- the gateway, as a school's client would use it ----------------------------------------------------------

class Client:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = httpx.Client(base_url=f"{stack.gateway_url}/api/v1", timeout=60,
                                 headers={"Authorization": f"Bearer {stack.coordinator_token}"})

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, ok: tuple[int, ...] = (200, 201, 202), attempts: int = 600,
             **kwargs: Any) -> httpx.Response:
        """Retry connection errors and 503 (gateway restarting, broker away) the way a client would."""
        last: Any = None
        for _ in range(attempts):
            try:
                reply = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                last = exc
                time.sleep(0.25)
                continue
            if reply.status_code == 503:
                last = reply.text
                time.sleep(0.25)
                continue
            if reply.status_code not in ok:
                raise FaultSuiteFailure(f"{method} {path}: {reply.status_code} {reply.text[:500]}")
            return reply
        raise FaultSuiteFailure(f"{method} {path} kept failing: {last}")

    def status(self, registration_id: str) -> str | None:
        reply = self.call("GET", f"/hours/{registration_id}", ok=(200, 404))
        return reply.json()["status"] if reply.status_code == 200 else None


def internal(stack: Stack, service: str, path: str, **params: Any) -> Any:
    reply = httpx.get(f"{stack.service_url(service)}{path}", params=params, timeout=30)
    reply.raise_for_status()
    return reply.json()


def wait_for(what: str, predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
            if last and last is not None:
                return last
        except (httpx.HTTPError, ValueError, KeyError) as exc:  # a service restarting
            last = exc
        if time.monotonic() > deadline:
            raise FaultSuiteFailure(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last}")
        time.sleep(0.5)


# --- the region ---------------------------------------------------------------------------------------------

@dataclass
class Region:
    school_id: str = field(default_factory=lambda: f"faults-{secrets.token_hex(3)}")
    pupils: dict[str, str] = field(default_factory=dict)  # ref -> home municipality

    @property
    def arrangement_id(self) -> str:
        return f"arr-{self.school_id}"

    def build(self, client: Client) -> "Region":
        for code, name in HOMES.items():
            client.call("PUT", f"/municipalities/{code}", json={"name": name, "youth_population": 8000})
        client.call("PUT", f"/schools/{self.school_id}", json={"name": "Fault school", "municipality": HOST})
        for group in ("g1", "g2"):
            client.call("PUT", f"/schools/{self.school_id}/groups/{group}", json={"name": group})
            for i, home in enumerate(["GM0984", "GM0984", "GM1507", "GM0907", "GM0984"]):
                ref = f"{group}-p{i}"
                client.call("PUT", f"/schools/{self.school_id}/pupils/{ref}", json={
                    "group_id": group, "enrolled_from": START.isoformat(),
                    "residence": [{"municipality": home, "from": START.isoformat()}]})
                self.pupils[ref] = home
        client.call("PUT", f"/arrangements/{self.arrangement_id}", json={
            "school_id": self.school_id, "group_ids": ["g1", "g2"], "start": START.isoformat(),
            "end": END.isoformat(), "rates": [{"from": START.isoformat(), "hourly_rate_cents": RATE}],
            "cap_cents": 10**13, "settlement": {"key": "residence_hours"}})
        return self

    def registration(self, i: int, rng: random.Random) -> dict[str, Any]:
        group = "g1" if i % 2 else "g2"
        return {"registration_id": f"f-{i}", "school_id": self.school_id, "group_id": group,
                "date": (START + dt.timedelta(days=i % 365)).isoformat(), "minutes": rng.randint(1, 240),
                "care_worker": "cw-1", "task_category": 1 + i % 11,
                "pupils": rng.sample([f"{group}-p{k}" for k in range(5)], rng.randint(1, 3))}


# --- the webhook receiver -----------------------------------------------------------------------------------

class Receiver:
    """A municipality's endpoint on 127.0.0.1: refuses connections (not listening) until `open()`, then
    answers 500 until `heal()`, then accepts. Records every accepted body by statement id."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.port = free_port()
        self.healthy = False
        self.requests = 0
        self.failed = 0
        self.bad_signatures = 0
        self.accepted: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/zorgpot/statements"

    def refusing(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", self.port)) != 0

    def open(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
                with receiver.lock:
                    receiver.requests += 1
                    if not hmac.compare_digest(expected, self.headers.get("X-Zorgpot-Signature", "")):
                        receiver.bad_signatures += 1
                        status = 401
                    elif not receiver.healthy:
                        receiver.failed += 1
                        status = 500
                    else:
                        statement = json.loads(body)
                        receiver.accepted.setdefault(statement["statement_id"], []).append(statement)
                        status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def heal(self) -> None:
        with self.lock:
            self.healthy = True

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# --- the run ------------------------------------------------------------------------------------------------

@dataclass
class Sent:
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # registration id -> body
    voided: set[str] = field(default_factory=set)
    resent: int = 0
    duplicates_answered: int = 0

    def live(self) -> list[dict[str, Any]]:
        return [item for rid, item in self.items.items() if rid not in self.voided]


class Chaos(threading.Thread):
    """Kills each service once and restarts the broker once, each at a random point of the stream."""

    def __init__(self, stack: Stack, progress: Callable[[], float], rng: random.Random, log: Callable[[str], None]):
        super().__init__(name="chaos", daemon=True)
        self.stack, self.progress, self.log = stack, progress, log
        faults = list(FAULTS)
        rng.shuffle(faults)
        points = sorted(rng.uniform(0.05, 0.8) for _ in faults)
        self.plan = list(zip(points, faults))
        self.done: list[tuple[str, float]] = []
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            for point, fault in self.plan:
                while self.progress() < point:
                    if self.stopping.wait(0.05):
                        return
                at = self.progress()
                self.log(f"  fault at {at:.0%} of the stream: "
                         + ("restart the broker" if fault == "broker" else f"SIGKILL {fault}"))
                if fault == "broker":
                    self.stack.restart_broker()  # Tansu forgets every topic, record and offset
                else:
                    self.stack.kill(fault, signal.SIGKILL, wanted=True)  # the supervisor starts it again
                self.done.append((fault, at))
                # Not waiting for the whole stack to be ready again (a broker restart takes every stream
                # service through a restart): the next fault may well hit a service that is recovering.
                if fault != "broker":
                    deadline = time.monotonic() + 30
                    while self.stack.pid(fault) is None and time.monotonic() < deadline:
                        time.sleep(0.1)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc


def stream(client: Client, region: Region, count: int, rng: random.Random, sent: Sent,
           progress: list[int], batch: int = 100, duplicate_rate: float = 0.10, void_rate: float = 0.01) -> None:
    to_void: list[str] = []
    for start in range(0, count, batch):
        fresh = [region.registration(i, rng) for i in range(start, min(start + batch, count))]
        again = [sent.items[rid] for rid in rng.sample(sorted(sent.items), min(len(sent.items),
                                                                                 round(len(fresh) * duplicate_rate)))]
        body = fresh + again
        rng.shuffle(body)
        reply = client.call("POST", "/hours/batch", json=body)
        result = reply.json()
        check(result["rejected"] == [], f"registrations rejected: {result['rejected'][:3]}")
        # A batch resent after a lost answer (gateway killed) counts fresh ones as duplicates too.
        check(result["accepted"] + result["duplicates"] == len(body), f"batch answer does not add up: {result}")
        check(result["duplicates"] >= len(again), f"resent registrations not recognised: {result}")
        sent.resent += len(again)
        sent.duplicates_answered += result["duplicates"]
        for item in fresh:
            sent.items[item["registration_id"]] = item
        to_void += [item["registration_id"] for item in fresh if rng.random() < void_rate]
        # Void what was sent a few batches ago, once the hours service has accepted it.
        while to_void and int(to_void[0].split("-")[1]) < start - 3 * batch:
            rid = to_void.pop(0)
            wait_for(f"{rid} accepted", lambda rid=rid: client.status(rid) == "accepted", 180)
            client.call("POST", f"/hours/{rid}/void", json={"reason": "entered twice"})
            sent.voided.add(rid)
        progress[0] = min(start + batch, count)
    for rid in to_void:
        wait_for(f"{rid} accepted", lambda rid=rid: client.status(rid) == "accepted", 180)
        client.call("POST", f"/hours/{rid}/void", json={"reason": "entered twice"})
        sent.voided.add(rid)


def expected_shares(region: Region, live: list[dict[str, Any]]) -> dict[str, Fraction]:
    exact: dict[str, Fraction] = {}
    for reg in live:
        part = Fraction(reg["minutes"] * RATE, 60 * len(reg["pupils"]))
        for ref in reg["pupils"]:
            home = region.pupils[ref]
            exact[home] = exact.get(home, Fraction(0)) + part
    return exact


def run(stack: Stack, registrations: int = 50_000, seed: int | None = None,
        log: Callable[[str], None] = print, receiver_down_s: float = 6.0) -> dict[str, Any]:
    """The whole suite on a running stack; raises FaultSuiteFailure on any lost or doubled cent."""
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    log(f"fault suite: {registrations} registrations, seed {seed}")
    client = Client(stack)
    sent, progress = Sent(), [0]
    started = time.monotonic()
    try:
        region = Region().build(client)
        chaos = Chaos(stack, lambda: progress[0] / registrations, random.Random(rng.random()), log)
        chaos.start()
        try:
            stream(client, region, registrations, rng, sent, progress)
        finally:
            progress[0] = registrations
            chaos.join(timeout=600)
            chaos.stopping.set()
        if chaos.error is not None:
            raise chaos.error
        check(sorted(f for f, _ in chaos.done) == sorted(FAULTS), f"faults injected: {chaos.done}")
        streamed_s = time.monotonic() - started
        live = sent.live()
        minutes = sum(r["minutes"] for r in live)
        cost_cent_minutes = minutes * RATE
        log(f"  streamed in {streamed_s:.0f}s: {len(sent.items)} registrations, {sent.resent} resent, "
            f"{len(sent.voided)} voided; waiting for the books")
        timeout = 300 + registrations / 50

        # Budget: the pot counts every live registration exactly once.
        def pot_complete() -> dict[str, Any] | None:
            pot = internal(stack, "budget", f"/internal/pots/{region.arrangement_id}")
            return pot if (pot["registrations"], pot["minutes"]) == (len(live), minutes) else None

        pot = wait_for("the budget pot to count every live registration", pot_complete, timeout)
        check(pot["spent_cents"] == round_half_up(Fraction(cost_cent_minutes, 60)),
              f"pot spent {pot['spent_cents']} cents, expected {round_half_up(Fraction(cost_cent_minutes, 60))}")
        recon = internal(stack, "budget", "/internal/reconciliation")
        row = next(r for r in recon["pots"] if r["arrangement_id"] == region.arrangement_id)
        check(row["difference_cents"] == 0 and row["book_spent_cent_minutes"] == cost_cent_minutes
              and row["ledger_registrations"] == len(live), f"reconciliation: {row}")
        check(recon["discrepancy_cents"] == 0, f"reconciliation gauge reads {recon['discrepancy_cents']}")

        # Settlement: every registration and void applied once.
        def applied() -> dict[str, Any] | None:
            items = internal(stack, "settlement", "/internal/invariant",
                             arrangement_id=region.arrangement_id)["arrangements"]
            item = items[0] if items else None
            return item if item and (item["registrations"], item["voided"]) == (len(sent.items), len(sent.voided)) \
                else None

        item = wait_for("the settlement service to apply every registration and void", applied, timeout)
        check(item["cost_cent_minutes"] == cost_cent_minutes and item["ok"], f"settlement books: {item}")

        # Webhooks: the receiver is down (refusing, then 500) when the statements are issued.
        secret = secrets.token_hex(16)
        receiver = Receiver(secret)
        try:
            for code in HOMES:
                client.call("PUT", f"/municipalities/{code}/webhook", json={"url": receiver.url, "secret": secret})
            check(receiver.refusing(), "the receiver's port should refuse connections")
            reply = client.call("POST", "/settlements/close", json={
                "arrangement_id": region.arrangement_id, "period_start": START.isoformat(),
                "period_end": END.isoformat()})
            check(reply.status_code == 201, f"close: {reply.status_code} {reply.text}")
            statements = reply.json()["statements"]
            ids = [s["statement_id"] for s in statements]
            totals = {s["municipality"]: s["total_cents"] for s in statements}
            exact = expected_shares(region, live)
            check(set(totals) == set(exact), f"statements for {sorted(totals)}, care for {sorted(exact)}")
            check(sum(totals.values()) == round_half_up(sum(exact.values())),
                  f"statements total {sum(totals.values())}, exact cost {float(sum(exact.values())):.2f}")
            for code, amount in exact.items():
                check(amount - 1 < totals[code] < amount + 1, f"{code}: {totals[code]} vs exact {float(amount):.2f}")
            check(client.call("POST", "/settlements/close", json={
                "arrangement_id": region.arrangement_id, "period_start": START.isoformat(),
                "period_end": END.isoformat()}).json()["statements"] == statements, "a repeated close differs")
            final = internal(stack, "settlement", "/internal/invariant",
                             arrangement_id=region.arrangement_id)["arrangements"][0]
            check(final["ok"] and final["difference_cents"] == 0 and final["issued_cents"] == sum(totals.values())
                  and final["unsettled_cents"] == 0, f"invariant after the close: {final}")

            time.sleep(receiver_down_s / 2)  # refusing connections ...
            receiver.open()
            time.sleep(receiver_down_s / 2)  # ... then answering 500 ...
            receiver.heal()                  # ... then accepting
            wait_for("every statement delivered to the webhook",
                     lambda: set(receiver.accepted) >= set(ids), 120 + receiver_down_s)
            time.sleep(2)  # room for a (wrong) second delivery to show up
            check(set(receiver.accepted) == set(ids), f"webhook got {sorted(receiver.accepted)}, issued {ids}")
            check(all(len(bodies) == 1 for bodies in receiver.accepted.values()),
                  f"a statement delivered twice: { {k: len(v) for k, v in receiver.accepted.items()} }")
            check(receiver.bad_signatures == 0, "badly signed webhook deliveries")
            # The outage really was met: each statement's first attempt failed (refused or 500).
            deliveries = {d["statement_id"]: d for d in client.call("GET", "/webhooks/deliveries").json()}
            check(all(deliveries[sid]["status"] == "delivered" and deliveries[sid]["attempts"] >= 2
                      and deliveries[sid]["last_error"] for sid in ids),
                  f"deliveries should show failed attempts before success: {[deliveries.get(sid) for sid in ids]}")
            for sid in ids:
                body = receiver.accepted[sid][0]
                check(body["total_cents"] == totals[body["municipality"]], f"webhook body of {sid} differs")
        finally:
            receiver.shutdown()
        report = {
            "registrations": len(sent.items), "resent": sent.resent, "voided": len(sent.voided),
            "live": len(live), "seed": seed, "faults": [f"{f}@{p:.0%}" for f, p in chaos.done],
            "restarts": {name: child.restarts for name, child in stack.children.items()},
            "pot_spent_cents": pot["spent_cents"], "statements": totals,
            "webhook": {"requests": receiver.requests, "failed_500": receiver.failed, "delivered": len(ids),
                        "attempts": sorted(deliveries[sid]["attempts"] for sid in ids)},
            "reconciliation_discrepancy_cents": recon["discrepancy_cents"],
            "seconds": round(time.monotonic() - started, 1),
        }
        log("  every registration counted exactly once in the pot and the statements; "
            "every statement delivered once")
        return report
    finally:
        client.close()


def main() -> int:
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m ops.faults")
    parser.add_argument("--registrations", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", default="var/faults.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zorgpot-faults-") as tmp:
        stack = start_stack(Path(tmp))
        try:
            report = run(stack, args.registrations, args.seed)
        except FaultSuiteFailure as exc:
            print(f"FAULT SUITE FAILED: {exc}\n(logs were in {tmp}/logs)")
            return 1
        finally:
            stack.stop_all()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
