"""Unit tests of the pure capacity domain (design.md section 11): school calendars, planned capacity per group,
capacity gaps and pupils by residence (services/budget/capacity.py, through services/budget/domain.py).

Figures are derived by hand in the comments; the code under test is never used to compute an expectation.
"""
from __future__ import annotations

import datetime as dt
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.budget import capacity
from services.budget.domain import LoggedFacts, PotBook, apply_logged, apply_voided, pot_figures
from shared.events import Attribution, BudgetAlert, CareLogged, CareVoided, read_event
from shared.schemas import Arrangement, Calendar

VENRAY, HORST, GENNEP = "GM0984", "GM1507", "GM0907"
RATE = 6500  # EUR 65.00 an hour
# A four-week month: ISO weeks 2026-W06..W09 (Monday 2 February .. Sunday 1 March 2026), with the southern
# voorjaarsvakantie of 2026 (Saturday 14 .. Sunday 22 February) covering all of W08.
START, END = dt.date(2026, 2, 2), dt.date(2026, 3, 1)
HOLIDAY = Calendar.model_validate({"name": "zuid", "holidays": [
    {"from": "2026-02-14", "until": "2026-02-22", "name": "voorjaarsvakantie"}]})
TS = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone.utc)


def arrangement(**overrides) -> Arrangement:
    data = {"school_id": "s", "group_ids": ["g1"], "start": START, "end": END,
            "rates": [{"from": START, "hourly_rate_cents": RATE}], "cap_cents": 780_000,
            "settlement": {"key": "residence_hours"}, "calendar_id": "zuid",
            "plan": [{"group_id": "g1", "from": START, "minutes_per_week": 2400}]}
    data.update(overrides)
    return Arrangement.model_validate(data)


def logged(rid: str, day: dt.date, minutes: int, group: str = "g1",
           pupils: tuple[tuple[str, str], ...] = (("p1", VENRAY),)) -> CareLogged:
    return CareLogged(event_id=f"logged:{rid}", registration_id=rid, school_id="s", group_id=group,
                      arrangement_id="arr", host_municipality=VENRAY, date=day, minutes=minutes, task_category=2,
                      funding=None, care_worker="cw", hourly_rate_cents=RATE, cost_cent_minutes=minutes * RATE,
                      cost_cents=(minutes * RATE + 30) // 60, attributed_to="listed",
                      attributions=[Attribution(pupil_ref=ref, municipality=code) for ref, code in pupils],
                      accepted_at=TS)


def week_of_care(book: PotBook, monday: dt.date, minutes_per_day: int, tag: str) -> None:
    for offset in range(5):
        apply_logged(book, logged(f"{tag}-{offset}", monday + dt.timedelta(days=offset), minutes_per_day))


# --- school days ---------------------------------------------------------------------------------------------

def test_school_days_count_weekdays_outside_holidays() -> None:
    # February 2026 W06..W09: 20 weekdays, of which W08 (16..20 February) is holiday: 15 school days.
    assert capacity.weekdays_between(START, END) == 20
    assert capacity.school_days(HOLIDAY, START, END) == 15
    assert capacity.school_days(None, START, END) == 20
    assert capacity.school_days(HOLIDAY, END, START) == 0
    # Overlapping and adjacent holidays are merged, not subtracted twice: meivakantie 2027 with Hemelvaart in it.
    may = Calendar.model_validate({"name": "m", "holidays": [
        {"from": "2027-04-24", "until": "2027-05-09", "name": "meivakantie"},
        {"from": "2027-05-06", "until": "2027-05-07", "name": "Hemelvaart"},
        {"from": "2027-05-10", "until": "2027-05-10", "name": "adjacent"}]})
    # 19 April .. 14 May 2027: 20 weekdays; holidays 26 Apr..7 May (10) and 10 May (1): 9 school days.
    assert capacity.school_days(may, dt.date(2027, 4, 19), dt.date(2027, 5, 14)) == 9
    assert capacity.holiday_spans(may) == [(dt.date(2027, 4, 24), dt.date(2027, 5, 10))]


