"""Settlement through the real stack: care.logged -> settlement service -> statements -> gateway and webhooks.

Worked cases of design.md section 5 / domain.md M6-M8: (a) youth share, (b) equal fixed shares, (c) a pupil
moving house mid-period, (d) a void after close as a negative correction; plus idempotent and overlapping
closes, who may read which statement, CSV/PDF, signed webhook delivery with retries, and a SIGKILL of the
settlement service while care streams in.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import itertools
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from ops.stack import ROOT, Stack
from shared.i18n import translator
from shared.money import format_euro_nl, round_half_up
from tests.integration.client import Api, Region

pytestmark = pytest.mark.stack

D = dt.date
# Municipality codes of this module's own (the registry is shared by every test on the stack).
_CODES = itertools.count(9000 + random.randrange(0, 500))


def new_codes(n: int) -> list[str]:
    return sorted(f"GM{next(_CODES):04d}" for _ in range(n))


def settlement(stack: Stack, path: str, **params: Any) -> Any:
    reply = httpx.get(f"{stack.service_url('settlement')}{path}", params=params, timeout=30)
    reply.raise_for_status()
    return reply.json()


def wait_applied(stack: Stack, arrangement_id: str, registrations: int, voided: int = 0,
                 timeout: float = 120) -> dict[str, Any]:
    """Wait until the settlement service has applied this many registrations and voids of the arrangement."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            items = settlement(stack, "/internal/invariant", arrangement_id=arrangement_id)["arrangements"]
            last = items[0] if items else None
            if last and last["registrations"] == registrations and last["voided"] == voided:
                return last
        except httpx.HTTPError as exc:  # the service may be restarting
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{arrangement_id}: never applied {registrations} registrations / {voided} voids: {last}")


class School:
    """A school with one group g1, its pupils and one arrangement with the given settlement policy."""

    def __init__(self, api: Api, host: str, municipalities: dict[str, tuple[str, int | None]],
                 settlement_policy: dict[str, Any], rate_cents: int = 6500,
                 start: dt.date = D(2025, 1, 1), end: dt.date = D(2025, 12, 31)) -> None:
        self.api = api
        self.region = Region(api, host=host, start=start, end=end, rate_cents=rate_cents)
        self.school_id = self.region.school_id
        self.arrangement_id = self.region.arrangement_id
        for code, (name, youth) in municipalities.items():
            api.ok_put(f"/municipalities/{code}", {"name": name, "youth_population": youth})
        api.ok_put(f"/schools/{self.school_id}", {"name": f"School {self.school_id}", "municipality": host})
        api.ok_put(f"/schools/{self.school_id}/groups/g1", {"name": "Group 1"})
        self.policy = settlement_policy
        self.rate_cents = rate_cents
        self.start, self.end = start, end
        self.sent = 0

    def pupil(self, ref: str, residence: list[tuple[str, dt.date, dt.date | None]]) -> "School":
        self.region.add_pupil(ref, "g1", [{"municipality": m, "from": f.isoformat(),
                                           **({"until": u.isoformat()} if u else {})} for m, f, u in residence])
        return self

    def arrangement(self) -> "School":
        self.api.ok_put(f"/arrangements/{self.arrangement_id}", {
            "school_id": self.school_id, "group_ids": ["g1"], "start": self.start.isoformat(),
            "end": self.end.isoformat(), "rates": [{"from": self.start.isoformat(), "hourly_rate_cents": self.rate_cents}],
            "cap_cents": 10**11, "settlement": self.policy})
        return self

    def register(self, items: list[tuple[str, dt.date, int, list[str] | None]]) -> None:
        regs = []
        for rid, day, minutes, pupils in items:
            reg = self.region.registration(rid, day=day, minutes=minutes)
            if pupils:
                reg["pupils"] = pupils
            regs.append(reg)
        for start in range(0, len(regs), 500):
            reply = self.api.post("/hours/batch", json=regs[start:start + 500])
            assert reply.status_code == 200, reply.text
            assert reply.json()["rejected"] == [], reply.json()
        self.sent += len(regs)

    def close(self, start: dt.date, end: dt.date) -> httpx.Response:
        return self.api.post("/settlements/close", json={"arrangement_id": self.arrangement_id,
                                                         "period_start": start.isoformat(),
                                                         "period_end": end.isoformat()})

    def statements_of(self, reply: httpx.Response) -> dict[str, dict[str, Any]]:
        """municipality -> full statement JSON, for the statements a close reply lists."""
        out = {}
        for summary in reply.json()["statements"]:
            full = self.api.get(f"/statements/{summary['statement_id']}")
            assert full.status_code == 200, full.text
            statement = full.json()
            assert statement["total_cents"] == summary["total_cents"]
            assert sum(line["amount_cents"] for line in statement["lines"]) == statement["total_cents"]
            out[summary["municipality"]] = statement
        return out


