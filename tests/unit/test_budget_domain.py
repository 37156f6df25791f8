"""Unit tests of the pure budget domain (design.md section 6; domain.md M2 worked case)."""
from __future__ import annotations

import datetime as dt
import json
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.budget.domain import (
    LoggedFacts,
    PotBook,
    apply_logged,
    apply_voided,
    budget_status,
    crossed_alerts,
    elapsed_fraction,
    exceeded_threshold,
    iso_week,
    Payment,
    pot_figures,
    rearm_alerts,
    rebuild_book,
    reconciliation_cents,
    record_alerts,
    update_alerts,
)
from shared.events import Attribution, CareLogged, CareVoided
from shared.schemas import Arrangement

VENRAY = "GM0984"
HORST = "GM1507"
GENNEP = "GM0907"
RATE = 6500
START = dt.date(2025, 8, 18)
END = dt.date(2026, 7, 8)
TS = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.timezone.utc)


def arrangement(**overrides) -> Arrangement:
    data = {
        "school_id": "focus",
        "group_ids": ["g1"],
        "start": START,
        "end": END,
        "rates": [{"from": START, "hourly_rate_cents": RATE}],
        "cap_cents": 16_380_000,
        "settlement": {"key": "residence_hours"},
    }
    data.update(overrides)
    return Arrangement.model_validate(data)


def logged(
    rid: str,
    minutes: int = 60,
    *,
    day: dt.date = dt.date(2025, 9, 1),
    rate: int = RATE,
    category: int = 2,
    funding: str | None = "jeugdwet",
    residences: tuple[str, ...] = (VENRAY,),
    host: str = VENRAY,
) -> CareLogged:
    cost = minutes * rate
    return CareLogged(
        event_id=f"logged:{rid}",
        registration_id=rid,
        school_id="focus",
        group_id="g1",
        arrangement_id="arr1",
        host_municipality=host,
        date=day,
        minutes=minutes,
        task_category=category,
        funding=funding,
        care_worker="cw-1",
        hourly_rate_cents=rate,
        cost_cent_minutes=cost,
        cost_cents=(cost + 30) // 60,
        attributed_to="listed",
        attributions=[Attribution(pupil_ref=f"p{i}", municipality=m) for i, m in enumerate(residences)],
        accepted_at=TS,
    )


def voided(event: CareLogged) -> CareVoided:
    return CareVoided(
        event_id=f"void:{event.registration_id}",
        registration_id=event.registration_id,
        school_id=event.school_id,
        arrangement_id=event.arrangement_id,
        date=event.date,
        minutes=event.minutes,
        cost_cent_minutes=event.cost_cent_minutes,
        reason="entered twice",
        voided_at=TS,
    )


def book_of(*events: CareLogged) -> PotBook:
    book = PotBook()
    for event in events:
        apply_logged(book, event)
    return book


# --- the Venray worked case (domain.md M2) ---------------------------------------------------------

def test_venray_cap_individual_equivalent_and_savings():
    cap = 40 * 63 * RATE
    assert cap == 16_380_000  # EUR 163,800.00
    arr = arrangement(cap_cents=cap, individual_rate_cents=9664)
    # The pot fully spent: 40 h x 63 weeks = 151,200 minutes, spread over 63 weekly registrations.
    book = PotBook()
    for week in range(63):
        apply_logged(book, logged(f"r{week}", 2400, day=START + dt.timedelta(weeks=week % 46)))
    assert book.minutes == 151_200
    fig = pot_figures(arr, book, END)
    assert fig["cap_cents"] == 16_380_000
    assert fig["cap_display"] == "EUR 163,800.00"
    assert fig["spent_cents"] == 16_380_000
    assert fig["remaining_cents"] == 0
    assert fig["individual_equivalent_cents"] == 24_353_280
    assert fig["individual_equivalent_display"] == "EUR 243,532.80"
    assert fig["savings_cents"] == 7_973_280
    assert fig["savings_display"] == "EUR 79,732.80"
    assert fig["status"] == "exceeded"  # spent == cap reaches the 1.0 threshold
    assert fig["elapsed_fraction"] == 1.0
    assert fig["burn_ratio"] == 1.0
    assert fig["forecast_cents"] == 16_380_000