@settings(max_examples=200, deadline=None)
@given(holidays=st.lists(st.tuples(st.integers(0, 120), st.integers(0, 20)), max_size=6),
       first=st.integers(0, 150), length=st.integers(-3, 150))
def test_school_days_agree_with_the_calendar_model_day_by_day(holidays, first, length) -> None:
    base = dt.date(2026, 8, 1)
    calendar = Calendar.model_validate({"name": "c", "holidays": [
        {"from": base + dt.timedelta(days=lo), "until": base + dt.timedelta(days=lo + n), "name": f"h{i}"}
        for i, (lo, n) in enumerate(holidays)]})
    a, b = base + dt.timedelta(days=first), base + dt.timedelta(days=first + length)
    assert capacity.school_days(calendar, a, b) == calendar.school_days(a, b)


def test_elapsed_burn_ratio_and_forecast_count_school_days() -> None:
    arr = arrangement()
    book = PotBook()
    week_of_care(book, dt.date(2026, 2, 2), 480, "w6")
    week_of_care(book, dt.date(2026, 2, 9), 480, "w7")
    # Spent 4,800 min x EUR 65 / 60 = EUR 5,200.00 of a EUR 7,800.00 cap = 2/3.
    friday_before = pot_figures(arr, book, dt.date(2026, 2, 13), calendar=HOLIDAY)
    in_holiday = pot_figures(arr, book, dt.date(2026, 2, 20), calendar=HOLIDAY)
    # 10 of 15 school days passed on Friday 13 February, and still 10 on Friday 20 (the holiday week): 2/3.
    for figures in (friday_before, in_holiday):
        assert (figures["school_days_elapsed"], figures["school_days_total"]) == (10, 15)
        assert figures["elapsed_fraction"] == pytest.approx(2 / 3)
        assert figures["burn_ratio"] == pytest.approx(1.0)  # the holiday does not lower it
        assert figures["forecast_cents"] == 780_000  # 520,000 / (2/3)
        assert figures["elapsed_basis"] == "school_days" and figures["calendar_id"] == "zuid"
    # Calendar days instead: 21 of 28 days passed on Sunday 22 February, so the same spending reads as
    # underspending, burn ratio (2/3) / (3/4) = 8/9.
    plain = pot_figures(arr, book, dt.date(2026, 2, 22))
    assert plain["elapsed_basis"] == "calendar_days" and plain["burn_ratio"] == pytest.approx(8 / 9)
    assert plain["days_elapsed"] == 21 and in_holiday["days_elapsed"] == 19
    # The straight line to the cap is flat over the holiday week: W07 and W08 end at the same 10/15.
    weeks = {row["week"]: row["straight_line_cents"] for row in in_holiday["weekly"]}
    assert weeks["2026-W07"] == weeks["2026-W08"] == 520_000 and weeks["2026-W09"] == 780_000


def test_no_school_day_at_all_falls_back_to_calendar_days() -> None:
    all_holiday = Calendar.model_validate({"name": "x", "holidays": [
        {"from": "2026-01-01", "until": "2026-12-31", "name": "closed"}]})
    figures = pot_figures(arrangement(), PotBook(), dt.date(2026, 2, 15), calendar=all_holiday)
    assert figures["elapsed_fraction"] == pytest.approx(14 / 28)


# --- planned capacity -----------------------------------------------------------------------------------------

def test_worked_case_a_four_week_month_with_a_holiday_week_plans_three_weeks() -> None:
    """One group, 2,400 min a week at EUR 65.00: 3 school weeks x 2,400 = 7,200 min; 7,200 x 6,500 / 60 =
    780,000 cents = EUR 7,800.00. Without the calendar the holiday week would be planned too: EUR 10,400.00."""
    figures = pot_figures(arrangement(), PotBook(), dt.date(2026, 3, 2), calendar=HOLIDAY)
    assert (figures["planned_minutes"], figures["planned_cents"], figures["planned_display"]) == \
        (7_200, 780_000, "EUR 7,800.00")
    assert figures["planned_to_date_cents"] == 780_000
    assert figures["by_group"] == [{"group_id": "g1", "planned_minutes": 7_200, "planned_minutes_to_date": 7_200,
                                    "delivered_minutes": 0, "delivery_ratio": 0.0}]
    assert pot_figures(arrangement(), PotBook(), dt.date(2026, 3, 2))["planned_cents"] == 1_040_000