def test_a_youth_share_splits_140000_euro_7812_to_6188(api: Api) -> None:
    east, west = new_codes(2)
    school = School(api, west, {east: ("Midden-Limburg Oost", 7812), west: ("Midden-Limburg West", 6188)},
                    {"key": "youth_share", "municipalities": [east, west]}, rate_cents=7000,
                    start=D(2025, 1, 1), end=D(2025, 6, 30))
    school.pupil("p1", [(east, D(2025, 1, 1), None)]).arrangement()
    # EUR 140,000.00 = 200 registrations x 600 min x EUR 70.00/h.
    tag = secrets.token_hex(3)
    school.register([(f"ml-{tag}-{i}", D(2025, 1, 1) + dt.timedelta(days=i % 181), 600, None) for i in range(200)])
    wait_applied(api.stack, school.arrangement_id, 200)

    first = school.close(D(2025, 1, 1), D(2025, 6, 30))
    assert first.status_code == 201, first.text
    totals = {s["municipality"]: s["total_cents"] for s in first.json()["statements"]}
    assert totals == {east: 7_812_000, west: 6_188_000}  # EUR 78,120.00 and EUR 61,880.00
    statements = school.statements_of(first)
    assert statements[east]["basis"]["share"] == "0.558000"
    assert statements[east]["key"] == "youth_share" and statements[east]["municipality_name"] == "Midden-Limburg Oost"

    # The same period again: the same statements, 200. Overlapping: 409. Invalid: 422. Unknown: 404.
    again = school.close(D(2025, 1, 1), D(2025, 6, 30))
    assert again.status_code == 200, again.text
    assert again.json()["statements"] == first.json()["statements"]
    overlap = school.close(D(2025, 6, 1), D(2025, 6, 30))
    assert overlap.status_code == 409 and "overlaps closed period 2025-01-01..2025-06-30" in overlap.json()["detail"]
    backwards = school.close(D(2025, 7, 31), D(2025, 7, 1))
    assert backwards.status_code == 422 and backwards.json()["detail"][0]["field"] == "period_end"
    # A period that has not ended yet: care for its last days can still arrive, so no statement covers it.
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    unfinished = school.close(D(2025, 7, 1), tomorrow)
    problem = unfinished.json()["detail"][0]
    assert unfinished.status_code == 422 and problem["field"] == "period_end" and "after today" in problem["msg"], \
        unfinished.text
    assert api.post("/settlements/close", json={"arrangement_id": "no-such-arrangement", "period_start": "2025-01-01",
                                                "period_end": "2025-01-31"}).status_code == 404
    assert api.post("/settlements/close", json={"arrangement_id": school.arrangement_id,
                                                "period_start": "2025-13-01", "period_end": "x"}).status_code == 422


def test_b_equal_fixed_shares_give_the_extra_cent_to_the_lowest_code(api: Api) -> None:
    low, mid, high = new_codes(3)
    school = School(api, mid, {low: ("Low", None), mid: ("Mid", None), high: ("High", None)},
                    {"key": "fixed_shares", "shares": {low: 1, mid: 1, high: 1}}, rate_cents=6000)
    school.pupil("p1", [(mid, D(2025, 1, 1), None)]).arrangement()
    school.register([(f"fs-{secrets.token_hex(3)}", D(2025, 3, 3), 100, None)])  # 100 min x EUR 60/h = EUR 100.00
    wait_applied(api.stack, school.arrangement_id, 1)
    reply = school.close(D(2025, 3, 1), D(2025, 3, 31))
    assert reply.status_code == 201, reply.text
    assert {s["municipality"]: s["total_cents"] for s in reply.json()["statements"]} == \
        {low: 3334, mid: 3333, high: 3333}


