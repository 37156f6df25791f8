"""Time rules: effective-dated intervals (inclusive `from`/`until`), school and budget years, the local clock.

Dates are `datetime.date`; an interval with `until=None` is open-ended. "Today" is the date in
Europe/Amsterdam, because a school registering care at 00:30 local time means that local day.
"""
from __future__ import annotations

import datetime as dt
from typing import Iterable, Protocol, Sequence, TypeVar
from zoneinfo import ZoneInfo

REGION_TZ = ZoneInfo("Europe/Amsterdam")


class Dated(Protocol):
    valid_from: dt.date
    valid_until: dt.date | None


D = TypeVar("D", bound=Dated)


def today() -> dt.date:
    return dt.datetime.now(REGION_TZ).date()


def covers(item: Dated, day: dt.date) -> bool:
    return item.valid_from <= day and (item.valid_until is None or day <= item.valid_until)


def in_force_on(items: Iterable[D], day: dt.date) -> D | None:
    """The interval covering `day`; when several overlap, the one that started last wins."""
    best: D | None = None
    for item in items:
        if covers(item, day) and (best is None or item.valid_from >= best.valid_from):
            best = item
    return best


def overlap_days(start: dt.date, end: dt.date, item: Dated) -> int:
    """Number of days of [start, end] (inclusive) that `item` covers."""
    lo = max(start, item.valid_from)
    hi = end if item.valid_until is None else min(end, item.valid_until)
    return max(0, (hi - lo).days + 1)


def school_year_of(day: dt.date) -> str:
    """School year (1 August - 31 July) as '2025/2026'."""
    first = day.year if day.month >= 8 else day.year - 1
    return f"{first}/{first + 1}"


def budget_year_of(day: dt.date) -> int:
    return day.year


def intervals_overlap(a_start: dt.date, a_end: dt.date, b_start: dt.date, b_end: dt.date) -> bool:
    return a_start <= b_end and b_start <= a_end


def sorted_by_start(items: Sequence[D]) -> list[D]:
    return sorted(items, key=lambda i: i.valid_from)