def test_venray_installments_paid_from_recorded_payments_not_due_dates():
    """Design.md section 10: installments stay the plan; what is paid comes from payments actually recorded.
    A due date passing pays nothing."""
    arr = arrangement(installments=[
        {"due": dt.date(2026, 2, 1), "amount_cents": 11_960_000},
        {"due": dt.date(2025, 9, 1), "amount_cents": 4_420_000},
    ])
    book = book_of(logged("a", 600, day=dt.date(2025, 9, 2)))  # 10 h = EUR 650.00
    fig = pot_figures(arr, book, dt.date(2026, 3, 1))  # both due dates passed, nothing recorded
    assert [i["paid"] for i in fig["installments"]] == [False, False]  # sorted by due date
    assert (fig["installments_paid_cents"], fig["paid_cents"]) == (0, 0)
    assert fig["next_installment"]["due"] == "2025-09-01"
    assert fig["true_up_cents"] == 65_000  # spent minus nothing paid
    first = Payment("p-2025", dt.date(2025, 9, 3), 4_420_000)
    fig = pot_figures(arr, book, dt.date(2025, 10, 1), payments=[first])
    assert [i["paid"] for i in fig["installments"]] == [True, False]
    assert fig["installments_paid_cents"] == fig["paid_cents"] == 4_420_000
    assert fig["next_installment"]["due"] == "2026-02-01"
    assert fig["next_installment"]["amount_display"] == "EUR 119,600.00"
    assert fig["true_up_cents"] == 65_000 - 4_420_000
    assert fig["true_up_display"] == "-EUR 43,550.00"
    # A payment short of the second installment does not mark it paid: 4,420,000 + 11,000,000 < 16,380,000.
    short = Payment("p-2026", dt.date(2026, 2, 2), 11_000_000)
    fig = pot_figures(arr, book, dt.date(2026, 3, 1), payments=[first, short])
    assert [i["paid"] for i in fig["installments"]] == [True, False]
    assert fig["paid_cents"] == 15_420_000 and fig["true_up_cents"] == 65_000 - 15_420_000


def test_true_up_capped_when_overspent():
    arr = arrangement(cap_cents=10_000, installments=[{"due": START, "amount_cents": 6_000}])
    book = book_of(logged("a", 120))  # EUR 130.00 > cap EUR 100.00
    fig = pot_figures(arr, book, START, payments=[Payment("p1", START, 6_000)])
    assert fig["remaining_cents"] == -3_000
    assert fig["remaining_display"] == "-EUR 30.00"
    assert fig["true_up_cents"] == 13_000 - 6_000
    assert fig["true_up_capped_cents"] == 10_000 - 6_000


# --- budget years and school years (design.md section 10) -------------------------------------------

def venray_weeks(year_weeks: list[tuple[int, str, int]]) -> list[CareLogged]:
    """40 h of care a week (2,400 minutes, one registration on the Monday) for (year, group, weeks) blocks;
    weeks counted from the first Monday of September (2025) or of January (2026)."""
    events = []
    for year, group, weeks in year_weeks:
        monday = dt.date(2025, 9, 1) if year == 2025 else dt.date(2026, 1, 5)
        for week in range(weeks):
            day = monday + dt.timedelta(weeks=week)
            events.append(logged(f"{group}-{day.isoformat()}", 2400, day=day))
    return events