def test_planned_to_date_counts_school_days_up_to_today_pro_rata() -> None:
    # Wednesday 4 February: Monday..Wednesday = 3 school days x 480 = 1,440 min = EUR 1,560.00 planned to date.
    figures = pot_figures(arrangement(), PotBook(), dt.date(2026, 2, 4), calendar=HOLIDAY)
    assert figures["planned_minutes_to_date"] == 1_440 and figures["planned_to_date_cents"] == 156_000
    assert pot_figures(arrangement(), PotBook(), dt.date(2026, 1, 30), calendar=HOLIDAY)["planned_to_date_cents"] == 0


def test_plan_lines_are_effective_dated_and_rates_apply_per_day() -> None:
    # g1: 2,400 a week from 2 Feb, 1,200 a week from Wednesday 11 Feb (the later line wins from its date).
    # g2: 1,000 a week only 2..6 Feb. Rate EUR 65.00, EUR 70.00 from 23 Feb. Holiday W08.
    arr = arrangement(group_ids=["g1", "g2"], rates=[{"from": START, "hourly_rate_cents": 6500},
                                                     {"from": "2026-02-23", "hourly_rate_cents": 7000}],
                      plan=[{"group_id": "g1", "from": START, "minutes_per_week": 2400},
                            {"group_id": "g1", "from": "2026-02-11", "minutes_per_week": 1200},
                            {"group_id": "g2", "from": START, "until": "2026-02-06", "minutes_per_week": 1000}])
    # g1: W06 5 x 480 = 2,400; W07 Mon-Tue 2 x 480 + Wed-Fri 3 x 240 = 1,680; W09 5 x 240 = 1,200 -> 5,280 min.
    #     cost 4,080 x 6,500 + 1,200 x 7,000 = 26,520,000 + 8,400,000 cent-minutes.
    # g2: W06 5 x 200 = 1,000 min at 6,500 = 6,500,000 cent-minutes.
    # total 41,420,000 cent-minutes / 60 = 690,333.33 -> 690,333 cents.
    figures = pot_figures(arr, PotBook(), dt.date(2026, 3, 2), calendar=HOLIDAY)
    assert [(g["group_id"], g["planned_minutes"]) for g in figures["by_group"]] == [("g1", 5_280), ("g2", 1_000)]
    assert figures["planned_minutes"] == 6_280 and figures["planned_cents"] == 690_333


def test_fractional_plans_stay_exact_until_shown() -> None:
    # 2,401 a week over 15 school days = 2,401 x 3 = 7,203 min, but to date on Monday 2 Feb: 2,401 / 5 = 480.2.
    arr = arrangement(plan=[{"group_id": "g1", "from": START, "minutes_per_week": 2401}])
    figures = pot_figures(arr, PotBook(), dt.date(2026, 2, 2), calendar=HOLIDAY)
    assert figures["planned_minutes"] == 7_203 and figures["planned_minutes_to_date"] == 480
    # 480.2 x 6,500 / 60 = 52,021.67 -> 52,022 cents; 7,203 x 6,500 / 60 = 780,325 cents.
    assert figures["planned_to_date_cents"] == 52_022 and figures["planned_cents"] == 780_325


# --- capacity gaps ---------------------------------------------------------------------------------------------

def month_of_care() -> PotBook:
    """W06 the full 2,400; W07 only 900 (of 2,400: below half); W08 the holiday, nothing; W09 the full 2,400."""
    book = PotBook()
    week_of_care(book, dt.date(2026, 2, 2), 480, "w6")
    for offset, minutes in enumerate((300, 300, 300)):
        apply_logged(book, logged(f"w7-{offset}", dt.date(2026, 2, 9) + dt.timedelta(days=offset), minutes))
    week_of_care(book, dt.date(2026, 2, 23), 480, "w9")
    return book


