"""School calendars, planned capacity per group and pupils by residence (design.md section 11). Pure: no clock,
no I/O; `today` and the calendar come in as values.

School days are Monday to Friday outside the calendar's holidays (`shared.schemas.Calendar`); without a calendar
every Monday to Friday is a school day. Counting is arithmetic (weekdays of a span minus the weekdays of the
merged holidays inside it), so a year-long arrangement costs a few dozen operations, not a loop over its days.

Planned capacity (arrangement `plan: [{group_id, from, until?, minutes_per_week}]`):

- the plan line in force on a day is the one covering it that started last (effective-dated, like rates);
- a school week is Monday to Friday of an ISO week with at least one school day; a week counts **pro rata to its
  school days**: each school day plans `minutes_per_week / 5` (kept exact), so a full week plans
  `minutes_per_week`, a holiday week nothing, the week of Good Friday four fifths, and a plan line or an
  arrangement that starts on a Wednesday plans three fifths of that week;
- planned cost = planned minutes x the hourly rate in force on the day / 60, rounded once;
- a completed school week (its Sunday is before `today`) in which a planned group received less than
  `capacity_alert_ratio` x its planned minutes is a capacity gap, alerted once per group and week.

Pupils by residence: each pupil with attributed care counts once under every municipality it lived in on a day
it received attributed care (a pupil who moved can count under two codes); the non-resident pupil share is the
number of distinct pupils who lived outside the host municipality on such a day over all distinct pupils with
attributed care.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from shared.money import format_euro, round_half_up
from shared.norms import norm_days
from shared.schemas import Arrangement, Calendar, Norm, PlanLine, Pupil
from shared.timeutil import in_force_on

if TYPE_CHECKING:  # the book lives in domain.py, which imports this module
    from services.budget.domain import PotBook

DAYS_PER_SCHOOL_WEEK = 5
ONE_DAY = dt.timedelta(days=1)


@lru_cache(maxsize=1024)
def exact_ratio(value: float) -> Fraction:
    """A ratio as the decimal the coordinator typed: 0.2 is 1/5, not the binary float."""
    return Fraction(repr(float(value)))


# --- school days -------------------------------------------------------------------------------------------

def weekdays_between(first: dt.date, last: dt.date) -> int:
    """Mondays to Fridays in [first, last], inclusive; 0 when last is before first."""
    if last < first:
        return 0
    full_weeks, rest = divmod((last - first).days + 1, 7)
    start = first.weekday()
    return full_weeks * 5 + sum(1 for i in range(rest) if (start + i) % 7 < 5)


def holiday_spans(calendar: Calendar) -> list[tuple[dt.date, dt.date]]:
    """The calendar's holidays as sorted, merged (overlapping or adjacent) inclusive spans; an open-ended one
    runs to date.max."""
    spans = sorted((h.valid_from, h.valid_until or dt.date.max) for h in calendar.holidays)
    merged: list[tuple[dt.date, dt.date]] = []
    for lo, hi in spans:
        if merged and (merged[-1][1] == dt.date.max or lo <= merged[-1][1] + ONE_DAY):
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def school_days(calendar: Calendar | None, first: dt.date, last: dt.date,
                spans: Sequence[tuple[dt.date, dt.date]] | None = None) -> int:
    """School days in [first, last]: Mondays to Fridays outside the holidays (every weekday without a calendar).
    `spans`: `holiday_spans(calendar)` when the caller already has them."""
    total = weekdays_between(first, last)
    if calendar is None or total == 0:
        return total
    for lo, hi in (holiday_spans(calendar) if spans is None else spans):
        if lo > last:
            break
        if hi >= first:
            total -= weekdays_between(max(lo, first), min(hi, last))
    return total


def elapsed_school_days(calendar: Calendar | None, start: dt.date, end: dt.date, today: dt.date) -> tuple[int, int]:
    """(school days of [start, end] passed by the end of `today`, school days of [start, end])."""
    spans = holiday_spans(calendar) if calendar is not None else None
    total = school_days(calendar, start, end, spans)
    passed = 0 if today < start else school_days(calendar, start, min(today, end), spans)
    return passed, total


# --- planned capacity ----------------------------------------------------------------------------------------

def _lines_of(arrangement: Arrangement, group_id: str) -> list[PlanLine]:
    return [line for line in arrangement.plan if line.group_id == group_id]


def planned(arrangement: Arrangement, calendar: Calendar | None, group_id: str, first: dt.date, last: dt.date,
            spans: Sequence[tuple[dt.date, dt.date]] | None = None) -> tuple[Fraction, Fraction]:
    """(planned minutes, planned cent-minutes) of one group in [first, last] clipped to the arrangement; exact.

    The span is cut where a plan line or a rate starts or ends, so that within each piece one line and one rate
    apply; each piece plans minutes_per_week / 5 per school day."""
    first, last = max(first, arrangement.start), min(last, arrangement.end)
    lines = _lines_of(arrangement, group_id)
    if last < first or not lines:
        return Fraction(0), Fraction(0)
    if spans is None and calendar is not None:
        spans = holiday_spans(calendar)
    cuts = {first, last + ONE_DAY}
    for line in lines:
        cuts.add(line.valid_from)
        if line.valid_until is not None:
            cuts.add(line.valid_until + ONE_DAY)
    cuts.update(rate.valid_from for rate in arrangement.rates)
    bounds = sorted(c for c in cuts if first <= c <= last + ONE_DAY)
    minutes = Fraction(0)
    cent_minutes = Fraction(0)
    for lo, next_lo in zip(bounds, bounds[1:]):
        line = in_force_on(lines, lo)
        if line is None or line.minutes_per_week == 0:
            continue
        days = school_days(calendar, lo, next_lo - ONE_DAY, spans)
        piece = Fraction(line.minutes_per_week * days, DAYS_PER_SCHOOL_WEEK)
        minutes += piece
        cent_minutes += piece * (arrangement.rate_on(lo) or 0)
    return minutes, cent_minutes


def planned_groups(arrangement: Arrangement) -> list[str]:
    return sorted({line.group_id for line in arrangement.plan})


def delivered_by_group(book: "PotBook") -> dict[str, int]:
    out: dict[str, int] = {}
    for key, minutes in book.minutes_by_group_week.items():
        group = key.split("/", 1)[0]
        out[group] = out.get(group, 0) + minutes
    return out


def plan_figures(arrangement: Arrangement, calendar: Calendar | None, book: "PotBook", today: dt.date
                 ) -> dict[str, Any]:
    """`planned_minutes`, `planned_cents` (the whole arrangement), `planned_minutes_to_date`,
    `planned_to_date_cents` (up to and including today) and `by_group`: per group of the arrangement (and any
    other group care was booked for) `{group_id, planned_minutes, planned_minutes_to_date, delivered_minutes,
    delivery_ratio}`; the ratio is delivered / planned to date, None while nothing is planned to date."""
    spans = holiday_spans(calendar) if calendar is not None else None
    delivered = delivered_by_group(book)
    total = [Fraction(0), Fraction(0)]
    to_date = [Fraction(0), Fraction(0)]
    by_group = []
    for group in sorted(set(arrangement.group_ids) | set(delivered)):
        minutes, cent_minutes = planned(arrangement, calendar, group, arrangement.start, arrangement.end, spans)
        minutes_td, cent_minutes_td = planned(arrangement, calendar, group, arrangement.start, today, spans)
        total[0] += minutes
        total[1] += cent_minutes
        to_date[0] += minutes_td
        to_date[1] += cent_minutes_td
        got = delivered.get(group, 0)
        by_group.append({
            "group_id": group,
            "planned_minutes": round_half_up(minutes),
            "planned_minutes_to_date": round_half_up(minutes_td),
            "delivered_minutes": got,
            "delivery_ratio": float(got / minutes_td) if minutes_td > 0 else None,
        })
    planned_cents = round_half_up(total[1] / 60)
    planned_to_date_cents = round_half_up(to_date[1] / 60)
    return {
        "planned_minutes": round_half_up(total[0]),
        "planned_cents": planned_cents,
        "planned_display": format_euro(planned_cents),
        "planned_minutes_to_date": round_half_up(to_date[0]),
        "planned_to_date_cents": planned_to_date_cents,
        "planned_to_date_display": format_euro(planned_to_date_cents),
        "by_group": by_group,
    }


# --- capacity gaps -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CapacityGap:
    """A completed school week in which a group received less than the ratio of its plan."""

    group_id: str
    week: str  # ISO week "2026-W07"
    week_start: dt.date
    planned_minutes: Fraction
    delivered_minutes: int

    @property
    def key(self) -> str:
        return f"{self.group_id}/{self.week}"


def last_completed_sunday(today: dt.date) -> dt.date:
    """The Sunday that ended the last week wholly before today (today itself never completes a week)."""
    return today - dt.timedelta(days=today.weekday() + 1)


def capacity_gaps(arrangement: Arrangement, calendar: Calendar | None, book: "PotBook", today: dt.date
                  ) -> list[CapacityGap]:
    """Capacity gaps not yet in `book.capacity_alerted`, in week then group order. Pure: records nothing.

    A week is completed once its Sunday is before `today`. A week with nothing planned (a holiday week, a group
    without a plan line then) is never a gap."""
    if not arrangement.plan:
        return []
    last = min(arrangement.end, last_completed_sunday(today))
    if last < arrangement.start:
        return []
    from services.budget.domain import iso_week  # the one week-key function

    ratio = exact_ratio(arrangement.capacity_alert_ratio)
    spans = holiday_spans(calendar) if calendar is not None else None
    groups = planned_groups(arrangement)
    gaps = []
    monday = arrangement.start - dt.timedelta(days=arrangement.start.weekday())
    while monday <= last:
        week = iso_week(monday)
        for group in groups:
            key = f"{group}/{week}"
            if key in book.capacity_alerted:
                continue
            minutes, _ = planned(arrangement, calendar, group, monday, monday + dt.timedelta(days=6), spans)
            delivered = book.minutes_by_group_week.get(key, 0)
            if minutes > 0 and delivered < ratio * minutes:
                gaps.append(CapacityGap(group, week, monday, minutes, delivered))
        monday += dt.timedelta(days=7)
    return gaps


def record_capacity_gaps(book: "PotBook", gaps: Iterable[CapacityGap]) -> None:
    book.capacity_alerted.update(gap.key for gap in gaps)


# --- pupils by residence ---------------------------------------------------------------------------------------

def pupil_figures(book: "PotBook") -> dict[str, Any]:
    """`pupils_by_residence` ({code: distinct pupils with attributed care who lived there on a care day}),
    `pupils_with_care`, `non_resident_pupils` and `non_resident_pupil_share` (None without any)."""
    by_code: dict[str, set[str]] = {}
    pupils: set[str] = set()
    for key in book.pupil_residences:
        ref, code = key.rsplit("/", 1)
        by_code.setdefault(code, set()).add(ref)
        pupils.add(ref)
    share = non_resident_pupil_share(book)
    return {
        "pupils_by_residence": {code: len(refs) for code, refs in sorted(by_code.items())},
        "pupils_with_care": len(pupils),
        "non_resident_pupils": len(book.non_resident_pupils),
        "non_resident_pupil_share": None if share is None else float(share),
    }


def non_resident_pupil_share(book: "PotBook") -> Fraction | None:
    pupils = {key.rsplit("/", 1)[0] for key in book.pupil_residences}
    return Fraction(len(book.non_resident_pupils), len(pupils)) if pupils else None


def non_resident_reached(arrangement: Arrangement, book: "PotBook") -> Fraction | None:
    """The share when it is at or above the arrangement's `non_resident_alert_share`, else None."""
    threshold = arrangement.non_resident_alert_share
    if threshold is None:  # checked first: this runs for every booked event
        return None
    share = non_resident_pupil_share(book)
    if share is None or share < exact_ratio(threshold):
        return None
    return share


