"""Budget pots through the real stack: gateway -> hours -> care.logged -> budget service -> /pots, /metrics,
budget.alerts. Expected figures are computed here from the contract's formulas (design.md section 6), not
by the budget domain, and compared to the cent."""
from __future__ import annotations

import datetime as dt
import random
import secrets
import signal
import threading
import time
from fractions import Fraction
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.stack import Stack
from shared.money import round_half_up
from shared.timeutil import today
from tests.integration.budget_helpers import INDIVIDUAL_RATE, put_arrangement, republish, wait_pot
from tests.integration.client import Api, Region
from tests.integration.topic_reader import read_topic

pytestmark = pytest.mark.stack

HOST = "GM0984"


# --- helpers -----------------------------------------------------------------------------------------------

def metrics(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The budget service's /metrics as {(sample name, sorted labels): value}."""
    for _ in range(60):
        try:
            text = httpx.get(f"{stack.service_url('budget')}/metrics", timeout=10).text
            break
        except httpx.TransportError:
            time.sleep(0.5)
    else:
        raise AssertionError("budget /metrics unreachable")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def pot_gauge(samples: dict, name: str, region: Region, **extra: str) -> float | None:
    labels = tuple(sorted({"arrangement": region.arrangement_id, "school": region.school_id, **extra}.items()))
    return samples.get((name, labels))


def wait_gauges(stack: Stack, region: Region, spent_cents: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        samples = metrics(stack)
        if pot_gauge(samples, "zorgpot_pot_spent_cents", region) == spent_cents or time.monotonic() > deadline:
            return samples
        time.sleep(0.3)


def counter(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def reconciliation(stack: Stack) -> dict[str, Any]:
    return httpx.get(f"{stack.service_url('budget')}/internal/reconciliation", timeout=10).json()


def alerts_of(stack: Stack, arrangement_id: str, at_least: int, timeout: float = 60) -> list[dict[str, Any]]:
    events = read_topic(stack.broker_port, "budget.alerts", timeout=timeout,
                        until=lambda evs: len({e["event_id"] for e in evs
                                               if e["arrangement_id"] == arrangement_id}) >= at_least)
    return [e for e in events if e["arrangement_id"] == arrangement_id]


class Expected:
    """The section-6 figures from the contract's formulas, for registrations posted by a test."""

    def __init__(self, region: Region, rates: list[tuple[dt.date, int]], cap: int,
                 individual_rate: int | None = INDIVIDUAL_RATE):
        self.region, self.rates, self.cap, self.individual_rate = region, sorted(rates), cap, individual_rate
        self.live: dict[str, dict[str, Any]] = {}

    def rate_on(self, day: dt.date) -> int:
        return [rate for start, rate in self.rates if start <= day][-1]

    def residence(self, ref: str) -> str:
        return self.region.pupils[ref]["residence"][0]["municipality"]

    def attributed(self, reg: dict[str, Any]) -> list[str]:
        if reg.get("pupils"):
            return reg["pupils"]
        return sorted(ref for ref, p in self.region.pupils.items() if p["group_id"] == reg["group_id"])

    def figures(self, on: dt.date) -> dict[str, Any]:
        regs = list(self.live.values())
        cent_minutes = sum(r["minutes"] * self.rate_on(dt.date.fromisoformat(r["date"])) for r in regs)
        minutes = sum(r["minutes"] for r in regs)
        spent_exact = Fraction(cent_minutes, 60)
        spent = round_half_up(spent_exact)
        start, end = self.region.start, self.region.end
        elapsed = Fraction(0) if on < start else Fraction((min(on, end) - start).days + 1, (end - start).days + 1)
        non_resident = Fraction(0)
        for reg in regs:
            pupils = self.attributed(reg)
            non_resident += sum(Fraction(reg["minutes"], len(pupils)) for ref in pupils if self.residence(ref) != HOST)
        by_category: dict[str, int] = {}
        for reg in regs:
            by_category[str(reg["task_category"])] = by_category.get(str(reg["task_category"]), 0) + reg["minutes"]
        individual = None if self.individual_rate is None else round_half_up(Fraction(minutes * self.individual_rate, 60))
        return {
            "registrations": len(regs), "minutes": minutes, "spent_cent_minutes": cent_minutes,
            "spent_cents": spent, "remaining_cents": self.cap - spent, "cap_cents": self.cap,
            "elapsed_fraction": float(elapsed),
            "forecast_cents": round_half_up(spent_exact / elapsed) if elapsed else None,
            "burn_ratio": float(spent_exact / self.cap / elapsed) if elapsed and self.cap else None,
            "individual_equivalent_cents": individual,
            "savings_cents": None if individual is None else individual - spent,
            "non_resident_share": float(non_resident / minutes) if minutes else None,
            "minutes_by_task_category": dict(sorted(by_category.items(), key=lambda kv: int(kv[0]))),
        }


def assert_figures(pot: dict[str, Any], expected: Expected) -> None:
    want = expected.figures(dt.date.fromisoformat(pot["today"]))
    got = {key: pot[key] for key in want}
    for ratio in ("burn_ratio", "non_resident_share", "elapsed_fraction"):  # displayed ratios: floats
        if want[ratio] is not None:
            assert got[ratio] == pytest.approx(want[ratio], rel=1e-12), ratio
            got[ratio] = want[ratio]
    assert got == want


def post_batch(api: Api, items: list[dict[str, Any]]) -> dict[str, Any]:
    reply = api.post_retrying("/hours/batch", json=items)
    assert reply.status_code == 200, reply.text
    return reply.json()


# --- tests ---------------------------------------------------------------------------------------------------

def test_pot_figures_follow_registrations_voids_and_duplicates_to_the_cent(api: Api) -> None:
    now = today()
    region = Region(api, start=now - dt.timedelta(days=120), end=now + dt.timedelta(days=240)).build()
    rate_change = region.start + dt.timedelta(days=60)
    put_arrangement(region, cap_cents=2_500_000, rates=[
        {"from": region.start.isoformat(), "hourly_rate_cents": 6500},
        {"from": rate_change.isoformat(), "hourly_rate_cents": 6817}])  # odd rate: cents rarely whole
    expected = Expected(region, [(region.start, 6500), (rate_change, 6817)], cap=2_500_000)
    rng = random.Random(3)
    tag = secrets.token_hex(3)
    awkward = [1, 7, 13, 59, 61, 119, 233, 479, 719, 720]
    regs = []
    for i in range(40):
        group = rng.choice(["g1", "g2"])
        reg = region.registration(f"pot-{tag}-{i}", day=region.start + dt.timedelta(days=rng.randrange(0, 121)),
                                  minutes=awkward[i % 10] if i < 20 else rng.randint(1, 720), group=group,
                                  task_category=rng.randint(1, 11))
        if i % 4 == 1:
            reg["pupils"] = [f"{group}-p0"]  # lives in Horst: non-resident
        elif i % 4 == 2:
            reg["pupils"] = [f"{group}-p1", f"{group}-p2", f"{group}-p0"]  # minutes split in three
        regs.append(reg)
    assert post_batch(api, regs)["accepted"] == 40
    assert post_batch(api, regs[:10])["duplicates"] == 10  # resent: no effect
    for reg in regs:
        expected.live[reg["registration_id"]] = reg
    for reg in regs[5:10]:
        assert api.post(f"/hours/{reg['registration_id']}/void", json={"reason": "test"}).status_code == 202
        del expected.live[reg["registration_id"]]
    want = expected.figures(now)
    pot = wait_pot(api, region.arrangement_id, lambda p: p["registrations"] == 35 and p["minutes"] == want["minutes"])
    assert_figures(pot, expected)
    assert pot["spent_display"].startswith("EUR ") and pot["school_id"] == region.school_id
    assert pot["status"] == "ok" and 0 < pot["non_resident_share"] < 1

    # The same figures on /metrics, and the reconciliation (books vs the ledger's SQL sum) reads 0.
    samples = wait_gauges(api.stack, region, pot["spent_cents"])
    for name, key in (("zorgpot_pot_spent_cents", "spent_cents"), ("zorgpot_pot_cap_cents", "cap_cents"),
                      ("zorgpot_pot_remaining_cents", "remaining_cents"), ("zorgpot_pot_forecast_cents", "forecast_cents"),
                      ("zorgpot_pot_savings_cents", "savings_cents")):
        assert pot_gauge(samples, name, region) == pot[key], name
    assert pot_gauge(samples, "zorgpot_pot_burn_ratio", region) == pytest.approx(pot["burn_ratio"])
    assert pot_gauge(samples, "zorgpot_pot_non_resident_share", region) == pytest.approx(pot["non_resident_share"])
    for category in range(1, 12):
        assert pot_gauge(samples, "zorgpot_pot_minutes_by_task_category", region, task_category=str(category)) == \
            pot["minutes_by_task_category"].get(str(category), 0)
    assert pot_gauge(samples, "zorgpot_reconciliation_cents", region) == 0
    ours = [r for r in reconciliation(api.stack)["pots"] if r["arrangement_id"] == region.arrangement_id]
    assert ours == [{"arrangement_id": region.arrangement_id, "school_id": region.school_id,
                     "book_spent_cent_minutes": want["spent_cent_minutes"],
                     "ledger_cent_minutes": want["spent_cent_minutes"], "ledger_registrations": 35,
                     "difference_cents": 0}]

    # Redelivery straight onto care.logged (every event of this school again, plus a poison record) changes
    # nothing; a marker registration behind them on the same partition proves they were consumed.
    before = metrics(api.stack)
    school_events = [e for e in read_topic(api.stack.broker_port, "care.logged",
                                           until=lambda evs: sum(e["school_id"] == region.school_id for e in evs) >= 45)
                     if e["school_id"] == region.school_id]
    republish(api.stack.broker_port, "care.logged", region.school_id.encode(),
              [*map(orjson.dumps, school_events), b'{"type": "care.logged", "oops": 1}'])
    marker = region.registration(f"pot-{tag}-marker", day=now, minutes=30, task_category=9)
    assert api.post("/hours", json=marker).status_code == 202
    expected.live[marker["registration_id"]] = marker
    pot = wait_pot(api, region.arrangement_id, lambda p: p["registrations"] == 36)
    assert_figures(pot, expected)
    after = wait_gauges(api.stack, region, pot["spent_cents"])
    assert counter(after, "zorgpot_events_processed_total", service="budget", type="duplicate") - \
        counter(before, "zorgpot_events_processed_total", service="budget", type="duplicate") >= len(school_events)
    # The poison record is dead-lettered (held for the coordinator, counted), never skipped silently.
    assert counter(after, "zorgpot_deadletters_total", service="budget", topic="care.logged") - \
        counter(before, "zorgpot_deadletters_total", service="budget", topic="care.logged") >= 1
    assert pot_gauge(after, "zorgpot_reconciliation_cents", region) == 0


def test_venray_worked_case_cap_savings_and_one_alert_per_crossing(api: Api) -> None:
    """domain.md M1/M2: 40 h/week x 63 weeks at EUR 65 = EUR 163,800; at EUR 96.64 the same hours cost
    EUR 243,532.80, so the pot saves EUR 79,732.80 when it is fully spent."""
    region = Region(api, start=dt.date(2025, 8, 18), end=dt.date(2026, 7, 8)).build()
    put_arrangement(region, installments=[{"due": "2025-09-01", "amount_cents": 4_420_000},
                                          {"due": "2026-02-01", "amount_cents": 11_960_000}])
    tag = secrets.token_hex(3)
    # 63 group-weeks x 5 days x 480 minutes = 151,200 minutes: two groups a school day, weekdays from the start.
    weekdays = [d for d in (region.start + dt.timedelta(days=n) for n in range(400)) if d.weekday() < 5]
    regs = [region.registration(f"ven-{tag}-{k}", day=weekdays[k // 2], minutes=480, group=("g1", "g2")[k % 2],
                                task_category=1 + k % 11) for k in range(315)]
    assert sum(r["minutes"] for r in regs) == 151_200
    for start in range(0, 315, 50):
        assert post_batch(api, regs[start:start + 50])["accepted"] == len(regs[start:start + 50])
    # The installments are the plan; what counts as paid is what the coordinator records (design.md section 10).
    for payment_id, day, cents in ((f"ven-{tag}-p1", "2025-09-01", 4_420_000), (f"ven-{tag}-p2", "2026-02-01", 11_960_000)):
        reply = api.post(f"/arrangements/{region.arrangement_id}/payments",
                         json={"payment_id": payment_id, "date": day, "amount_cents": cents})
        assert reply.status_code == 201, reply.text
    pot = wait_pot(api, region.arrangement_id, lambda p: p["registrations"] == 315 and p["payments"] == 2)
    assert (pot["cap_cents"], pot["spent_cents"], pot["remaining_cents"]) == (16_380_000, 16_380_000, 0)
    assert pot["minutes"] == 151_200
    assert pot["individual_equivalent_cents"] == 24_353_280
    assert pot["savings_cents"] == 7_973_280
    assert (pot["cap_display"], pot["individual_equivalent_display"], pot["savings_display"]) == \
        ("EUR 163,800.00", "EUR 243,532.80", "EUR 79,732.80")
    assert pot["installments_paid_cents"] == 16_380_000 and pot["true_up_cents"] == 0
    assert pot["elapsed_fraction"] == 1.0 and pot["burn_ratio"] == 1.0 and pot["forecast_cents"] == 16_380_000
    assert pot["status"] == "exceeded"  # the cap reached counts as reached

    first = alerts_of(api.stack, region.arrangement_id, at_least=2)
    assert [(a["level"], a["threshold"]) for a in first] == [("warning", 0.8), ("exceeded", 1.0)]
    assert first[0]["spent_cents"] >= 0.8 * 16_380_000 and first[1]["spent_cents"] == 16_380_000

    # A void takes the pot under the cap (1.0 re-arms, 0.8 stays: spending is still above it); crossing the
    # cap again alerts once more, and only the cap.
    assert api.post(f"/hours/{regs[-1]['registration_id']}/void", json={"reason": "double entry"}).status_code == 202
    pot = wait_pot(api, region.arrangement_id, lambda p: p["registrations"] == 314)
    assert pot["spent_cents"] == 16_380_000 - 52_000 and pot["status"] == "warning"
    again = region.registration(f"ven-{tag}-again", day=weekdays[200], minutes=480)
    assert api.post("/hours", json=again).status_code == 202
    pot = wait_pot(api, region.arrangement_id, lambda p: p["registrations"] == 315)
    assert pot["spent_cents"] == 16_380_000 and pot["status"] == "exceeded"
    alerts = alerts_of(api.stack, region.arrangement_id, at_least=3)
    assert [(a["level"], a["threshold"]) for a in alerts] == [("warning", 0.8), ("exceeded", 1.0), ("exceeded", 1.0)]
    assert len({a["event_id"] for a in alerts}) == 3


def test_pots_are_scoped_by_role(api: Api) -> None:
    mine, other = Region(api).build(pupils_per_group=1), Region(api).build(pupils_per_group=1)
    school = api.as_token(api.token_for("school", mine.school_id))
    municipality = api.as_token(api.token_for("municipality", HOST))
    try:
        listed = school.get("/pots")
        assert listed.status_code == 200
        assert listed.json()["viewer"] == {"role": "school", "subject": mine.school_id}
        assert [p["arrangement_id"] for p in listed.json()["pots"]] == [mine.arrangement_id]
        assert school.get(f"/pots/{mine.arrangement_id}").status_code == 200
        # Another school's pot looks exactly like a pot that does not exist.
        foreign, unknown = school.get(f"/pots/{other.arrangement_id}"), school.get("/pots/no-such-pot")
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.json()["detail"].replace(other.arrangement_id, "X") == \
            unknown.json()["detail"].replace("no-such-pot", "X")
        everything = {p["arrangement_id"] for p in api.get("/pots").json()["pots"]}
        assert {mine.arrangement_id, other.arrangement_id} <= everything
        assert api.get(f"/pots/{other.arrangement_id}").json()["school_id"] == other.school_id
        assert municipality.get("/pots").status_code == 403
        assert municipality.get(f"/pots/{mine.arrangement_id}").status_code == 403
        assert httpx.get(f"{api.stack.gateway_url}/api/v1/pots").status_code == 401
    finally:
        school.__exit__()
        municipality.__exit__()


def test_budget_service_sigkilled_mid_stream_books_every_registration_once(own_stack: Stack) -> None:
    with Api(own_stack) as api:
        region = Region(api).build()
        count = 2000
        regs = [region.registration(f"bk-{i}", day=region.start + dt.timedelta(days=i % 300), minutes=1 + i % 240,
                                    group="g1" if i % 2 else "g2", task_category=1 + i % 11) for i in range(count)]
        total = Fraction(sum(r["minutes"] for r in regs) * region.rate_cents, 60)
        cap = round_half_up(total * Fraction(9, 10))  # the stream crosses 80% and then the cap
        put_arrangement(region, cap_cents=cap)
        killer_done = threading.Event()

        def kill_twice() -> None:
            for _ in range(2):
                time.sleep(1.5)
                own_stack.kill("budget", signal.SIGKILL, wanted=True)  # the supervisor starts it again
                own_stack.wait_ready(90)
            killer_done.set()

        killer = threading.Thread(target=kill_twice)
        killer.start()
        for start in range(0, count, 100):
            result = post_batch(api, regs[start:start + 100])
            assert result["accepted"] + result["duplicates"] == 100 and not result["rejected"]
        killer.join()
        assert killer_done.is_set() and own_stack.children["budget"].restarts == 2

        expected = Expected(region, [(region.start, region.rate_cents)], cap=cap)
        expected.live = {r["registration_id"]: r for r in regs}
        pot = wait_pot(api, region.arrangement_id, lambda p: p["registrations"] >= count, timeout=180)
        assert_figures(pot, expected)
        assert pot["status"] == "exceeded"
        recon = [r for r in reconciliation(own_stack)["pots"] if r["arrangement_id"] == region.arrangement_id]
        assert recon[0]["difference_cents"] == 0 and recon[0]["ledger_registrations"] == count
        samples = wait_gauges(own_stack, region, pot["spent_cents"])
        assert pot_gauge(samples, "zorgpot_reconciliation_cents", region) == 0
        # One alert per crossing. The outbox relay may publish an alert again after a crash (at least once on
        # the wire); it is then the same event, with the same id, which consumers deduplicate on.
        alerts = {a["event_id"]: a for a in alerts_of(own_stack, region.arrangement_id, at_least=2)}
        assert sorted((a["level"], a["threshold"]) for a in alerts.values()) == [("exceeded", 1.0), ("warning", 0.8)]
