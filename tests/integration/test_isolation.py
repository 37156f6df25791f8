"""Tenant isolation: every operation in the gateway's OpenAPI, every kind of caller, another tenant's data.

The victim is school A (its school, group, pupil, arrangement/pot, registration, a token) and municipality X
(the statement A's care produced for it). The callers: school A, school B, municipality X, municipality Y,
the coordinator, a revoked token of school A, no token. EXPECT holds, per operation (method and path as in
/openapi.json), what each caller gets; an operation without an entry fails the test, so a new endpoint
cannot slip through without someone deciding who may call it.

A refusal must:
* have the status the contract gives (401 no or bad token; 403 not for this role; 404 where even saying
  "forbidden" would tell that the thing exists),
* look exactly like the answer about an id that does not exist (same status, same detail with the id
  swapped): nobody learns from a refusal whether another tenant's id is real,
* leak nothing the caller did not send: no other tenant's ids, municipality codes or amounts anywhere in
  the body.
"""
from __future__ import annotations

import datetime as dt
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import httpx
import pytest
from fastapi.routing import APIRoute

from services.gateway.app import create_app
from tests.integration.client import Api, Region

pytestmark = pytest.mark.stack

CALLERS = ("school_a", "school_b", "municipality_x", "municipality_y", "coordinator", "revoked", "none")
X, Y = "GM1507", "GM0907"  # Region puts the 1st pupil of each group in Horst (X); nobody of A lives in Gennep (Y)
FILTERED = "filtered"  # 200, but none of the victim's data in it
PER_ITEM = "per_item"  # a batch: 200, every item refused and reported by index
# Routes outside /openapi.json and why each may be called without a token.
NOT_IN_SCHEMA = {("GET", "/dashboard"): "a static page; it asks for a token and then calls the API with it",
                 ("GET", "/app"): "the /app login page: static, it keeps the token in the tab and calls the API with it",
                 ("GET", "/app/{page}"): "a role's static page (school, statements, coordinator): no data without the API",
                 ("GET", "/app/static/{name}"): "the pages' own CSS and JavaScript files"}


@dataclass
class World:
    a: Region
    b: Region
    tokens: dict[str, str | None]
    registration_id: str
    statement_id: str
    token_id: str  # a live token of school A: the object of DELETE /tokens/{id}
    funder_id: str  # a funder (not a municipality) that pays part of A's pot
    secrets: set[str] = field(default_factory=set)  # must never show up in an answer to someone else
    board_id: str = ""  # a school board of A (drawing rights): its transfers move cap between A's pots
    report_id: str = ""  # a quarterly accountability report over A's pot (the coordinator's alone)


@dataclass(frozen=True)
class Probe:
    method: str
    path: str  # under /api/v1, or absolute when it starts with "//"
    body: Any = None
    subject: str | None = None  # the victim's id in the path or body
    unknown: str | None = None  # an id of the same shape that exists nowhere

    def for_unknown(self) -> "Probe":
        assert self.subject and self.unknown
        body = None if self.body is None else _swap(self.body, self.subject, self.unknown)
        return Probe(self.method, self.path.replace(self.subject, self.unknown), body)