def test_c_a_pupil_who_moves_is_charged_to_the_residence_of_each_care_day(api: Api) -> None:
    before, after = new_codes(2)
    school = School(api, before, {before: ("Old home", None), after: ("New home", None)},
                    {"key": "residence_hours"})
    school.pupil("mover", [(before, D(2025, 1, 1), D(2025, 3, 15)), (after, D(2025, 3, 16), None)]).arrangement()
    tag = secrets.token_hex(3)
    school.register([(f"mv-{tag}-1", D(2025, 3, 10), 60, ["mover"]),   # EUR 65.00 while living in `before`
                     (f"mv-{tag}-2", D(2025, 3, 15), 30, None),        # last day there: EUR 32.50
                     (f"mv-{tag}-3", D(2025, 3, 16), 90, None),        # first day in `after`: EUR 97.50
                     (f"mv-{tag}-4", D(2025, 3, 20), 7, ["mover"])])   # 7 min = 758.33 cents
    wait_applied(api.stack, school.arrangement_id, 4)
    reply = school.close(D(2025, 3, 1), D(2025, 3, 31))
    assert reply.status_code == 201, reply.text
    statements = school.statements_of(reply)
    assert statements[before]["total_cents"] == 6500 + 3250
    # 9750 + 758.33.. = 10508.33.. cents: the close rounds its total once (half-up) and splits it exactly.
    assert statements[after]["total_cents"] == 10508
    assert statements[before]["basis"]["municipality_count"] == "90"
    assert statements[after]["basis"]["municipality_count"] == "97"


