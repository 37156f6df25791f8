"""Calendars, planned capacity and non-resident monitoring through the real stack (design.md section 11): gateway
-> registry -> hours -> care.logged -> budget service -> /pots, /metrics, budget.alerts.

Expected figures are derived by hand in the comments, never by the budget domain.
"""
from __future__ import annotations

import datetime as dt
import secrets
import signal
import time
from typing import Any

import orjson
import pytest

from ops.stack import Stack
from tests.integration.budget_helpers import put_arrangement, republish, wait_pot
from tests.integration.client import Api, Region
from tests.integration.test_budget import metrics, pot_gauge, post_batch
from tests.integration.topic_reader import read_topic

pytestmark = pytest.mark.stack

# A four-week month: ISO weeks 2026-W06..W09 (Monday 2 February .. Sunday 1 March 2026); the southern
# voorjaarsvakantie 2026 (14..22 February) is all of W08.
START, END = dt.date(2026, 2, 2), dt.date(2026, 3, 1)
HOLIDAY = {"name": "Test zuid", "holidays": [{"from": "2026-02-14", "until": "2026-02-22", "name": "voorjaarsvakantie"}]}
SWEEP_S = 10  # the budget service's alert sweep (services/budget/app.py REFRESH_EVERY_S)


def kind_alerts(stack: Stack, arrangement_id: str, kind: str, at_least: int, timeout: float = 60) -> dict[str, dict]:
    """The arrangement's budget.alert events of one kind on the topic, by event id (the relay publishes at least
    once, so the same event may be on the topic twice; consumers deduplicate on the id)."""
    def ours(events: list[dict[str, Any]]) -> dict[str, dict]:
        return {e["event_id"]: e for e in events
                if e.get("arrangement_id") == arrangement_id and e.get("kind", "threshold") == kind}
    return ours(read_topic(stack.broker_port, "budget.alerts", timeout=timeout,
                           until=lambda evs: len(ours(evs)) >= at_least))


def month_region(api: Api, **arrangement: Any) -> Region:
    """A school whose pot covers the four-week month, group g1 planned at 2,400 minutes a week on a calendar
    with the holiday week."""
    calendar_id = f"cal-{secrets.token_hex(4)}"
    assert api.put(f"/calendars/{calendar_id}", HOLIDAY).status_code == 200
    region = Region(api, start=START, end=END).build(pupils_per_group=4)
    put_arrangement(region, cap_cents=780_000, calendar_id=calendar_id,
                    plan=[{"group_id": "g1", "from": START.isoformat(), "minutes_per_week": 2400}], **arrangement)
    return region


def month_of_care(region: Region, tag: str) -> list[dict[str, Any]]:
    """W06 the full 2,400 (5 x 480); W07 900 (3 x 300: below half of 2,400); W08 the holiday; W09 5 x 480."""
    regs = []
    for monday, per_day in ((dt.date(2026, 2, 2), (480,) * 5), (dt.date(2026, 2, 9), (300,) * 3),
                            (dt.date(2026, 2, 23), (480,) * 5)):
        for offset, minutes in enumerate(per_day):
            day = monday + dt.timedelta(days=offset)
            regs.append(region.registration(f"{tag}-{day.isoformat()}", day=day, minutes=minutes))
    return regs