def non_resident_alert_would_change(arrangement: Arrangement, book: "PotBook") -> bool:
    return (non_resident_reached(arrangement, book) is not None) != book.non_resident_alerted


def update_non_resident_alert(arrangement: Arrangement, book: "PotBook") -> Fraction | None:
    """Re-arm when the share fell below the threshold (or the threshold was dropped or raised past it); record
    and return the share when it reaches the threshold and is not alerted yet (one alert per crossing)."""
    share = non_resident_reached(arrangement, book)
    if share is None:
        book.non_resident_alerted = False
        return None
    if book.non_resident_alerted:
        return None
    book.non_resident_alerted = True
    book.non_resident_alerts += 1
    return share


def norm_figures(arrangement: Arrangement, pupils: Sequence[tuple[str, Pupil]], norm: Norm,
                 calendar: Calendar | None, book: "PotBook", today: dt.date) -> dict[str, Any]:
    """A per-pupil norm pot (design.md section 11): what the norm pays up to and including today (the same
    pupil-days a close charges, shared/norms.py) against the care delivered, in minutes and cents."""
    minutes = cost = Fraction(0)
    for paid in norm_days(arrangement, pupils, norm, calendar, arrangement.start, min(today, arrangement.end)):
        minutes += paid.minutes
        cost += paid.cost_cent_minutes
    delivered = book.minutes
    return {"norm_id": arrangement.norm_id, "norm_minutes_to_date": round_half_up(minutes),
            "norm_to_date_cents": round_half_up(cost / 60), "delivered_minutes": delivered,
            "delivery_ratio": float(delivered / minutes) if minutes else None}