def test_d_void_after_close_is_a_negative_correction_next_period_and_the_invariant_holds(api: Api) -> None:
    home, other = new_codes(2)
    school = School(api, home, {home: ("Home", None), other: ("Other", None)}, {"key": "residence_hours"})
    school.pupil("p1", [(home, D(2025, 1, 1), None)]).pupil("p2", [(other, D(2025, 1, 1), None)]).arrangement()
    tag = secrets.token_hex(3)
    voided_id = f"vd-{tag}-1"
    school.register([(voided_id, D(2025, 1, 10), 60, ["p1"]), (f"vd-{tag}-2", D(2025, 1, 11), 30, ["p1", "p2"]),
                     (f"vd-{tag}-3", D(2025, 2, 3), 45, ["p1"])])
    wait_applied(api.stack, school.arrangement_id, 3)
    january = school.close(D(2025, 1, 1), D(2025, 1, 31))
    assert january.status_code == 201, january.text
    assert {s["municipality"]: s["total_cents"] for s in january.json()["statements"]} == {home: 6500 + 1625,
                                                                                            other: 1625}
    assert api.post(f"/hours/{voided_id}/void", json={"reason": "entered twice"}).status_code == 202
    wait_applied(api.stack, school.arrangement_id, 3, voided=1)
    invariant = settlement(api.stack, "/internal/invariant", arrangement_id=school.arrangement_id)
    assert invariant["ok"] and invariant["arrangements"][0]["unsettled_cents"] == 4875 - 6500

    february = school.close(D(2025, 2, 1), D(2025, 2, 28))
    assert february.status_code == 201, february.text
    statement = school.statements_of(february)[home]
    corrections = [line for line in statement["lines"] if line["kind"] == "correction"]
    assert len(corrections) == 1
    correction = corrections[0]
    assert correction["amount_cents"] == -6500 and correction["registration_id"] == voided_id
    assert (correction["original_period_start"], correction["original_period_end"]) == ("2025-01-01", "2025-01-31")
    assert "ingetrokken na afsluiting" in correction["description"]  # Dutch by default ("voided after close")
    assert statement["total_cents"] == 4875 - 6500  # February's care minus the voided January hour
    # January's statements did not change.
    assert school.statements_of(january)[home]["total_cents"] == 8125

    item = settlement(api.stack, "/internal/invariant", arrangement_id=school.arrangement_id)["arrangements"][0]
    assert item["ok"], item
    assert item["issued_cents"] == 8125 + 1625 - 1625 == item["net_cost_cents"]  # 30 + 45 min left: EUR 81.25
    assert item["unsettled_cents"] == 0 and item["difference_cents"] == 0
    # The operator command says the same, through the ports the settings give (exit 0).
    env = dict(os.environ, ZORGPOT_GATEWAY_PORT=str(api.stack.gateway_port),
               ZORGPOT_BROKER_PORT=str(api.stack.broker_port), PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-m", "ops", "invariant"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert school.arrangement_id in run.stdout and "invariant holds" in run.stdout


def close_batch(api: Api, arrangement_ids: list[str], start: dt.date, end: dt.date) -> httpx.Response:
    return api.post("/settlements/close/batch", json={"arrangement_ids": arrangement_ids,
                                                      "period_start": start.isoformat(), "period_end": end.isoformat()})


def statement_ids(api: Api, arrangement_id: str) -> list[str]:
    reply = api.get("/statements", params={"arrangement_id": arrangement_id})
    assert reply.status_code == 200, reply.text
    return sorted(s["statement_id"] for s in reply.json())


def test_e_one_request_closes_a_period_for_many_arrangements_all_or_nothing(api: Api) -> None:
    """POST /settlements/close/batch: each arrangement gets what its own close would give, in one transaction;
    a repeat answers with the same statements; a conflict, an unknown or a repeated arrangement closes none."""
    low, mid, high = new_codes(3)
    towns = {low: ("Low", 3000), mid: ("Mid", 1000), high: ("High", 1000)}
    shares = School(api, mid, towns, {"key": "fixed_shares", "shares": {low: 1, mid: 1, high: 1}}, rate_cents=6000)
    shares.pupil("p1", [(mid, D(2025, 1, 1), None)]).arrangement()
    residence = School(api, low, towns, {"key": "residence_hours"})
    residence.pupil("p1", [(low, D(2025, 1, 1), None)]).pupil("p2", [(high, D(2025, 1, 1), None)]).arrangement()
    youth = School(api, high, towns, {"key": "youth_share", "municipalities": [low, high]}, rate_cents=7000)
    youth.pupil("p1", [(high, D(2025, 1, 1), None)]).arrangement()
    tag = secrets.token_hex(3)
    shares.register([(f"cb-{tag}-s1", D(2025, 1, 20), 100, None), (f"cb-{tag}-s2", D(2025, 2, 3), 100, None)])
    residence.register([(f"cb-{tag}-r1", D(2025, 1, 6), 60, ["p1", "p2"]), (f"cb-{tag}-r2", D(2025, 2, 7), 30, ["p2"])])
    youth.register([(f"cb-{tag}-y1", D(2025, 2, 10), 600, None)])
    for school, count in ((shares, 2), (residence, 2), (youth, 1)):
        wait_applied(api.stack, school.arrangement_id, count)
    # One arrangement already closed January on its own: the batch mixes histories.
    assert shares.close(D(2025, 1, 1), D(2025, 1, 31)).status_code == 201
    everyone = [shares.arrangement_id, residence.arrangement_id, youth.arrangement_id]

    # Refusals first; each names the problem and closes nothing.
    before = {a: statement_ids(api, a) for a in everyone}
    overlap = close_batch(api, everyone, D(2025, 1, 15), D(2025, 2, 28))
    assert overlap.status_code == 409, overlap.text
    assert shares.arrangement_id in overlap.json()["detail"] and "overlaps" in overlap.json()["detail"]
    unknown = close_batch(api, everyone + ["no-such-arrangement"], D(2025, 2, 1), D(2025, 2, 28))
    assert unknown.status_code == 404 and "no-such-arrangement" in unknown.json()["detail"]
    twice = close_batch(api, everyone + [youth.arrangement_id], D(2025, 2, 1), D(2025, 2, 28))
    assert twice.status_code == 422 and youth.arrangement_id in twice.text and "once" in twice.text
    assert close_batch(api, [], D(2025, 2, 1), D(2025, 2, 28)).status_code == 422
    backwards = close_batch(api, everyone, D(2025, 2, 28), D(2025, 2, 1))
    assert backwards.status_code == 422 and backwards.json()["detail"][0]["field"] == "period_end"
    assert {a: statement_ids(api, a) for a in everyone} == before

    reply = close_batch(api, everyone, D(2025, 2, 1), D(2025, 2, 28))
    assert reply.status_code == 201, reply.text
    closes = reply.json()["closes"]
    assert [c["arrangement_id"] for c in closes] == everyone and all(c["created"] for c in closes)
    assert [c["close_sequence"] for c in closes] == [2, 1, 1]
    totals = [{s["municipality"]: s["total_cents"] for s in c["statements"]} for c in closes]
    assert totals[0] == {low: 3334, mid: 3333, high: 3333}  # February's EUR 100.00 in equal thirds
    # January (no close covered it) and February: 60 min for p1 and p2, then 30 min for p2.
    assert totals[1] == {low: 3250, high: 3250 + 3250}
    assert totals[2] == {low: 52500, high: 17500}  # EUR 700.00 by youth population 3000 : 1000
    for school, close in zip((shares, residence, youth), closes):
        for summary in close["statements"]:
            full = api.get(f"/statements/{summary['statement_id']}").json()
            assert full["total_cents"] == summary["total_cents"] == sum(line["amount_cents"] for line in full["lines"])
        item = settlement(api.stack, "/internal/invariant", arrangement_id=school.arrangement_id)["arrangements"][0]
        assert item["ok"] and item["unsettled_cents"] == 0, item

    again = close_batch(api, everyone, D(2025, 2, 1), D(2025, 2, 28))
    assert again.status_code == 200, again.text
    assert [c["statements"] for c in again.json()["closes"]] == [c["statements"] for c in closes]
    assert not any(c["created"] for c in again.json()["closes"])
    # The single close sees the batch's close as its own.
    single = youth.close(D(2025, 2, 1), D(2025, 2, 28))
    assert single.status_code == 200 and single.json()["statements"] == closes[2]["statements"]


def test_municipalities_see_only_their_own_statements_and_schools_none(api: Api) -> None:
    mine, theirs = new_codes(2)
    school = School(api, mine, {mine: ("Mine", None), theirs: ("Theirs", None)}, {"key": "residence_hours"})
    school.pupil("p1", [(mine, D(2025, 1, 1), None)]).pupil("p2", [(theirs, D(2025, 1, 1), None)]).arrangement()
    school.register([(f"vis-{secrets.token_hex(3)}", D(2025, 4, 1), 60, ["p1", "p2"])])
    wait_applied(api.stack, school.arrangement_id, 1)
    reply = school.close(D(2025, 4, 1), D(2025, 4, 30))
    ids = {s["municipality"]: s["statement_id"] for s in reply.json()["statements"]}

    with api.as_token(api.token_for("municipality", mine)) as municipality:
        listed = municipality.get("/statements")
        assert listed.status_code == 200
        assert {s["municipality"] for s in listed.json()} == {mine}
        assert ids[mine] in {s["statement_id"] for s in listed.json()}
        assert municipality.get("/statements", params={"municipality": theirs}).status_code == 403
        own = municipality.get(f"/statements/{ids[mine]}")
        # Its own statement, with how the webhook delivery of it went once the gateway has recorded it (it learns
        # of issued statements from settlement.statements; no webhook is set for this municipality: no_webhook).
        assert own.status_code == 200 and own.json()["total_cents"] == 3250
        deadline = time.monotonic() + 60
        while own.json()["delivery"] is None and time.monotonic() < deadline:
            time.sleep(0.2)
            own = municipality.get(f"/statements/{ids[mine]}")
        assert own.json()["delivery"]["status"] == "no_webhook", own.json()
        assert municipality.get(f"/statements/{ids[theirs]}").status_code == 404  # no leak
        assert municipality.get(f"/statements/{ids[theirs]}", params={"format": "pdf"}).status_code == 404
        assert municipality.post("/settlements/close", json={"arrangement_id": school.arrangement_id,
                                                             "period_start": "2025-05-01",
                                                             "period_end": "2025-05-31"}).status_code == 403
    with api.as_token(api.token_for("school", school.school_id)) as school_api:
        assert school_api.get("/statements").status_code == 403
        assert school_api.get(f"/statements/{ids[mine]}").status_code == 404
    coordinator = api.get("/statements", params={"arrangement_id": school.arrangement_id})
    assert {s["municipality"] for s in coordinator.json()} == {mine, theirs}
    assert api.get("/statements/nope:2025-01-01:2025-01-31:GM0001").status_code == 404
    assert httpx.get(f"{api.stack.gateway_url}/api/v1/statements").status_code == 401


def test_csv_in_both_dialects_and_the_pdf_carry_the_json_figures(api: Api) -> None:
    home, other = new_codes(2)
    school = School(api, home, {home: ("Home", None), other: ("Gemeente Ötztal, Süd", None)},
                    {"key": "residence_hours"}, rate_cents=6511)
    school.pupil("p1", [(home, D(2025, 1, 1), None)]).pupil("p2", [(other, D(2025, 1, 1), None)]).arrangement()
    tag = secrets.token_hex(3)
    school.register([(f"fmt-{tag}-{i}", D(2025, 5, 1 + i), 45 + i, ["p1", "p2"] if i % 2 else ["p2"])
                     for i in range(6)])
    wait_applied(api.stack, school.arrangement_id, 6)
    reply = school.close(D(2025, 5, 1), D(2025, 5, 31))
    statement = school.statements_of(reply)[other]
    sid = statement["statement_id"]

    english = api.get(f"/statements/{sid}", params={"lang": "en"}).json()  # CSV columns by their English names
    for params, sep, comma in (({"format": "csv"}, ",", False), ({"format": "csv", "dutch": "1"}, ";", True),
                               ({"format": "csv", "decimal": "comma"}, ";", True)):
        got = api.get(f"/statements/{sid}", params={**params, "lang": "en"})
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(got.text), delimiter=sep))
        assert len(rows) == len(statement["lines"])
        amounts = []
        for row, line in zip(rows, english["lines"]):
            assert row["statement_id"] == sid and row["kind"] == line["kind"]
            assert row["description"] == line["description"]
            assert ("," in row["amount"]) == comma
            euros, cents = row["amount"].replace(",", ".").split(".")
            amounts.append(int(euros) * 100 + int(cents))
        assert amounts == [line["amount_cents"] for line in statement["lines"]]

    pdf = api.get(f"/statements/{sid}", params={"format": "pdf"})
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(pdf.content))
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    assert sid in text and "Gemeente Ötztal, Süd" in text
    assert format_euro_nl(statement["total_cents"]) in text
    for line in statement["lines"]:
        assert format_euro_nl(line["amount_cents"]) in text
    assert "€ 65,11" in text  # the hourly rate
    assert api.get(f"/statements/{sid}", params={"format": "xml"}).status_code == 422