def test_worked_case_one_capacity_gap_for_900_of_2400_and_none_for_the_holiday_week() -> None:
    arr, book = arrangement(), month_of_care()
    gaps = capacity.capacity_gaps(arr, HOLIDAY, book, dt.date(2026, 3, 2))
    assert [(g.group_id, g.week, g.planned_minutes, g.delivered_minutes) for g in gaps] == \
        [("g1", "2026-W07", 2_400, 900)]
    capacity.record_capacity_gaps(book, gaps)
    assert capacity.capacity_gaps(arr, HOLIDAY, book, dt.date(2026, 3, 2)) == []  # once per group and week
    assert capacity.capacity_gaps(arr, HOLIDAY, book, dt.date(2026, 6, 1)) == []
    # Survives the book's storage (a restart reads it back).
    assert PotBook.from_dict(book.to_dict()).capacity_alerted == {"g1/2026-W07"}
    assert capacity.capacity_gaps(arr, HOLIDAY, PotBook.from_dict(book.to_dict()), dt.date(2026, 3, 2)) == []
    # Without the calendar the holiday week would be a gap (nothing delivered of a planned 2,400).
    plain = capacity.capacity_gaps(arrangement(calendar_id=None), None, month_of_care(), dt.date(2026, 3, 2))
    assert [g.week for g in plain] == ["2026-W07", "2026-W08"]
    figures = pot_figures(arr, book, dt.date(2026, 3, 2), calendar=HOLIDAY)
    # Delivered 2,400 + 900 + 2,400 = 5,700 of 7,200: ratio 0.791666...
    assert figures["by_group"][0]["delivered_minutes"] == 5_700
    assert figures["by_group"][0]["delivery_ratio"] == pytest.approx(5_700 / 7_200)


def test_only_completed_weeks_and_exactly_the_ratio_is_no_gap() -> None:
    arr, book = arrangement(), PotBook()
    # W06 exactly half (1,200 of 2,400) is not "less than" the ratio 0.5.
    apply_logged(book, logged("half", dt.date(2026, 2, 2), 600))
    apply_logged(book, logged("half2", dt.date(2026, 2, 3), 600))
    # Sunday 8 February: W06 is not completed yet (its Sunday is today), so nothing; Monday 9: W06 is checked.
    assert capacity.capacity_gaps(arr, HOLIDAY, book, dt.date(2026, 2, 8)) == []
    assert capacity.capacity_gaps(arr, HOLIDAY, book, dt.date(2026, 2, 9)) == []
    # A ratio of 0.6 makes the same week a gap (1,200 < 1,440).
    assert [g.week for g in capacity.capacity_gaps(arrangement(capacity_alert_ratio=0.6), HOLIDAY, book,
                                                   dt.date(2026, 2, 9))] == ["2026-W06"]


def test_capacity_gap_alert_event_is_readable_and_optional_fields_keep_old_alerts_valid() -> None:
    alert = BudgetAlert(event_id="alert:arr:capacity_gap:g1:2026-W07", arrangement_id="arr", school_id="s",
                        level="warning", threshold=0.5, spent_cents=0, cap_cents=1, crossed_at=TS, kind="capacity_gap",
                        group_id="g1", week="2026-W07", week_start=dt.date(2026, 2, 9), planned_minutes=2400,
                        delivered_minutes=900)
    assert read_event(alert.to_bytes()) == alert
    old = b'{"type":"budget.alert","event_id":"alert:a:1","arrangement_id":"a","school_id":"s","level":"warning",' \
          b'"threshold":0.8,"spent_cents":1,"cap_cents":1,"crossed_at":"2026-01-05T12:00:00Z"}'
    assert read_event(old).kind == "threshold"


# --- pupils by residence ------------------------------------------------------------------------------------------

