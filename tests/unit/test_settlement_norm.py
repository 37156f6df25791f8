"""The per-pupil norm key (Nijmegen, design.md section 11): a close charges the norm per collective school day
of each pupil below the care-need threshold, to the pupil's residence; registrations only monitor delivery.
Figures derived by hand."""
from __future__ import annotations

import datetime as dt

from services.settlement.domain import ArrangementContext, CareLine, Close, close_period
from shared.schemas import Arrangement, Calendar, Municipality, Norm, Pupil

D = dt.date
NIJMEGEN, BEUNINGEN = "GM0268", "GM0209"


def pupil(home: str, need: int | None, enrolled_from: dt.date = D(2025, 3, 3), **extra) -> Pupil:
    return Pupil.model_validate({
        "group_id": "g1", "enrolled_from": enrolled_from.isoformat(), "residence": [{"municipality": home,
                                                                                  "from": "2025-01-01"}],
        **({"care_need": [{"from": "2025-01-01", "minutes_per_week": need}]} if need is not None else {}), **extra})


def context(pupils: dict[str, Pupil], versions: list[dict] | None = None,
            calendar: Calendar | None = None, rate_cents: int = 6500) -> ArrangementContext:
    arrangement = Arrangement.model_validate({
        "school_id": "s", "group_ids": ["g1"], "start": "2025-01-01", "end": "2025-12-31", "norm_id": "nijmegen",
        "rates": [{"from": "2025-01-01", "hourly_rate_cents": rate_cents}], "cap_cents": 10**9,
        "settlement": {"key": "per_pupil_norm"}})
    norm = Norm.model_validate({"versions": versions or [
        {"from": "2025-01-01", "threshold_minutes_per_week": 720, "norm_minutes_per_week": 330}]})
    return ArrangementContext("arr", arrangement, NIJMEGEN,
                              {NIJMEGEN: Municipality(name="Nijmegen"), BEUNINGEN: Municipality(name="Beuningen")},
                              pupils=tuple(pupils.items()), norm=norm, calendar=calendar)


def totals(result) -> dict[str, int]:  # noqa: ANN001
    return {s["funder"]: s["total_cents"] for s in result.statements}


def test_a_collective_pupil_below_the_threshold_for_five_school_days_costs_the_weekly_norm() -> None:
    # Enrolled Monday 3 March to Friday 7 March 2025: 5 school days x 330/5 min = 330 min x EUR 65.00/h
    # = EUR 357.50 to Beuningen, where the pupil lives. The other pupil needs 800 min a week (above the
    # threshold of 720): nothing on this pot. A registration of 600 min is monitoring only.
    ctx = context({"below": pupil(BEUNINGEN, 300, enrolled_until="2025-03-07"),
                   "above": pupil(NIJMEGEN, 800, enrolled_until="2025-03-07")})
    care = CareLine("r1", D(2025, 3, 4), 600 * 6500, 600, (("below", BEUNINGEN),), "listed")
    result = close_period(ctx, [care], [], D(2025, 3, 1), D(2025, 3, 31), D(2025, 4, 1))
    statements = {s["funder"]: s for s in result.statements}
    assert totals(result) == {BEUNINGEN: 35_750}
    [line] = statements[BEUNINGEN]["lines"]
    assert (line["kind"], line["basis"]["unit"], line["basis"]["value"], line["amount_cents"]) == \
        ("care", "norm_minutes", "330", 35_750)
    assert result.close.cumulative_cost_cent_minutes == 600 * 6500  # the care it monitored, not what it charged


def test_individual_decisions_missing_needs_weekends_and_holidays_are_not_charged() -> None:
    # 3..16 March 2025 is two weeks, 10 weekdays; a holiday 10..14 March leaves 5 school days: 330 min = 35,750.
    # A pupil with an individual decision and one without a recorded care need cost nothing.
    calendar = Calendar.model_validate({"name": "test", "holidays": [
        {"from": "2025-03-10", "until": "2025-03-14", "name": "voorjaarsvakantie"}]})
    ctx = context({"p": pupil(NIJMEGEN, 100, enrolled_until="2025-03-16"),
                   "indiv": pupil(NIJMEGEN, 100, enrolled_until="2025-03-16",
                                  eligibility=[{"from": "2025-01-01", "status": "individual_decision"}]),
                   "unknown": pupil(NIJMEGEN, None, enrolled_until="2025-03-16")}, calendar=calendar)
    result = close_period(ctx, [], [], D(2025, 3, 1), D(2025, 3, 31), D(2025, 4, 1))
    assert totals(result) == {NIJMEGEN: 35_750}