def _swap(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_swap(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _swap(v, old, new) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Case:
    probe: Callable[[World], Probe]
    expect: dict[str, int | str]  # caller -> refusal status, FILTERED or PER_ITEM
    allowed: dict[str, int] = field(default_factory=dict)  # caller -> status, run as a control
    allowed_not_run: frozenset[str] = frozenset()  # may, but running it would change what others test


def refused(**statuses: int | str) -> dict[str, int | str]:
    """The usual shape: revoked and absent tokens are 401 on top of the given refusals."""
    return {"revoked": 401, "none": 401, **statuses}


COORDINATOR_ONLY = refused(school_a=403, school_b=403, municipality_x=403, municipality_y=403)
SCHOOL_WRITES = refused(school_b=403, municipality_x=403, municipality_y=403)
SCHOOL_RECORDS = refused(school_b=404, municipality_x=404, municipality_y=404)
PUBLIC = {caller: 200 for caller in CALLERS}


def _arrangement_body(w: World) -> dict[str, Any]:
    a = w.a
    return {"school_id": a.school_id, "group_ids": ["g1", "g2"], "start": a.start.isoformat(),
            "end": a.end.isoformat(), "rates": [{"from": a.start.isoformat(), "hourly_rate_cents": a.rate_cents}],
            "cap_cents": 16_380_000, "individual_rate_cents": 9664, "settlement": {"key": "residence_hours"}}


EXPECT: dict[tuple[str, str], list[Case]] = {
    ("GET", "/health"): [Case(lambda w: Probe("GET", "//health"), {}, allowed=PUBLIC)],
    ("GET", "/metrics"): [Case(lambda w: Probe("GET", "//metrics"), {}, allowed=PUBLIC)],
    ("POST", "/api/v1/tokens"): [Case(
        lambda w: Probe("POST", "/tokens", {"role": "school", "subject": w.a.school_id, "label": "isolation"},
                        subject=w.a.school_id, unknown="no-such-school"),
        COORDINATOR_ONLY, allowed={"coordinator": 201})],
    ("DELETE", "/api/v1/tokens/{token_id}"): [Case(
        lambda w: Probe("DELETE", f"/tokens/{w.token_id}", subject=w.token_id, unknown="tok_000000000000"),
        COORDINATOR_ONLY, allowed_not_run=frozenset({"coordinator"}))],
    ("PUT", "/api/v1/municipalities/{code}"): [Case(
        lambda w: Probe("PUT", f"/municipalities/{X}", {"name": "Horst aan de Maas", "youth_population": 8000},
                        subject=X, unknown="GM9998"),
        COORDINATOR_ONLY, allowed={"coordinator": 200})],
    ("PUT", "/api/v1/funders/{funder_id}"): [Case(
        lambda w: Probe("PUT", f"/funders/{w.funder_id}", {"name": "Zorgkantoor", "kind": "wlz_office"},
                        subject=w.funder_id, unknown="no-such-funder"),
        COORDINATOR_ONLY, allowed={"coordinator": 200})],
    ("GET", "/api/v1/funders/{funder_id}"): [Case(
        lambda w: Probe("GET", f"/funders/{w.funder_id}", subject=w.funder_id, unknown="no-such-funder"),
        refused(school_a=404, school_b=404, municipality_x=404, municipality_y=404),
        allowed={"coordinator": 200})],
    # The PUT creates the norm that the GET's control reads (EXPECT is walked in order).
    ("PUT", "/api/v1/norms/{norm_id}"): [Case(
        lambda w: Probe("PUT", "/norms/iso-norm", {"versions": [
            {"from": "2026-01-01", "threshold_minutes_per_week": 720, "norm_minutes_per_week": 330}]},
                        subject="iso-norm", unknown="no-such-norm"),
        COORDINATOR_ONLY, allowed={"coordinator": 200})],
    ("GET", "/api/v1/norms/{norm_id}"): [Case(
        lambda w: Probe("GET", "/norms/iso-norm", subject="iso-norm", unknown="no-such-norm"),
        COORDINATOR_ONLY, allowed={"coordinator": 200})],
    # Calendars are the region's, not a tenant's: only the coordinator writes and reads them. The PUT's control
    # creates the calendar that the GET's control (run after it: EXPECT is walked in order) reads.
    ("PUT", "/api/v1/calendars/{calendar_id}"): [Case(
        lambda w: Probe("PUT", "/calendars/iso-calendar", {"name": "Regio zuid", "holidays": [
            {"from": "2026-02-14", "until": "2026-02-22", "name": "voorjaarsvakantie"}]},
                        subject="iso-calendar", unknown="no-such-calendar"),
        COORDINATOR_ONLY, allowed={"coordinator": 200})],
    ("GET", "/api/v1/calendars/{calendar_id}"): [Case(
        lambda w: Probe("GET", "/calendars/iso-calendar", subject="iso-calendar", unknown="no-such-calendar"),
        COORDINATOR_ONLY, allowed={"coordinator": 200})],
    ("PUT", "/api/v1/schools/{school_id}"): [Case(
        lambda w: Probe("PUT", f"/schools/{w.a.school_id}", {"name": "Test school", "municipality": w.a.host},
                        subject=w.a.school_id, unknown="no-such-school"),
        COORDINATOR_ONLY, allowed={"coordinator": 200})],
    ("PUT", "/api/v1/schools/{school_id}/groups/{group_id}"): [Case(
        lambda w: Probe("PUT", f"/schools/{w.a.school_id}/groups/g1", {"name": "g1"},
                        subject=w.a.school_id, unknown="no-such-school"),
        SCHOOL_WRITES, allowed={"coordinator": 200, "school_a": 200})],
    ("PUT", "/api/v1/schools/{school_id}/pupils/{pupil_ref}"): [Case(
        lambda w: Probe("PUT", f"/schools/{w.a.school_id}/pupils/g1-p1", w.a.pupils["g1-p1"],
                        subject=w.a.school_id, unknown="no-such-school"),
        SCHOOL_WRITES, allowed={"coordinator": 200, "school_a": 200})],
    ("PUT", "/api/v1/arrangements/{arrangement_id}"): [Case(
        lambda w: Probe("PUT", f"/arrangements/{w.a.arrangement_id}", _arrangement_body(w),
                        subject=w.a.arrangement_id, unknown="no-such-arrangement"),
        COORDINATOR_ONLY, allowed={"coordinator": 200})],
    ("POST", "/api/v1/hours"): [Case(
        lambda w: Probe("POST", "/hours", w.a.registration(f"iso-{secrets.token_hex(4)}"),
                        subject=w.a.school_id, unknown="no-such-school"),
        SCHOOL_WRITES, allowed_not_run=frozenset({"coordinator", "school_a"}))],
    ("POST", "/api/v1/hours/batch"): [Case(
        lambda w: Probe("POST", "/hours/batch", [w.a.registration(f"iso-{secrets.token_hex(4)}")],
                        subject=w.a.school_id, unknown="no-such-school"),
        refused(school_b=PER_ITEM, municipality_x=403, municipality_y=403),
        allowed_not_run=frozenset({"coordinator", "school_a"}))],
    ("POST", "/api/v1/hours/{registration_id}/void"): [Case(
        lambda w: Probe("POST", f"/hours/{w.registration_id}/void", {"reason": "isolation test"},
                        subject=w.registration_id, unknown="no-such-registration"),
        SCHOOL_RECORDS, allowed_not_run=frozenset({"coordinator", "school_a"}))],
    ("GET", "/api/v1/hours/{registration_id}"): [Case(
        lambda w: Probe("GET", f"/hours/{w.registration_id}", subject=w.registration_id,
                        unknown="no-such-registration"),
        SCHOOL_RECORDS, allowed={"coordinator": 200, "school_a": 200})],
    ("GET", "/api/v1/pots"): [Case(
        lambda w: Probe("GET", "/pots"),
        refused(school_b=FILTERED, municipality_x=403, municipality_y=403),
        allowed={"coordinator": 200, "school_a": 200})],
    ("GET", "/api/v1/pots/{arrangement_id}"): [Case(
        lambda w: Probe("GET", f"/pots/{w.a.arrangement_id}", subject=w.a.arrangement_id,
                        unknown="no-such-arrangement"),
        refused(school_b=404, municipality_x=403, municipality_y=403),
        allowed={"coordinator": 200, "school_a": 200})],
    ("POST", "/api/v1/settlements/close"): [Case(
        lambda w: Probe("POST", "/settlements/close", {"arrangement_id": w.a.arrangement_id,
                                                       "period_start": "2026-04-01", "period_end": "2026-04-30"},
                        subject=w.a.arrangement_id, unknown="no-such-arrangement"),
        COORDINATOR_ONLY, allowed_not_run=frozenset({"coordinator"}))],
    ("POST", "/api/v1/settlements/close/batch"): [Case(
        lambda w: Probe("POST", "/settlements/close/batch", {"arrangement_ids": [w.a.arrangement_id],
                                                             "period_start": "2026-04-01", "period_end": "2026-04-30"},
                        subject=w.a.arrangement_id, unknown="no-such-arrangement"),
        COORDINATOR_ONLY, allowed_not_run=frozenset({"coordinator"}))],
    ("POST", "/api/v1/arrangements/{arrangement_id}/payments"): [Case(
        lambda w: Probe("POST", f"/arrangements/{w.a.arrangement_id}/payments",
                        {"payment_id": "iso-pay-1", "date": "2025-10-01", "amount_cents": 100},
                        subject=w.a.arrangement_id, unknown="no-such-arrangement"),
        COORDINATOR_ONLY, allowed_not_run=frozenset({"coordinator"}))],  # would change the pot's paid figures
    ("GET", "/api/v1/arrangements/{arrangement_id}/payments"): [Case(
        lambda w: Probe("GET", f"/arrangements/{w.a.arrangement_id}/payments", subject=w.a.arrangement_id,
                        unknown="no-such-arrangement"),
        SCHOOL_RECORDS, allowed={"coordinator": 200, "school_a": 200})],
    ("POST", "/api/v1/arrangements/{arrangement_id}/final-settlement"): [Case(
        lambda w: Probe("POST", f"/arrangements/{w.a.arrangement_id}/final-settlement", subject=w.a.arrangement_id,
                        unknown="no-such-arrangement"),
        COORDINATOR_ONLY, allowed={"coordinator": 200})],  # the world issued it: a repeat, nothing changes
    ("GET", "/api/v1/arrangements/{arrangement_id}/final-settlements"): [Case(
        lambda w: Probe("GET", f"/arrangements/{w.a.arrangement_id}/final-settlements", subject=w.a.arrangement_id,
                        unknown="no-such-arrangement"),
        refused(school_b=404, municipality_x=403, municipality_y=403),
        allowed={"coordinator": 200, "school_a": 200})],
    ("GET", "/api/v1/final-settlements/{final_settlement_id}"): [
        Case(lambda w, fmt=fmt: Probe("GET", f"/final-settlements/fs:{w.a.arrangement_id}:1{fmt}",
                                      subject=w.a.arrangement_id, unknown="no-such-arrangement"),
             refused(school_b=404, municipality_x=403, municipality_y=403),
             allowed={"coordinator": 200, "school_a": 200})
        for fmt in ("", "?format=csv&dutch=1", "?format=pdf")],
    # Accountability reports are the coordinator's (they may span several schools' pots): everyone else 403.
    ("POST", "/api/v1/reports"): [Case(
        lambda w: Probe("POST", "/reports", {"report_id": w.report_id, "kind": "quarterly",
                                             "arrangement_ids": [w.a.arrangement_id], "period": "2026-Q1"},
                        subject=w.a.arrangement_id, unknown="no-such-arrangement"),
        COORDINATOR_ONLY, allowed={"coordinator": 200})],  # the world issued it: a repeat, nothing changes
    ("GET", "/api/v1/reports"): [Case(lambda w: Probe("GET", "/reports"), COORDINATOR_ONLY,
                                      allowed={"coordinator": 200})],
    ("GET", "/api/v1/reports/{report_id}"): [
        Case(lambda w, fmt=fmt: Probe("GET", f"/reports/{w.report_id}{fmt}", subject=w.report_id,
                                      unknown="no-such-report"),
             COORDINATOR_ONLY, allowed={"coordinator": 200})
        for fmt in ("", "?format=csv", "?format=pdf")],
    ("GET", "/api/v1/deadletters"): [Case(lambda w: Probe("GET", "/deadletters"), COORDINATOR_ONLY,
                                          allowed={"coordinator": 200})],
    ("POST", "/api/v1/deadletters/{deadletter_id}/retry"): [Case(
        lambda w: Probe("POST", "/deadletters/budget-999999/retry"), COORDINATOR_ONLY,
        allowed={"coordinator": 404})],  # the coordinator may; this one does not exist
    ("GET", "/api/v1/statements"): [
        Case(lambda w: Probe("GET", f"/statements?municipality={X}", subject=X, unknown="GM9998"),
             refused(school_a=403, school_b=403, municipality_y=403),
             allowed={"coordinator": 200, "municipality_x": 200}),
        Case(lambda w: Probe("GET", f"/statements?arrangement_id={w.a.arrangement_id}"),
             refused(school_a=403, school_b=403, municipality_y=FILTERED),
             allowed={"coordinator": 200, "municipality_x": 200}),
        Case(lambda w: Probe("GET", "/statements"),
             refused(school_a=403, school_b=403, municipality_y=FILTERED),
             allowed={"coordinator": 200, "municipality_x": 200})],
    ("GET", "/api/v1/statements/{statement_id}"): [
        Case(lambda w, fmt=fmt: Probe("GET", f"/statements/{w.statement_id}{fmt}", subject=w.statement_id,
                                      unknown=w.statement_id.replace(w.a.arrangement_id, "no-such-arrangement")),
             refused(school_a=404, school_b=404, municipality_y=404),
             allowed={"coordinator": 200, "municipality_x": 200})
        for fmt in ("", "?format=csv&dutch=1", "?format=pdf")],
    ("PUT", "/api/v1/municipalities/{code}/webhook"): [Case(
        lambda w: Probe("PUT", f"/municipalities/{X}/webhook",
                        {"url": "http://127.0.0.1:9/statements", "secret": "s" * 20}, subject=X, unknown="GM9998"),
        COORDINATOR_ONLY, allowed_not_run=frozenset({"coordinator"}))],
    ("GET", "/api/v1/municipalities/{code}/webhook"): [Case(
        lambda w: Probe("GET", f"/municipalities/{X}/webhook", subject=X, unknown="GM9998"),
        COORDINATOR_ONLY, allowed_not_run=frozenset({"coordinator"}))],  # 200 or 404: other tests set webhooks
    ("PUT", "/api/v1/boards/{board_id}"): [Case(
        lambda w: Probe("PUT", f"/boards/{w.board_id}", {"name": "Board of A", "school_ids": [w.a.school_id],
                                                         "cap_cents": 16_380_000},
                        subject=w.board_id, unknown="no-such-board"),
        COORDINATOR_ONLY, allowed={"coordinator": 200})],
    ("POST", "/api/v1/boards/{board_id}/transfers"): [Case(
        lambda w: Probe("POST", f"/boards/{w.board_id}/transfers",
                        {"transfer_id": "iso-transfer-1", "from_arrangement": w.a.arrangement_id,
                         "to_arrangement": "iso-other-pot", "amount_cents": 100, "date": "2026-03-02"},
                        subject=w.board_id, unknown="no-such-board"),
        COORDINATOR_ONLY, allowed_not_run=frozenset({"coordinator"}))],  # would move cap between A's pots
    ("GET", "/api/v1/boards/{board_id}/transfers"): [Case(
        lambda w: Probe("GET", f"/boards/{w.board_id}/transfers", subject=w.board_id, unknown="no-such-board"),
        COORDINATOR_ONLY, allowed={"coordinator": 200})],  # and the board itself (tests/integration/test_boards.py)
    ("GET", "/api/v1/webhooks/deliveries"): [Case(
        lambda w: Probe("GET", f"/webhooks/deliveries?municipality={X}", subject=X, unknown="GM9998"),
        COORDINATOR_ONLY, allowed={"coordinator": 200})],
    # 202 (re-armed) or 200 (already delivered) depending on other tests' webhooks for X: not run as a control;
    # tests/integration/test_webhooks.py covers the coordinator's 202, 200 and 404.
    ("POST", "/api/v1/webhooks/deliveries/{statement_id}/retry"): [Case(
        lambda w: Probe("POST", f"/webhooks/deliveries/{w.statement_id}/retry", subject=w.statement_id,
                        unknown=w.statement_id.replace(w.a.arrangement_id, "no-such-arrangement")),
        COORDINATOR_ONLY, allowed_not_run=frozenset({"coordinator"}))],
}


# -- the world ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(shared_stack) -> Iterator[World]:  # noqa: ANN001
    with Api(shared_stack) as api:
        a = Region(api).build(pupils_per_group=2)
        b = Region(api).build(pupils_per_group=2)
        funder_id = f"iso-fund-{secrets.token_hex(4)}"
        board_id = f"iso-board-{secrets.token_hex(4)}"
        assert api.put(f"/boards/{board_id}", {"name": "Board of A", "school_ids": [a.school_id],
                                               "cap_cents": 16_380_000}).status_code == 200
        assert api.put(f"/funders/{funder_id}", {"name": "Zorgkantoor", "kind": "wlz_office"}).status_code == 200
        issued = {}
        for caller, role, subject in (("school_a", "school", a.school_id), ("school_b", "school", b.school_id),
                                      ("municipality_x", "municipality", X), ("municipality_y", "municipality", Y),
                                      ("revoked", "school", a.school_id), ("victim_token", "school", a.school_id)):
            reply = api.post("/tokens", json={"role": role, "subject": subject, "label": caller})
            assert reply.status_code == 201, reply.text
            issued[caller] = reply.json()
        assert api.http.delete(f"/tokens/{issued['revoked']['id']}").status_code == 204
        # Care for a Horst pupil (X) in March, accepted, and March closed: A's statement for X exists.
        rid = f"iso-{secrets.token_hex(4)}"
        day = dt.date(2026, 3, 2)
        assert api.post("/hours", json=a.registration(rid, day=day, minutes=96, pupils=["g1-p0"])).status_code == 202
        accepted = api.wait_status(rid, {"accepted"})
        close = api.post("/settlements/close", json={"arrangement_id": a.arrangement_id,
                                                     "period_start": "2026-03-01", "period_end": "2026-03-31"})
        assert close.status_code == 201, close.text
        statement = next(s for s in close.json()["statements"] if s["municipality"] == X)
        # A's arrangement has ended: its final settlement (a document only the coordinator and A may read).
        final = api.post(f"/arrangements/{a.arrangement_id}/final-settlement")
        assert final.status_code == 201, final.text
        # And a quarterly report over A's pot (the coordinator's alone).
        report_id = f"iso-report-{secrets.token_hex(4)}"
        report = api.post("/reports", json={"report_id": report_id, "kind": "quarterly",
                                            "arrangement_ids": [a.arrangement_id], "period": "2026-Q1"})
        assert report.status_code == 201, report.text
        tokens: dict[str, str | None] = {caller: issued[caller]["token"] for caller in CALLERS if caller in issued}
        tokens.update(coordinator=api.token, none=None)
        w = World(a, b, tokens, rid, statement["statement_id"], issued["victim_token"]["id"], funder_id,
                  board_id=board_id, report_id=report_id)
        # What nobody but A, X and the coordinator may learn: A's ids, X's statement, amounts, tokens.
        w.secrets = {a.school_id, a.arrangement_id, rid, funder_id, board_id, report_id, statement["statement_id"],
                     issued["victim_token"]["id"],
                     str(accepted["cost_cents"]), str(statement["total_cents"]),
                     *(info["token"] for info in issued.values()), *(info["id"] for info in issued.values())}
        assert accepted["cost_cents"] == 10400 and statement["total_cents"] == 10400  # 96 min at 65.00/h
        yield w


_http = httpx.Client(timeout=60)  # one keep-alive connection for the few hundred requests of the matrix


def _send(stack_url: str, token: str | None, probe: Probe) -> httpx.Response:
    url = stack_url + probe.path[1:] if probe.path.startswith("//") else f"{stack_url}/api/v1{probe.path}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for _ in range(30):
        reply = _http.request(probe.method, url, json=probe.body, headers=headers)
        if reply.status_code != 503:  # a stream service briefly unreachable: ask again, as a client would
            return reply
        time.sleep(1)
    return reply


def _leaks(reply: httpx.Response, probe: Probe, secrets_: set[str], caller_token: str | None) -> set[str]:
    """Secrets in the answer as whole values: an amount like 10400 counts, not the digits inside 0.0104001
    (a latency figure in /metrics once made this test fail by chance)."""
    sent = probe.path + (str(probe.body) if probe.body is not None else "") + (caller_token or "")
    return {s for s in secrets_ if s and s not in sent
            and re.search(rf"(?<![0-9A-Za-z_.]){re.escape(s)}(?![0-9A-Za-z_])", reply.text)}


# -- the matrix ---------------------------------------------------------------------------------------

def test_every_operation_has_an_expectation() -> None:
    app = create_app()
    operations = {(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item}
    missing = operations - set(EXPECT)
    stale = set(EXPECT) - operations
    assert not missing, f"operations without an isolation expectation in EXPECT: {sorted(missing)}"
    assert not stale, f"EXPECT names operations that no longer exist: {sorted(stale)}"
    for key, cases in EXPECT.items():
        for case in cases:
            decided = set(case.expect) | set(case.allowed) | set(case.allowed_not_run)
            assert decided == set(CALLERS), (key, "undecided callers", set(CALLERS) - decided)
    routes = list(_api_routes(app.routes))
    assert {(m, path) for m, path, shown in routes if shown} == operations
    assert {(m, path) for m, path, shown in routes if not shown} == set(NOT_IN_SCHEMA)


def _api_routes(routes: list[Any], prefix: str = "", shown: bool = True) -> Iterator[tuple[str, str, bool]]:
    """(method, path, in the schema) of every API route, through included routers (FastAPI keeps those as
    wrappers around the original router)."""
    for route in routes:
        if isinstance(route, APIRoute):
            for method in route.methods:
                yield method, prefix + route.path, shown and route.include_in_schema
        elif hasattr(route, "original_router"):
            context = route.include_context
            yield from _api_routes(route.original_router.routes, prefix + context.prefix,
                                   shown and context.include_in_schema)


def test_isolation_matrix(world: World, shared_stack) -> None:  # noqa: ANN001
    base = shared_stack.gateway_url
    failures: list[str] = []
    checked = 0
    for (method, template), cases in EXPECT.items():
        for case in cases:
            for caller in CALLERS:
                wanted = case.expect.get(caller, case.allowed.get(caller))
                if wanted is None:
                    continue  # allowed, not run
                probe = case.probe(world)
                token = world.tokens[caller]
                reply = _send(base, token, probe)
                checked += 1
                where = f"{caller} {probe.method} {probe.path}"
                if caller in case.allowed:
                    if reply.status_code != wanted:
                        failures.append(f"{where}: control wanted {wanted}, got {reply.status_code} {reply.text[:200]}")
                    elif caller in ("school_b", "municipality_y", "revoked", "none"):  # open to all: shows nothing
                        failures.extend(f"{where}: shows {sorted(leaked)}"
                                        for leaked in [_leaks(reply, probe, world.secrets, token)] if leaked)
                    continue
                failures.extend(f"{where}: {p}" for p in _check_refusal(world, base, caller, token, probe, wanted, reply))
    assert checked > 100
    assert not failures, "\n".join(failures)


def _check_refusal(w: World, base: str, caller: str, token: str | None, probe: Probe, wanted: int | str,
                   reply: httpx.Response) -> list[str]:
    problems = []
    leaked = _leaks(reply, probe, w.secrets, token)
    if leaked:
        problems.append(f"answer shows {sorted(leaked)}: {reply.text[:300]}")
    if wanted == FILTERED:
        if reply.status_code != 200:
            problems.append(f"wanted 200 without the victim's data, got {reply.status_code} {reply.text[:200]}")
        elif w.a.arrangement_id in reply.text or w.statement_id in reply.text:
            problems.append("the list shows the victim's pot or statement")
        return problems
    if wanted == PER_ITEM:
        body = reply.json() if reply.status_code == 200 else {}
        if reply.status_code != 200 or body.get("accepted") != 0 or [r["index"] for r in body["rejected"]] != [0]:
            problems.append(f"wanted every item refused by index, got {reply.status_code} {reply.text[:300]}")
        return problems
    if reply.status_code != wanted:
        return problems + [f"wanted {wanted}, got {reply.status_code} {reply.text[:200]}"]
    detail = reply.json().get("detail")
    if not detail:
        problems.append(f"refusal without a detail: {reply.text[:200]}")
    if wanted == 401 and reply.headers.get("www-authenticate") != "Bearer":
        problems.append("401 without WWW-Authenticate: Bearer")
    if probe.subject:
        # The same question about an id that exists nowhere gets the same answer.
        other = _send(base, token, probe.for_unknown())
        same = other.text.replace(probe.unknown or "", probe.subject)
        if other.status_code != reply.status_code or same != reply.text:
            problems.append(f"tells the victim's id from an unknown one: {reply.status_code} {reply.text[:150]} vs "
                            f"{other.status_code} {other.text[:150]}")
    return problems


# -- tokens at rest and on revocation ------------------------------------------------------------------

def test_tokens_are_stored_only_as_hashes(world: World, shared_stack) -> None:  # noqa: ANN001
    plaintext = {s for s in world.secrets if s.startswith("zp_")} | {shared_stack.coordinator_token}
    assert len(plaintext) == 7  # six issued (one revoked) and the bootstrap token
    path = shared_stack.data_dir / "gateway.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert "tokens" in tables
        hashes = {r[0] for r in db.execute("SELECT token_hash FROM tokens")}
        rows = 0
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 (names from sqlite_master)
                rows += 1
                cells = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in row]
                for token in plaintext:
                    assert not any(token in cell for cell in cells), f"a plaintext token in table {table}"
    assert rows > 0
    import hashlib

    issued = {t for caller, t in world.tokens.items() if t and caller != "coordinator"}  # bootstrap: env only
    assert {hashlib.sha256(t.encode()).hexdigest() for t in issued} <= hashes
    # Nor on disk in the raw database pages, the WAL or any service's log.
    for file in [*shared_stack.data_dir.glob("*.db*"), *(shared_stack.data_dir / "logs").glob("*.log")]:
        data = file.read_bytes()
        for token in plaintext:
            assert token.encode() not in data, f"a plaintext token in {file.name}"


def test_revocation_takes_effect_on_the_next_request(world: World, shared_stack) -> None:  # noqa: ANN001
    with Api(shared_stack) as api:
        issued = api.post("/tokens", json={"role": "school", "subject": world.a.school_id}).json()
        with api.as_token(issued["token"]) as school:
            assert school.get(f"/hours/{world.registration_id}").status_code == 200
            assert school.get("/pots").status_code == 200
            assert api.http.delete(f"/tokens/{issued['id']}").status_code == 204
            for reply in (school.get(f"/hours/{world.registration_id}"), school.get("/pots"),
                          school.post("/hours", json=world.a.registration(f"iso-{secrets.token_hex(4)}"))):
                assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer", reply.text
        # Revoking again, or a token that never existed: 404, and the revoked one stays revoked.
        assert api.http.delete(f"/tokens/{issued['id']}").status_code in (204, 404)
        assert api.as_token(issued["token"]).get("/pots").status_code == 401