def test_venray_case_g_spent_equivalent_and_savings_per_budget_year():
    """Design.md case (g), EUR 65.00/h, individual rate EUR 96.64/h: group 2 40 h a week in 17 school weeks of
    2025, and groups 1 and 2 40 h a week in 23 school weeks of 2026 each.
    2025: 17 x 40 h = 680 h; x 65.00 = 44,200.00; x 96.64 = 65,715.20; savings 21,515.20.
    2026: 2 x 23 x 40 h = 1,840 h; x 65.00 = 119,600.00; x 96.64 = 177,817.60; savings 58,217.60."""
    arr = arrangement(start=dt.date(2025, 8, 1), end=dt.date(2026, 7, 31), cap_cents=16_380_000,
                      rates=[{"from": dt.date(2025, 8, 1), "hourly_rate_cents": 6500}], individual_rate_cents=9664,
                      installments=[{"due": dt.date(2025, 9, 1), "amount_cents": 4_420_000},
                                    {"due": dt.date(2026, 2, 1), "amount_cents": 11_960_000}])
    book = book_of(*venray_weeks([(2025, "g2", 17), (2026, "g1", 23), (2026, "g2", 23)]))
    payments = [Payment("v-2025", dt.date(2025, 9, 1), 4_420_000), Payment("v-2026", dt.date(2026, 2, 1), 11_960_000)]
    fig = pot_figures(arr, book, dt.date(2026, 7, 31), payments=payments)
    assert fig["by_budget_year"] == [
        {"year": 2025, "planned_cents": 4_420_000, "spent_cents": 4_420_000, "minutes": 680 * 60,
         "paid_cents": 4_420_000, "individual_equivalent_cents": 6_571_520, "savings_cents": 2_151_520},
        {"year": 2026, "planned_cents": 11_960_000, "spent_cents": 11_960_000, "minutes": 1840 * 60,
         "paid_cents": 11_960_000, "individual_equivalent_cents": 17_781_760, "savings_cents": 5_821_760},
    ]
    # One school year, 2025/2026: everything (44,200.00 + 119,600.00 = 163,800.00; 2,520 h).
    assert fig["by_school_year"] == [{"school_year": "2025/2026", "spent_cents": 16_380_000, "minutes": 2520 * 60}]
    assert fig["spent_cents"] == 16_380_000 and fig["paid_cents"] == 16_380_000


def test_years_add_up_to_spent_by_the_running_total():
    """One minute at EUR 65.00/h is 108.33.. cents. One minute on 31 Dec 2025 and one on 1 Jan 2026: rounded
    separately 108 + 108 = 216, but spent is 216.67 -> 217. By the running total: 2025 shows R(108.33) = 108,
    2026 shows R(216.67) - 108 = 109; 108 + 109 = 217 = spent_cents. The same across school years:
    31 Jul 2026 / 1 Aug 2026 splits 2025/2026 and 2026/2027."""
    arr = arrangement(start=dt.date(2025, 8, 1), end=dt.date(2026, 12, 31),
                      rates=[{"from": dt.date(2025, 8, 1), "hourly_rate_cents": RATE}])
    book = book_of(logged("a", 1, day=dt.date(2025, 12, 31)), logged("b", 1, day=dt.date(2026, 1, 1)),
                   logged("c", 1, day=dt.date(2026, 7, 31)), logged("d", 1, day=dt.date(2026, 8, 1)))
    fig = pot_figures(arr, book, dt.date(2026, 12, 31))
    years = {row["year"]: row["spent_cents"] for row in fig["by_budget_year"]}
    # 2025: R(108.33) = 108; 2026: R(433.33) - 108 = 433 - 108 = 325.
    assert years == {2025: 108, 2026: 325} and sum(years.values()) == fig["spent_cents"] == 433
    school = {row["school_year"]: (row["spent_cents"], row["minutes"]) for row in fig["by_school_year"]}
    # 2025/2026 holds a, b, c: R(325.00) = 325; 2026/2027 holds d: R(433.33) - 325 = 108.
    assert school == {"2025/2026": (325, 3), "2026/2027": (108, 1)}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 700), st.integers(1, 720)), min_size=0, max_size=40))
def test_budget_and_school_years_always_add_up_to_spent(days_and_minutes):
    arr = arrangement(start=dt.date(2025, 1, 1), end=dt.date(2026, 12, 31), individual_rate_cents=9664,
                      rates=[{"from": dt.date(2025, 1, 1), "hourly_rate_cents": RATE}])
    book = book_of(*(logged(f"r{i}", minutes, day=dt.date(2025, 1, 1) + dt.timedelta(days=day))
                     for i, (day, minutes) in enumerate(days_and_minutes)))
    fig = pot_figures(arr, book, dt.date(2026, 12, 31))
    assert [row["year"] for row in fig["by_budget_year"]] == [2025, 2026]
    assert sum(row["spent_cents"] for row in fig["by_budget_year"]) == fig["spent_cents"]
    assert sum(row["minutes"] for row in fig["by_budget_year"]) == fig["minutes"]
    assert sum(row["individual_equivalent_cents"] for row in fig["by_budget_year"]) == \
        fig["individual_equivalent_cents"]
    assert sum(row["spent_cents"] for row in fig["by_school_year"]) == fig["spent_cents"]
    assert [row["school_year"] for row in fig["by_school_year"]] == ["2024/2025", "2025/2026", "2026/2027"]