def test_statements_read_in_dutch_by_default_and_in_english_on_request(api: Api) -> None:
    """design.md section 12: ?lang=en or Accept-Language: en for English; descriptions are put in words when
    read, from the lines' fields; the figures are the same in both, and the stored text is the English one."""
    home, other = new_codes(2)
    school = School(api, home, {home: ("Home", None), other: ("Gemeente Ötztal, Süd", None)},
                    {"key": "residence_hours"}, rate_cents=6500)
    school.pupil("p1", [(home, D(2025, 1, 1), None)]).arrangement()
    school.register([(f"lang-{secrets.token_hex(3)}", D(2025, 1, 6), 90, ["p1"])])
    wait_applied(api.stack, school.arrangement_id, 1)
    reply = school.close(D(2025, 1, 1), D(2025, 1, 31))
    sid = next(s["statement_id"] for s in reply.json()["statements"] if s["municipality"] == home)

    dutch = api.get(f"/statements/{sid}")
    assert dutch.status_code == 200 and dutch.headers["content-language"] == "nl"
    line, total = dutch.json()["lines"][0], dutch.json()["total_cents"]
    assert line["description"] == "Zorg 01-01-2025 t/m 31-01-2025 voor ingezeten leerlingen, per zorgdag"
    for english in (api.get(f"/statements/{sid}", params={"lang": "en"}),
                    api.get(f"/statements/{sid}", headers={"Accept-Language": "en-GB,en;q=0.9,nl;q=0.5"})):
        assert english.status_code == 200 and english.headers["content-language"] == "en"
        assert english.json()["lines"][0]["description"] == "Care 2025-01-01..2025-01-31 for resident pupils, per care day"
        assert {k: v for k, v in english.json().items() if k not in ("lines", "language", "delivery")} == \
            {k: v for k, v in dutch.json().items() if k not in ("lines", "language", "delivery")}
    # ?lang= wins over the header; an unknown language is Dutch.
    assert api.get(f"/statements/{sid}", params={"lang": "nl"},
                   headers={"Accept-Language": "en"}).json()["lines"][0]["description"].startswith("Zorg ")
    assert api.get(f"/statements/{sid}", params={"lang": "de"}).headers["content-language"] == "nl"

    csv_nl = api.get(f"/statements/{sid}", params={"format": "csv"})
    assert csv_nl.text.splitlines()[0].startswith("afrekening,gemeente,periode_begin,periode_eind,soort,omschrijving")
    csv_en = api.get(f"/statements/{sid}", params={"format": "csv"}, headers={"Accept-Language": "en"})
    assert csv_en.text.splitlines()[0].startswith("statement_id,municipality,period_start,period_end,kind")

    def pdf_words(**kwargs: Any) -> str:
        got = api.get(f"/statements/{sid}", params={"format": "pdf", **kwargs.pop("params", {})}, **kwargs)
        assert got.status_code == 200 and got.headers["content-type"] == "application/pdf"
        return " ".join(PdfReader(io.BytesIO(got.content)).pages[0].extract_text().split())

    text = pdf_words()
    for expected in ("Afrekening zorg in onderwijstijd", "Totaal te betalen", translator("nl").money(total),
                     "01-01-2025 t/m 31-01-2025", "Zorg 01-01-2025 t/m 31-01-2025 voor ingezeten leerlingen"):
        assert expected in text, expected
    text = pdf_words(params={"lang": "en"})
    assert "Total to pay" in text and translator("en").money(total) in text and "Totaal te betalen" not in text


