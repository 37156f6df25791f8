"""Who a part of a close's cost belongs to: the arrangement's reference data, participation and routing.

Pure (no I/O, no clock). Shared by the settlement domain (services/settlement/domain.py) and the keys'
splits (services/settlement/keys.py): a municipality participates on some days only, and a part that
belongs to it on a day it does not is routed by the arrangement's policy (the host absorbs it, or it is
billed and marked).
"""
from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterable, Mapping, NamedTuple, Sequence

from shared.schemas import Arrangement, Calendar, Funder, Municipality, Norm, Pupil

# Residence of a pupil-day the roster does not cover: nobody to bill, so the host absorbs it.
UNKNOWN_RESIDENCE = "unknown"
ONE_DAY = dt.timedelta(days=1)


class SettlementError(ValueError):
    """The close cannot be made as asked: bad period, missing basis, inconsistent inputs (HTTP 422)."""


@dataclass(frozen=True)
class ArrangementContext:
    """Reference data of one arrangement, as the settlement service's registry copy holds it."""

    arrangement_id: str
    arrangement: Arrangement
    host_municipality: str  # the school's municipality
    municipalities: Mapping[str, Municipality]
    pupils: Sequence[tuple[str, Pupil]] = ()  # (pupil_ref, pupil) of the arrangement's groups
    school_name: str | None = None
    funders: Mapping[str, Funder] = field(default_factory=dict)  # the funders the policy names
    norm: Norm | None = None  # the arrangement's norm_id (key per_pupil_norm)
    calendar: Calendar | None = None  # the arrangement's calendar_id: its school days


class Bucket(NamedTuple):
    """Where a part of the cost lands: whose statement, absorbed for whom, billed while not participating."""

    municipality: str
    absorbed_from: str = ""  # non-empty: the host carries this part for that (non-participating) municipality
    non_participating: bool = False  # policy "bill": kept on the municipality's own statement, marked


@dataclass
class PeriodBasis:
    """The split basis of a period: weights per bucket and the counts statements show."""

    unit: str
    weights: dict[Bucket, Fraction] = field(default_factory=dict)
    # Each municipality's own basis (all days, participating or not) and its participating days.
    counts: dict[str, Fraction] = field(default_factory=dict)
    participating_days: dict[str, int] = field(default_factory=dict)
    # Keys that charge a norm rather than the care: the exact amount (cent-minutes) the period charges, and
    # what each bucket's line shows (its norm minutes; the weights are its cost).
    charged_cent_minutes: Fraction | None = None
    shown: dict["Bucket", Fraction] | None = None


def each_day(start: dt.date, end: dt.date) -> Iterable[dt.date]:
    for offset in range((end - start).days + 1):
        yield start + dt.timedelta(days=offset)


def participates(municipalities: Mapping[str, Municipality], code: str, day: dt.date) -> bool:
    municipality = municipalities.get(code)
    return municipality is not None and municipality.participates_on(day)


def route(code: str, day: dt.date, policy: str, host: str,
           municipalities: Mapping[str, Municipality]) -> Bucket:
    """Whose statement carries a part that belongs to municipality `code` on `day`."""
    if code == host or participates(municipalities, code, day):
        return Bucket(code)
    if policy == "bill" and code != UNKNOWN_RESIDENCE:
        return Bucket(code, non_participating=True)
    return Bucket(host, absorbed_from=code)


def routing_days(municipalities: Mapping[str, Municipality], after: dt.date | None,
                 period_end: dt.date) -> tuple[dt.date, ...]:
    """The days that stand for every care day after `after` up to `period_end` when routing it.

    Routing (`_route`, `_participates`) depends on the day only through participation, which changes only
    where some municipality's participation period starts or ends. Between two such changes every day
    routes alike, so each stretch is represented by its last day. Ascending, `period_end` last; a care date
    routes like the first routing day on or after it (`routing_day_of`). One day when nothing changes.
    """
    changes: set[dt.date] = set()
    for municipality in municipalities.values():
        for period in municipality.participation or ():
            changes.add(period.valid_from)
            if period.valid_until is not None and period.valid_until < dt.date.max:
                changes.add(period.valid_until + ONE_DAY)
    days = {day - ONE_DAY for day in changes
            if dt.date.min < day <= period_end and (after is None or day - ONE_DAY > after)}
    return tuple(sorted(days)) + (period_end,)


def participating_days(municipalities: Mapping[str, Municipality], code: str, start: dt.date, end: dt.date) -> int:
    """Days of [start, end] on which municipality `code` participates (none when it is not registered)."""
    municipality = municipalities.get(code)
    if municipality is None:
        return 0
    if municipality.participation is None:
        return (end - start).days + 1
    # Walk the stretches of equal participation (its periods may overlap, so not a sum of overlaps).
    total, first = 0, start
    for last in routing_days({code: municipality}, start - ONE_DAY, end):
        if municipality.participates_on(last):
            total += (last - first).days + 1
        first = last + ONE_DAY
    return total


def routing_day_of(day: dt.date, days: Sequence[dt.date]) -> dt.date:
    """The routing day (`routing_days`) that stands for care dated `day` (at most the last one)."""
    return days[min(bisect_left(days, day), len(days) - 1)]


def residences_of(attributions: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """The residences of a registration's attributed pupils, sorted: what its new care settles by."""
    return tuple(sorted(residence for _pupil_ref, residence in attributions))