def test_a_voided_registration_leaves_no_month_behind():
    event = logged("a", 90, day=dt.date(2026, 3, 4))
    book = book_of(event)
    apply_voided(book, voided(event), original=LoggedFacts.from_event(event))
    assert book.spent_cent_minutes_by_month == {} and book.minutes_by_month == {}


# --- rounding once ---------------------------------------------------------------------------------

def test_rounding_once_three_single_minutes():
    # 1 minute at EUR 65/h = 108.33.. cents; three of them are exactly 325 cents, not 3 x 108.
    book = book_of(*(logged(f"m{i}", 1) for i in range(3)))
    assert book.spent_cent_minutes == 3 * 6500
    fig = pot_figures(arrangement(), book, START)
    assert fig["spent_cents"] == 325
    assert fig["spent_display"] == "EUR 3.25"
    assert fig["remaining_cents"] == 16_380_000 - 325


def test_rounding_half_up_on_display():
    book = book_of(logged("a", 1, rate=90))  # 1.5 cents
    assert pot_figures(arrangement(), book, START)["spent_cents"] == 2


def test_individual_equivalent_rounded_once():
    arr = arrangement(individual_rate_cents=9664)
    book = book_of(*(logged(f"m{i}", 1) for i in range(3)))
    fig = pot_figures(arr, book, START)
    # 3 x 9664 / 60 = 483.2 -> 483; spent 325; savings are the difference of the shown figures.
    assert fig["individual_equivalent_cents"] == 483
    assert fig["savings_cents"] == 483 - 325


def test_no_individual_rate_means_no_savings():
    fig = pot_figures(arrangement(), book_of(logged("a")), START)
    assert fig["individual_equivalent_cents"] is None
    assert fig["savings_cents"] is None
    assert fig["savings_display"] is None


# --- voids -----------------------------------------------------------------------------------------

def test_void_reverses_exactly():
    a = logged("a", 7, category=3, funding=None, residences=(VENRAY, HORST, GENNEP))
    b = logged("b", 45, category=5, residences=(HORST,), day=dt.date(2025, 10, 7))
    c = logged("c", 1, category=3, residences=(), day=dt.date(2025, 11, 11))
    book = book_of(a, b, c)
    assert book.minutes_by_residence[VENRAY] == Fraction(7, 3)
    apply_voided(book, voided(a), LoggedFacts.from_event(a))
    apply_voided(book, voided(c), LoggedFacts.from_event(c))
    assert book == book_of(b)
    assert book.minutes_by_category == {5: 45}
    assert book.minutes_by_funding == {"jeugdwet": 45}
    assert book.minutes_by_residence == {HORST: 45}
    assert book.unattributed_minutes == 0
    assert list(book.spent_cent_minutes_by_week) == [iso_week(b.date)]
    apply_voided(book, voided(b), LoggedFacts.from_event(b))
    assert book == PotBook(host_municipality=VENRAY)


def test_void_must_match_original():
    a = logged("a", 30)
    b = logged("b", 30)
    book = book_of(a, b)
    with pytest.raises(ValueError):
        apply_voided(book, voided(a), LoggedFacts.from_event(b))
    changed = voided(a).model_copy(update={"minutes": 31, "cost_cent_minutes": 31 * RATE})
    with pytest.raises(ValueError):
        apply_voided(book, changed, LoggedFacts.from_event(a))
    assert book == book_of(a, b)  # nothing applied


def test_void_without_log_is_refused():
    a = logged("a", 30)
    book = PotBook()
    with pytest.raises(ValueError):
        apply_voided(book, voided(a), LoggedFacts.from_event(a))
    assert book == PotBook()  # refused before anything changed


def test_logged_facts_round_trip():
    a = logged("a", 7, funding=None, residences=(VENRAY, HORST, HORST))
    facts = LoggedFacts.from_event(a)
    assert facts.residences == (VENRAY, HORST, HORST)
    assert facts.funding_key == "unspecified"
    assert LoggedFacts.from_dict(json.loads(json.dumps(facts.to_dict()))) == facts


