"""The per-pupil norm (Nijmegen, design.md section 11): which pupil-days a norm pays for, and how much.

Pure. Used by the settlement service (what a close charges: services/settlement/keys.py `ByNorm`) and the
budget service (what the pot is owed to date against the care delivered), so both count the same days.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator

from shared.schemas import Arrangement, Calendar, Norm, Pupil


@dataclass(frozen=True)
class NormDay:
    pupil_ref: str
    day: dt.date
    residence: str | None  # None: the roster has no residence that day
    minutes: Fraction  # norm_minutes_per_week / 5
    rate_cents: int  # hourly rate in force that day

    @property
    def cost_cent_minutes(self) -> Fraction:
        return self.minutes * self.rate_cents


def is_school_day(day: dt.date, calendar: Calendar | None) -> bool:
    return calendar.is_school_day(day) if calendar is not None else day.weekday() < 5


def norm_days(arrangement: Arrangement, pupils: Iterable[tuple[str, Pupil]], norm: Norm, calendar: Calendar | None,
              start: dt.date, end: dt.date) -> Iterator[NormDay]:
    """Every day of [start, end] within the arrangement on which the norm pays for a pupil of its groups: a
    school day, the pupil enrolled and collective, a recorded care need below the threshold of the norm
    version in force. A pupil without a recorded care need that day is not counted (the need cannot be known
    to be below the threshold)."""
    groups = set(arrangement.group_ids)
    last = min(end, arrangement.end)
    for ref, pupil in pupils:
        if pupil.group_id not in groups:
            continue
        day = max(start, pupil.enrolled_from, arrangement.start)
        while day <= last:
            if is_school_day(day, calendar) and pupil.enrolled_on(day) and pupil.eligibility_on(day) == "collective":
                version, need, rate = norm.version_on(day), pupil.care_need_on(day), arrangement.rate_on(day)
                if version is not None and need is not None and rate is not None \
                        and need < version.threshold_minutes_per_week:
                    yield NormDay(ref, day, pupil.residence_on(day),
                                  Fraction(version.norm_minutes_per_week, 5), rate)
            day += dt.timedelta(days=1)