def test_worked_case_four_pupils_one_non_resident_share_and_one_alert() -> None:
    """4 pupils with care, 1 living in Horst: share 1/4 = 0.25; with non_resident_alert_share 0.2 one alert."""
    arr = arrangement(non_resident_alert_share=0.2)
    book = PotBook()
    pupils = (("p1", VENRAY), ("p2", VENRAY), ("p3", VENRAY))
    apply_logged(book, logged("r1", dt.date(2026, 2, 2), 60, pupils=pupils))
    assert capacity.update_non_resident_alert(arr, book) is None  # 0 of 3
    apply_logged(book, logged("r2", dt.date(2026, 2, 3), 60, pupils=(("p4", HORST),)))
    assert capacity.update_non_resident_alert(arr, book) == Fraction(1, 4)
    assert capacity.update_non_resident_alert(arr, book) is None  # alerted once
    apply_logged(book, logged("r3", dt.date(2026, 2, 4), 60, pupils=(("p4", HORST), ("p1", VENRAY))))
    assert capacity.update_non_resident_alert(arr, book) is None  # still 1 of 4: the same crossing
    figures = pot_figures(arr, book, dt.date(2026, 3, 2), calendar=HOLIDAY)
    assert figures["pupils_by_residence"] == {HORST: 1, VENRAY: 3}
    assert figures["non_resident_pupil_share"] == 0.25 and figures["pupils_with_care"] == 4
    assert (book.non_resident_alerted, book.non_resident_alerts) == (True, 1)


def test_non_resident_alert_rearms_below_the_threshold_and_voids_reverse_exactly() -> None:
    arr = arrangement(non_resident_alert_share=0.5)
    book = PotBook()
    first = logged("a", dt.date(2026, 2, 2), 90, pupils=(("p1", GENNEP),))
    apply_logged(book, first)
    assert capacity.update_non_resident_alert(arr, book) == 1  # 1 of 1
    other = logged("b", dt.date(2026, 2, 2), 90, pupils=(("p2", VENRAY), ("p3", VENRAY)))
    apply_logged(book, other)
    assert capacity.update_non_resident_alert(arr, book) is None and not book.non_resident_alerted  # 1/3: re-armed
    facts = LoggedFacts.from_event(other)
    apply_voided(book, CareVoided(event_id="voided:b", registration_id="b", school_id="s", arrangement_id="arr",
                                  date=other.date, minutes=90, cost_cent_minutes=90 * RATE, reason="x",
                                  voided_at=TS), original=facts)
    assert capacity.update_non_resident_alert(arr, book) == 1  # back to 1 of 1: a second crossing
    assert book.non_resident_alerts == 2
    # The void took out exactly what the registration put in.
    only_first = PotBook()
    apply_logged(only_first, first)
    assert book.pupil_residences == only_first.pupil_residences == {"p1/GM0907": 1}
    assert book.minutes_by_group_week == only_first.minutes_by_group_week == {"g1/2026-W06": 90}


def test_a_pupil_who_moved_counts_under_both_codes_and_as_non_resident() -> None:
    book = PotBook()
    apply_logged(book, logged("x1", dt.date(2026, 2, 2), 60, pupils=(("p1", VENRAY),)))
    apply_logged(book, logged("x2", dt.date(2026, 2, 20), 60, pupils=(("p1", HORST),)))
    apply_logged(book, logged("x3", dt.date(2026, 2, 20), 60, pupils=(("p2", VENRAY),)))
    figures = capacity.pupil_figures(book)
    assert figures["pupils_by_residence"] == {HORST: 1, VENRAY: 2}
    assert figures["pupils_with_care"] == 2 and figures["non_resident_pupil_share"] == 0.5


def test_facts_stored_before_groups_and_pupils_were_kept_are_left_out_consistently() -> None:
    event = logged("old", dt.date(2026, 2, 2), 60)
    stored = LoggedFacts.from_event(event).to_dict()
    del stored["group_id"], stored["pupils"]
    facts = LoggedFacts.from_dict(stored)
    assert (facts.group_id, facts.pupils) == ("", ())
    book = PotBook()
    apply_logged(book, event, facts=facts)
    assert book.minutes_by_group_week == {} and book.pupil_residences == {} and book.minutes == 60
    assert PotBook.from_dict(book.to_dict()) == book