# --- elapsed fraction, burn, forecast --------------------------------------------------------------

def test_elapsed_fraction_edges():
    start, end = dt.date(2026, 1, 1), dt.date(2026, 1, 10)
    assert elapsed_fraction(start, end, dt.date(2025, 12, 31)) == 0
    assert elapsed_fraction(start, end, start) == Fraction(1, 10)
    assert elapsed_fraction(start, end, dt.date(2026, 1, 5)) == Fraction(1, 2)
    assert elapsed_fraction(start, end, end) == 1
    assert elapsed_fraction(start, end, dt.date(2027, 1, 1)) == 1
    assert elapsed_fraction(start, start, start) == 1  # one-day arrangement


def test_burn_ratio_and_forecast():
    arr = arrangement(start=dt.date(2026, 1, 1), end=dt.date(2026, 1, 10), cap_cents=100_000,
                      rates=[{"from": dt.date(2026, 1, 1), "hourly_rate_cents": 6000}])
    book = book_of(logged("a", 300, rate=6000, day=dt.date(2026, 1, 2)))  # EUR 300.00
    fig = pot_figures(arr, book, dt.date(2026, 1, 5))  # half the days passed
    assert fig["elapsed_fraction"] == 0.5
    assert fig["days_elapsed"] == 5 and fig["days_total"] == 10
    assert fig["burn_ratio"] == pytest.approx(0.6)  # 30 % spent in 50 % of the time
    assert fig["forecast_cents"] == 60_000
    assert fig["forecast_display"] == "EUR 600.00"
    # Three days passed: 30000 / (3/10) = 100000 exactly.
    assert pot_figures(arr, book, dt.date(2026, 1, 3))["forecast_cents"] == 100_000
    # Forecast rounds half-up from the exact value: 7 cents over 3/10 = 23.33.. -> 23.
    small = book_of(logged("s", 7, rate=60, day=dt.date(2026, 1, 2)))
    assert pot_figures(arr, small, dt.date(2026, 1, 3))["forecast_cents"] == 23


def test_burn_and_forecast_none_before_start_and_with_zero_cap():
    arr = arrangement(start=dt.date(2026, 1, 1), end=dt.date(2026, 1, 10), cap_cents=0,
                      rates=[{"from": dt.date(2026, 1, 1), "hourly_rate_cents": 6000}])
    fig = pot_figures(arr, PotBook(), dt.date(2025, 12, 1))
    assert fig["elapsed_fraction"] == 0.0
    assert fig["burn_ratio"] is None
    assert fig["forecast_cents"] is None
    assert fig["status"] == "ok"  # nothing spent from a zero cap
    fig = pot_figures(arr, PotBook(), dt.date(2026, 1, 2))
    assert fig["burn_ratio"] is None  # cap 0
    assert fig["forecast_cents"] == 0


# --- status and alerts -----------------------------------------------------------------------------

def small_arrangement(**kw) -> Arrangement:
    # cap EUR 100.00 at EUR 60/h: 100 minutes spend exactly the cap.
    return arrangement(cap_cents=10_000, rates=[{"from": START, "hourly_rate_cents": 6000}], **kw)


def test_status_transitions():
    arr = small_arrangement()
    book = PotBook()
    assert budget_status(arr, book) == "ok"
    apply_logged(book, logged("a", 79, rate=6000))
    assert budget_status(arr, book) == "ok"
    apply_logged(book, logged("b", 1, rate=6000))  # exactly 80 %
    assert budget_status(arr, book) == "warning"
    apply_logged(book, logged("c", 19, rate=6000))
    assert budget_status(arr, book) == "warning"
    apply_logged(book, logged("d", 1, rate=6000))  # exactly the cap
    assert budget_status(arr, book) == "exceeded"
    assert pot_figures(arr, book, START)["status"] == "exceeded"