class Receiver:
    """A municipality's webhook endpoint: fails the first `failures` requests, then accepts and dedupes."""

    def __init__(self, secret: str, failures: int) -> None:
        self.secret = secret
        self.failures = failures
        self.requests = 0
        self.accepted: dict[str, list[dict[str, Any]]] = {}  # statement id -> bodies accepted (2xx answered)
        self.bad_signatures = 0
        self.lock = threading.Lock()
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
                    elif receiver.requests <= receiver.failures:
                        status = 500
                    else:
                        statement = json.loads(body)
                        assert statement["statement_id"] == self.headers["X-Zorgpot-Statement-Id"]
                        receiver.accepted.setdefault(statement["statement_id"], []).append(statement)
                        status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/zorgpot/statements"

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhooks_deliver_every_statement_signed_and_retry_until_accepted(api: Api) -> None:
    first, second = new_codes(2)
    school = School(api, first, {first: ("First", None), second: ("Second", None)}, {"key": "residence_hours"})
    school.pupil("p1", [(first, D(2025, 1, 1), None)]).pupil("p2", [(second, D(2025, 1, 1), None)]).arrangement()
    tag = secrets.token_hex(3)
    school.register([(f"wh-{tag}-1", D(2025, 6, 2), 60, ["p1", "p2"]), (f"wh-{tag}-2", D(2025, 7, 1), 60, ["p2"])])
    wait_applied(api.stack, school.arrangement_id, 2)
    june = school.close(D(2025, 6, 1), D(2025, 6, 30))
    assert june.status_code == 201

    secret = secrets.token_hex(16)
    with Receiver(secret, failures=2) as receiver:
        # Statements issued before the webhook existed are waiting for it, visible to the coordinator.
        june_ids = [s["statement_id"] for s in june.json()["statements"]]
        assert _wait(lambda: {d["status"] for d in _deliveries(api, june_ids)} == {"no_webhook"})
        for code in (first, second):
            put = api.put(f"/municipalities/{code}/webhook", {"url": receiver.url, "secret": secret})
            assert put.status_code == 200 and "secret" not in put.json()
        assert api.put(f"/municipalities/{first}/webhook", {"url": "ftp://x", "secret": secret}).status_code == 422
        assert api.put(f"/municipalities/{first}/webhook", {"url": receiver.url, "secret": "short"}).status_code == 422
        with api.as_token(api.token_for("municipality", first)) as municipality:
            assert municipality.put(f"/municipalities/{first}/webhook",
                                    {"url": receiver.url, "secret": secret}).status_code == 403
        july = school.close(D(2025, 7, 1), D(2025, 7, 31))
        assert july.status_code == 201
        ids = june_ids + [s["statement_id"] for s in july.json()["statements"]]
        assert len(ids) == 3

        assert _wait(lambda: all(d["status"] == "delivered" for d in _deliveries(api, ids)), timeout=90), \
            _deliveries(api, ids)
        deliveries = _deliveries(api, ids)
        assert set(receiver.accepted) == set(ids)
        assert all(len(bodies) == 1 for bodies in receiver.accepted.values())  # each id exactly once
        assert receiver.bad_signatures == 0 and receiver.requests == len(ids) + 2
        assert sum(d["attempts"] for d in deliveries) == len(ids) + 2
        assert any(d["attempts"] > 1 and d["last_error"].startswith("HTTP 500") for d in deliveries)
        assert all(d["delivered_to"] == receiver.url and d["delivered_at"] for d in deliveries)
        for sid, bodies in receiver.accepted.items():
            statement = api.get(f"/statements/{sid}", params={"lang": "en"}).json()
            assert statement["delivery"]["status"] == "delivered"
            statement.pop("delivery")
            assert statement.pop("language") == "en"
            # What the municipality received is the statement as issued: its English descriptions are the ones
            # the statement reads with in English (the default reading is Dutch).
            assert bodies[0] == statement
        webhook = api.get(f"/municipalities/{first}/webhook").json()
        assert webhook["url"] == receiver.url and "secret" not in webhook
        assert {d["statement_id"] for d in webhook["deliveries"]} == {i for i in ids if i.endswith(first)}