def test_calendar_api_and_its_refusals(api: Api) -> None:
    calendar_id = f"cal-{secrets.token_hex(4)}"
    put = api.put(f"/calendars/{calendar_id}", HOLIDAY)
    assert put.status_code == 200 and put.json()["holidays"][0]["from"] == "2026-02-14"
    got = api.get(f"/calendars/{calendar_id}")
    assert got.status_code == 200 and got.json() == {"calendar_id": calendar_id, **HOLIDAY}
    assert api.get("/calendars/no-such-calendar").status_code == 404
    # A holiday without an end would make every later day a holiday; until before from is refused by the model.
    open_ended = api.put(f"/calendars/{calendar_id}", {"name": "x", "holidays": [{"from": "2026-02-14", "name": "h"}]})
    assert open_ended.status_code == 422 and open_ended.json()["detail"][0]["field"] == "holidays.0.until"
    backwards = api.put(f"/calendars/{calendar_id}", {"name": "x", "holidays": [
        {"from": "2026-02-14", "until": "2026-02-01", "name": "h"}]})
    assert backwards.status_code == 422 and "until must not be before from" in backwards.text
    # An arrangement naming a calendar that is not registered: 422 naming it.
    region = Region(api, start=START, end=END).build(pupils_per_group=1)
    body = {"school_id": region.school_id, "group_ids": ["g1"], "start": START.isoformat(), "end": END.isoformat(),
            "rates": [{"from": START.isoformat(), "hourly_rate_cents": 6500}], "cap_cents": 100,
            "settlement": {"key": "residence_hours"}, "calendar_id": "no-such-calendar"}
    refused = api.put(f"/arrangements/{region.arrangement_id}", body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["field"] == "calendar_id" and "'no-such-calendar'" in refused.text
    # A plan line for a group outside the arrangement is refused by the model, naming the group.
    body.update(calendar_id=calendar_id, plan=[{"group_id": "g2", "from": START.isoformat(), "minutes_per_week": 60}])
    assert api.put(f"/arrangements/{region.arrangement_id}", body).status_code == 422
    # Only the coordinator reads and writes calendars.
    school = api.as_token(api.token_for("school", region.school_id))
    try:
        assert school.get(f"/calendars/{calendar_id}").status_code == 403
        assert school.put(f"/calendars/{calendar_id}", HOLIDAY).status_code == 403
    finally:
        school.__exit__()


def test_worked_case_planned_month_one_capacity_gap_and_none_on_redelivery(api: Api) -> None:
    region = month_region(api)
    tag = secrets.token_hex(3)
    regs = month_of_care(region, tag)
    assert post_batch(api, regs)["accepted"] == 13
    pot = wait_pot(api, region.arrangement_id, lambda p: p["registrations"] == 13)
    # Planned: 3 school weeks x 2,400 = 7,200 min x EUR 65.00 / 60 = EUR 7,800.00 (the holiday week plans nothing).
    assert (pot["planned_minutes"], pot["planned_cents"], pot["planned_display"]) == (7_200, 780_000, "EUR 7,800.00")
    assert pot["planned_to_date_cents"] == 780_000  # the month is over (today is later)
    # Delivered 2,400 + 900 + 2,400 = 5,700 min = EUR 6,175.00; g2 has no plan.
    assert pot["spent_cents"] == 617_500 and pot["minutes"] == 5_700
    assert pot["by_group"] == [
        {"group_id": "g1", "planned_minutes": 7_200, "planned_minutes_to_date": 7_200, "delivered_minutes": 5_700,
         "delivery_ratio": pytest.approx(5_700 / 7_200)},
        {"group_id": "g2", "planned_minutes": 0, "planned_minutes_to_date": 0, "delivered_minutes": 0,
         "delivery_ratio": None}]
    # School days: 15 of 15 passed; burn ratio 617,500 / 780,000 / 1.
    assert (pot["elapsed_basis"], pot["school_days_elapsed"], pot["school_days_total"]) == ("school_days", 15, 15)
    assert pot["burn_ratio"] == pytest.approx(617_500 / 780_000)
    # The straight line to the cap does not move in the holiday week: W07 and W08 both end at 10/15 of the cap.
    line = {w["week"]: w["straight_line_cents"] for w in pot["weekly"]}
    assert line["2026-W07"] == line["2026-W08"] == 520_000 and line["2026-W09"] == 780_000

    # One capacity_gap: g1 got 900 of 2,400 in 2026-W07 (completed); none for the holiday week W08.
    alerts = kind_alerts(api.stack, region.arrangement_id, "capacity_gap", at_least=1)
    assert list(alerts) == [f"alert:{region.arrangement_id}:capacity_gap:g1:2026-W07"]
    alert = next(iter(alerts.values()))
    assert (alert["group_id"], alert["week"], alert["week_start"], alert["planned_minutes"],
            alert["delivered_minutes"], alert["threshold"], alert["level"]) == \
        ("g1", "2026-W07", "2026-02-09", 2_400, 900, 0.5, "warning")

    # Resent registrations and every care.logged event of the school put on the topic again change nothing,
    # and no sweep after that alerts the week again.
    assert post_batch(api, regs)["duplicates"] == 13
    school_events = [e for e in read_topic(api.stack.broker_port, "care.logged",
                                           until=lambda evs: sum(e["school_id"] == region.school_id for e in evs) >= 13)
                     if e["school_id"] == region.school_id]
    republish(api.stack.broker_port, "care.logged", region.school_id.encode(), map(orjson.dumps, school_events))
    marker = region.registration(f"{tag}-marker", day=dt.date(2026, 2, 27), minutes=30, group="g2")
    assert api.post("/hours", json=marker).status_code == 202
    pot = wait_pot(api, region.arrangement_id, lambda p: p["registrations"] == 14)
    assert pot["minutes"] == 5_730
    time.sleep(SWEEP_S + 2)
    assert list(kind_alerts(api.stack, region.arrangement_id, "capacity_gap", at_least=1)) == list(alerts)

    # The gauges: planned to date and g1's delivery ratio.
    samples = metrics(api.stack)
    assert pot_gauge(samples, "zorgpot_pot_planned_to_date_cents", region) == 780_000
    assert pot_gauge(samples, "zorgpot_pot_group_delivery_ratio", region, group="g1") == pytest.approx(5_700 / 7_200)


def test_worked_case_non_resident_pupils_share_alert_and_gauge(api: Api) -> None:
    # g1 has 4 pupils: g1-p0 lives in Horst (GM1507), g1-p1..p3 in Venray, the host. Care for the whole group
    # (no pupils listed) is attributed to all 4: 1 of 4 pupils lives elsewhere, share 0.25 >= 0.2: one alert.
    region = Region(api, start=START, end=END).build(pupils_per_group=4)
    put_arrangement(region, non_resident_alert_share=0.2)
    tag = secrets.token_hex(3)
    regs = [region.registration(f"{tag}-{i}", day=START + dt.timedelta(days=i), minutes=60) for i in range(3)]
    regs.append(region.registration(f"{tag}-3", day=START, minutes=45, pupils=["g1-p0"]))
    assert post_batch(api, regs)["accepted"] == 4
    pot = wait_pot(api, region.arrangement_id, lambda p: p["registrations"] == 4)
    assert pot["pupils_by_residence"] == {"GM0984": 3, "GM1507": 1}
    assert pot["pupils_with_care"] == 4 and pot["non_resident_pupil_share"] == 0.25
    assert pot["non_resident_alert_share"] == 0.2
    alerts = kind_alerts(api.stack, region.arrangement_id, "non_resident_share", at_least=1)
    assert list(alerts) == [f"alert:{region.arrangement_id}:non_resident_share:1"]
    alert = next(iter(alerts.values()))
    assert (alert["share"], alert["pupils"], alert["non_resident_pupils"], alert["threshold"]) == (0.25, 4, 1, 0.2)
    # More care for the same pupils stays the same crossing: no second alert.
    more = region.registration(f"{tag}-4", day=START + dt.timedelta(days=7), minutes=30)
    assert api.post("/hours", json=more).status_code == 202
    wait_pot(api, region.arrangement_id, lambda p: p["registrations"] == 5)
    samples = metrics(api.stack)
    deadline = time.monotonic() + 30
    while pot_gauge(samples, "zorgpot_pot_non_resident_pupil_share", region) is None and time.monotonic() < deadline:
        time.sleep(0.5)
        samples = metrics(api.stack)
    assert pot_gauge(samples, "zorgpot_pot_non_resident_pupil_share", region) == 0.25
    assert len(kind_alerts(api.stack, region.arrangement_id, "non_resident_share", at_least=1)) == 1


def test_capacity_gap_is_not_alerted_again_after_the_budget_service_restarts(own_stack: Stack) -> None:
    with Api(own_stack) as api:
        region = month_region(api)
        assert post_batch(api, month_of_care(region, "rs"))["accepted"] == 13
        wait_pot(api, region.arrangement_id, lambda p: p["registrations"] == 13)
        first = kind_alerts(own_stack, region.arrangement_id, "capacity_gap", at_least=1)
        own_stack.kill("budget", signal.SIGKILL, wanted=True)  # the supervisor starts it again
        own_stack.wait_ready(90)
        pot = wait_pot(api, region.arrangement_id, lambda p: p["registrations"] == 13)
        assert pot["planned_cents"] == 780_000
        time.sleep(SWEEP_S + 2)  # at least one sweep of the restarted service
        assert list(kind_alerts(own_stack, region.arrangement_id, "capacity_gap", at_least=1)) == list(first)