def test_exceeded_threshold_rule():
    assert exceeded_threshold([0.8, 1.0]) == 1.0
    assert exceeded_threshold([0.5, 0.8, 1.0, 1.2]) == 1.0
    assert exceeded_threshold([0.8, 1.1]) == 1.1
    assert exceeded_threshold([0.5, 0.9]) == 0.9
    assert exceeded_threshold([0.8]) == 1.0  # a single threshold below the cap is a warning
    assert exceeded_threshold([1.2]) == 1.2
    assert exceeded_threshold([]) == 1.0


def test_custom_thresholds_status():
    arr = small_arrangement(alert_thresholds=[0.5, 0.9, 1.2])
    book = book_of(logged("a", 50, rate=6000))
    assert budget_status(arr, book) == "warning"
    apply_logged(book, logged("b", 50, rate=6000))  # at the cap, below the tolerated 1.2
    assert budget_status(arr, book) == "warning"
    apply_logged(book, logged("c", 20, rate=6000))
    assert budget_status(arr, book) == "exceeded"
    assert crossed_alerts(arr, book) == [("warning", 0.5), ("warning", 0.9), ("exceeded", 1.2)]


def test_alert_once_per_crossing():
    arr = small_arrangement()
    book = PotBook()
    assert update_alerts(arr, book) == []
    apply_logged(book, logged("a", 80, rate=6000))
    assert update_alerts(arr, book) == [("warning", 0.8)]
    apply_logged(book, logged("b", 5, rate=6000))
    assert update_alerts(arr, book) == []  # still above 0.8: no second alert
    apply_logged(book, logged("c", 30, rate=6000))
    assert update_alerts(arr, book) == [("exceeded", 1.0)]
    apply_logged(book, logged("d", 30, rate=6000))
    assert update_alerts(arr, book) == []
    assert book.alerted_levels == {0.8, 1.0}


def test_one_registration_crossing_two_thresholds_gives_both():
    arr = small_arrangement()
    book = book_of(logged("big", 120, rate=6000))
    assert update_alerts(arr, book) == [("warning", 0.8), ("exceeded", 1.0)]


def test_crossed_alerts_is_pure_and_record_alerts_records():
    arr = small_arrangement()
    book = book_of(logged("a", 90, rate=6000))
    assert crossed_alerts(arr, book) == [("warning", 0.8)]
    assert crossed_alerts(arr, book) == [("warning", 0.8)]
    assert book.alerted_levels == set()
    record_alerts(book, crossed_alerts(arr, book))
    assert crossed_alerts(arr, book) == []


def test_void_rearms_threshold_and_recrossing_alerts_again():
    arr = small_arrangement()
    a = logged("a", 70, rate=6000)
    b = logged("b", 40, rate=6000)
    book = book_of(a, b)
    assert update_alerts(arr, book) == [("warning", 0.8), ("exceeded", 1.0)]
    apply_voided(book, voided(b), LoggedFacts.from_event(b))  # back to 70 %
    assert update_alerts(arr, book) == []
    assert book.alerted_levels == set()  # both re-armed
    apply_logged(book, logged("c", 15, rate=6000))  # 85 %
    assert update_alerts(arr, book) == [("warning", 0.8)]
    apply_logged(book, logged("d", 5, rate=6000))  # 90 %: still the same crossing
    assert update_alerts(arr, book) == []


def test_void_that_stays_above_keeps_alert():
    arr = small_arrangement()
    a = logged("a", 90, rate=6000)
    b = logged("b", 5, rate=6000)
    book = book_of(a, b)
    update_alerts(arr, book)
    apply_voided(book, voided(b), LoggedFacts.from_event(b))
    assert rearm_alerts(arr, book) == []
    assert book.alerted_levels == {0.8}


def test_raised_cap_rearms():
    book = book_of(logged("a", 90, rate=6000))
    assert update_alerts(small_arrangement(), book) == [("warning", 0.8)]
    bigger = small_arrangement().model_copy(update={"cap_cents": 20_000})
    assert rearm_alerts(bigger, book) == [0.8]


def test_threshold_compared_exactly_as_decimal():
    # 0.8 x 10000 = 8000 exactly; a binary float 0.8 is slightly above 4/5 and would miss it.
    arr = small_arrangement()
    book = book_of(logged("a", 80, rate=6000))
    assert book.spent_cents == 8_000
    assert budget_status(arr, book) == "warning"


# --- residence and non-resident share --------------------------------------------------------------