def _deliveries(api: Api, ids: list[str]) -> list[dict[str, Any]]:
    found = []
    for sid in ids:
        reply = api.get("/webhooks/deliveries", params={"statement_id": sid})
        assert reply.status_code == 200, reply.text
        found += reply.json()
    return found


def _wait(predicate, timeout: float = 60) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (httpx.HTTPError, KeyError):
            pass
        time.sleep(0.2)
    return False


def test_settlement_sigkilled_mid_stream_still_gives_exact_statements(own_stack: Stack) -> None:
    with Api(own_stack) as api:
        region = Region(api).build(pupils_per_group=5)  # g*-p0 live in GM1507, the others in GM0984
        residence = {ref: body["residence"][0]["municipality"] for ref, body in region.pupils.items()}
        rng = random.Random(11)
        sent: list[dict[str, Any]] = []

        def kill_twice() -> None:
            for _ in range(2):
                time.sleep(1.5)
                own_stack.kill("settlement", signal.SIGKILL, wanted=True)  # the supervisor starts it again
                own_stack.wait_ready(60)

        killer = threading.Thread(target=kill_twice)
        killer.start()
        for start in range(0, 2000, 100):
            batch = []
            for i in range(start, start + 100):
                group = "g1" if i % 2 else "g2"
                pupils = rng.sample([f"{group}-p{k}" for k in range(5)], rng.randint(1, 3))
                batch.append(region.registration(f"sk-{i}", day=region.start + dt.timedelta(days=i % 300),
                                                 minutes=rng.randint(1, 240), group=group, pupils=pupils))
            reply = api.post_retrying("/hours/batch", json=batch)
            assert reply.status_code == 200 and reply.json()["accepted"] == 100, reply.text
            sent += batch
            time.sleep(0.05)
        killer.join()
        assert own_stack.children["settlement"].restarts == 2
        wait_applied(own_stack, region.arrangement_id, len(sent), timeout=180)

        reply = api.post("/settlements/close", json={"arrangement_id": region.arrangement_id,
                                                     "period_start": region.start.isoformat(),
                                                     "period_end": region.end.isoformat()})
        assert reply.status_code == 201, reply.text
        # Expected, computed here from what was sent: each registration's exact cost in equal parts per pupil.
        exact: dict[str, Fraction] = {}
        for reg in sent:
            part = Fraction(reg["minutes"] * region.rate_cents, 60 * len(reg["pupils"]))
            for ref in reg["pupils"]:
                exact[residence[ref]] = exact.get(residence[ref], Fraction(0)) + part
        totals = {s["municipality"]: s["total_cents"] for s in reply.json()["statements"]}
        assert set(totals) == set(exact)
        assert sum(totals.values()) == round_half_up(sum(exact.values()))
        for code, amount in exact.items():
            assert amount - 1 < totals[code] < amount + 1, (code, totals[code], float(amount))
        item = settlement(own_stack, "/internal/invariant", arrangement_id=region.arrangement_id)["arrangements"][0]
        assert item["ok"] and item["registrations"] == len(sent) and item["unsettled_cents"] == 0