def test_a_recalibrated_norm_applies_from_its_date_and_never_to_a_closed_period() -> None:
    # March at 330 min a week: 21 weekdays from Mon 3 March (3..31) -> 21 x 66 min = 1,386 min = EUR 1,501.50.
    # From 1 April the norm is 300 min a week: April has 22 weekdays -> 22 x 60 min = 1,320 min = EUR 1,430.00.
    versions = [{"from": "2025-01-01", "threshold_minutes_per_week": 720, "norm_minutes_per_week": 330},
                {"from": "2025-04-01", "threshold_minutes_per_week": 720, "norm_minutes_per_week": 300}]
    march_only = context({"p": pupil(NIJMEGEN, 100)})
    march = close_period(march_only, [], [], D(2025, 3, 1), D(2025, 3, 31), D(2025, 4, 1))
    assert totals(march) == {NIJMEGEN: 150_150}
    recalibrated = context({"p": pupil(NIJMEGEN, 100)}, versions=versions)
    april = close_period(recalibrated, [], [march.close], D(2025, 4, 1), D(2025, 4, 30), D(2025, 5, 1))
    assert totals(april) == {NIJMEGEN: 143_000}


def test_a_norm_that_does_not_come_to_whole_cents_is_settled_exactly_over_the_closes() -> None:
    # 333 min a week at EUR 65.11/h: a school day is 333/5 min x 6511 cents / 60 = 2,168,163/300 cents
    # = 7,227.21 cents. Close 1 (one day): 7,227.21 -> 7,227. Close 2: cumulative 14,454.42 -> 14,454, so
    # 7,227 again. Close 3: 21,681.63 -> 21,682, so 7,228: the residue is carried, never lost.
    versions = [{"from": "2025-01-01", "threshold_minutes_per_week": 720, "norm_minutes_per_week": 333}]
    ctx = context({"p": pupil(NIJMEGEN, 100)}, versions=versions, rate_cents=6511)
    history, charged = [], []
    for day in (D(2025, 3, 3), D(2025, 3, 4), D(2025, 3, 5)):
        result = close_period(ctx, [], history, day, day, D(2025, 4, 1))
        assert Close.from_dict(result.close.to_dict()) == result.close  # stored and read back exactly
        history.append(result.close)
        charged.append(result.close.charged_cents)
    assert charged == [7_227, 7_227, 7_228]
    assert sum(charged) == 21_682


def test_the_pot_shows_delivered_care_against_what_the_norm_pays_to_date() -> None:
    # The same pupil-days as a close: one pupil below the threshold enrolled Mon 3..Fri 7 March 2025, so
    # 330 norm minutes = EUR 357.50 to date (today is long after); 600 minutes delivered: ratio 600 / 330.
    from services.budget.capacity import norm_figures
    from services.budget.domain import PotBook
    ctx = context({"below": pupil(BEUNINGEN, 300, enrolled_until="2025-03-07"),
                   "above": pupil(NIJMEGEN, 800, enrolled_until="2025-03-07")})
    book = PotBook(minutes=600)
    assert ctx.norm is not None
    figures = norm_figures(ctx.arrangement, ctx.pupils, ctx.norm, None, book, D(2026, 11, 29))
    assert figures == {"norm_id": "nijmegen", "norm_minutes_to_date": 330, "norm_to_date_cents": 35_750,
                       "delivered_minutes": 600, "delivery_ratio": 600 / 330}
    # Before the Wednesday: Monday and Tuesday only, 2 x 66 = 132 minutes = EUR 143.00.
    early = norm_figures(ctx.arrangement, ctx.pupils, ctx.norm, None, PotBook(), D(2025, 3, 4))
    assert (early["norm_minutes_to_date"], early["norm_to_date_cents"], early["delivery_ratio"]) == (132, 14_300, 0.0)