def test_non_resident_share_with_several_attributions():
    # 60 min for Venray + Horst + Gennep pupils: 20 each; 30 min for two Venray pupils; 10 min for Horst.
    book = book_of(
        logged("a", 60, residences=(VENRAY, HORST, GENNEP)),
        logged("b", 30, residences=(VENRAY, VENRAY)),
        logged("c", 10, residences=(HORST,)),
        logged("d", 20, residences=()),  # not attributed: outside the share
    )
    assert book.minutes_by_residence == {VENRAY: 50, HORST: 30, GENNEP: 20}
    assert book.non_resident_minutes == 50
    fig = pot_figures(arrangement(), book, START)
    assert fig["attributed_minutes"] == 100
    assert fig["unattributed_minutes"] == 20
    assert fig["non_resident_share"] == 0.5
    assert fig["minutes_by_residence"] == {GENNEP: 20, HORST: 30, VENRAY: 50}


def test_non_resident_share_exact_with_thirds():
    book = book_of(
        logged("a", 1, residences=(VENRAY, HORST, GENNEP)),
        logged("b", 1, residences=(VENRAY, HORST, GENNEP)),
    )
    assert book.minutes_by_residence == {VENRAY: Fraction(2, 3), HORST: Fraction(2, 3), GENNEP: Fraction(2, 3)}
    assert book.non_resident_minutes == Fraction(4, 3)
    fig = pot_figures(arrangement(), book, START)
    assert fig["non_resident_share"] == float(Fraction(2, 3))
    # Shown minutes split by largest remainder: sum to the whole, tie broken by code ascending.
    assert fig["minutes_by_residence"] == {GENNEP: 1, HORST: 0, VENRAY: 1}
    assert sum(fig["minutes_by_residence"].values()) == 2


def test_non_resident_share_none_without_minutes_and_host_override():
    assert pot_figures(arrangement(), PotBook(), START)["non_resident_share"] is None
    book = PotBook()
    apply_logged(book, logged("a", 30, residences=(VENRAY,)), host_municipality=HORST)
    assert book.non_resident_minutes == 30
    assert pot_figures(arrangement(), book, START)["non_resident_share"] == 1.0


# --- categories, funding, weekly series ------------------------------------------------------------

def test_breakdowns():
    book = book_of(
        logged("a", 30, category=2, funding="jeugdwet"),
        logged("b", 1, category=2, funding=None),
        logged("c", 1, category=6, funding="wlz"),
        logged("d", 1, category=6, funding=None),
    )
    fig = pot_figures(arrangement(), book, START)
    assert fig["minutes_by_task_category"] == {"2": 31, "6": 2}
    assert fig["minutes_by_funding"] == {"jeugdwet": 30, "unspecified": 2, "wlz": 1}
    assert sum(fig["spent_cents_by_task_category"].values()) == fig["spent_cents"]
    json.dumps(fig)  # JSON-able as is


def test_weekly_series():
    arr = arrangement(start=dt.date(2026, 1, 1), end=dt.date(2026, 1, 21), cap_cents=21_000,
                      rates=[{"from": dt.date(2026, 1, 1), "hourly_rate_cents": 6000}])
    book = book_of(
        logged("a", 1, rate=90, day=dt.date(2026, 1, 1)),  # 1.5 cents, ISO week 2026-W01
        logged("b", 1, rate=90, day=dt.date(2026, 1, 2)),  # 1.5 cents, W01
        logged("c", 1, rate=90, day=dt.date(2026, 1, 6)),  # 1.5 cents, W02
    )
    rows = pot_figures(arr, book, dt.date(2026, 1, 12))["weekly"]  # Monday of W03
    assert [r["week"] for r in rows] == ["2026-W01", "2026-W02", "2026-W03", "2026-W04"]
    assert rows[0]["spent_cents"] == 3
    assert rows[1]["spent_cents"] == 2  # 1.5 rounded once
    assert rows[1]["cumulative_cents"] == 5  # 4.5 rounded once, not 3 + 2
    assert rows[2]["spent_cents"] == 0 and rows[2]["cumulative_cents"] == 5  # current week
    assert rows[3]["spent_cents"] is None and rows[3]["cumulative_cents"] is None  # future
    # Straight line at each week's Sunday: 4, 11, 18 of 21 days, then the cap.
    assert [r["straight_line_cents"] for r in rows] == [4_000, 11_000, 18_000, 21_000]


def test_iso_week_year_boundary():
    assert iso_week(dt.date(2025, 12, 29)) == "2026-W01"
    assert iso_week(dt.date(2027, 1, 1)) == "2026-W53"


# --- persistence and reconciliation ----------------------------------------------------------------

def test_potbook_json_round_trip():
    book = book_of(
        logged("a", 7, category=3, funding=None, residences=(VENRAY, HORST, GENNEP)),
        logged("b", 45, category=11, residences=(HORST,), day=dt.date(2026, 1, 1)),
        logged("c", 1, residences=()),
    )
    book.alerted_levels = {0.8, 1.0}
    data = json.loads(json.dumps(book.to_dict()))
    assert data["minutes_by_residence"][VENRAY] == "7/3"
    again = PotBook.from_dict(data)
    assert again == book
    assert again.to_dict() == book.to_dict()
    assert PotBook.from_dict(PotBook().to_dict()) == PotBook()


def test_potbook_from_dict_rejects_unknown_format():
    with pytest.raises(ValueError):
        PotBook.from_dict({"format": 99})


def test_rebuild_and_reconciliation():
    events = [logged("a", 7, residences=(VENRAY, HORST)), logged("b", 1), logged("c", 13)]
    book = book_of(*events)
    rebuilt = rebuild_book([LoggedFacts.from_event(e) for e in events])
    assert rebuilt == book
    ledger = sum(e.cost_cent_minutes for e in events)
    assert reconciliation_cents(book.spent_cent_minutes, ledger) == 0
    assert reconciliation_cents(book.spent_cent_minutes + 1, ledger) == 1  # sub-cent still shows
    assert reconciliation_cents(book.spent_cent_minutes - 61, ledger) == -2
    assert reconciliation_cents(book.spent_cent_minutes + 120, ledger) == 2


# --- property: voids leave no trace ----------------------------------------------------------------

registration = st.fixed_dictionaries({
    "minutes": st.integers(1, 720),
    "rate": st.integers(1, 20_000),
    "day": st.dates(dt.date(2025, 8, 1), dt.date(2026, 7, 31)),
    "category": st.integers(1, 11),
    "funding": st.sampled_from([None, "jeugdwet", "wlz", "zvw", "wmo", "education"]),
    "residences": st.lists(st.sampled_from([VENRAY, HORST, GENNEP]), max_size=4).map(tuple),
    "voided": st.booleans(),
})


@settings(max_examples=150, deadline=None)
@given(regs=st.lists(registration, max_size=25), data=st.data())
def test_property_voids_equal_surviving(regs, data):
    events = [
        logged(f"r{i}", r["minutes"], rate=r["rate"], day=r["day"], category=r["category"],
               funding=r["funding"], residences=r["residences"])
        for i, r in enumerate(regs)
    ]
    # A random interleaving in which each void comes after its own log.
    ops = [("log", i) for i in range(len(events))] + [("void", i) for i, r in enumerate(regs) if r["voided"]]
    order = data.draw(st.permutations(ops))
    seen: set[int] = set()
    ordered = []
    for op, i in order:
        if op == "void" and i not in seen:
            continue  # placed before its log: re-queue at the end
        ordered.append((op, i))
        seen.add(i)
    ordered += [(op, i) for op, i in order if op == "void" and (op, i) not in ordered]

    book = PotBook()
    facts: dict[int, LoggedFacts] = {}
    for op, i in ordered:
        if op == "log":
            apply_logged(book, events[i])
            facts[i] = LoggedFacts.from_event(events[i])
        else:
            apply_voided(book, voided(events[i]), facts.pop(i))

    surviving = [e for e, r in zip(events, regs) if not r["voided"]]
    expected = book_of(*surviving)
    if not surviving:
        expected.host_municipality = VENRAY if events else None
    assert book == expected
    assert book.to_dict() == expected.to_dict()
    assert PotBook.from_dict(json.loads(json.dumps(book.to_dict()))) == book
    assert book.spent_cent_minutes == sum(e.cost_cent_minutes for e in surviving)
