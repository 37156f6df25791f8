"""Hours domain: is a registration acceptable, and what does it cost and to whom is it attributed?

Pure: works on `ReferenceData` (plain values, shared/reference.py) and a registration; no I/O. The reasons are
written for the school that has to act on them.

Eligibility (design.md section 11, double funding): a pupil whose `eligibility` on the care date is not
`collective` (an `individual_decision`, or `excluded`) is funded elsewhere, so the pot must not pay for them.
A registration that lists such a pupil is rejected. A registration without listed pupils is attributed to the
collective pupils enrolled in the group that day only: the others are left out of the attribution (the cost is
the same, the residences and shares are those of the collective pupils), and when nobody collective is left it
is rejected.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from shared.events import Attribution
from shared.money import cent_minutes_to_cents, cost_cent_minutes
from shared.reference import ReferenceData
from shared.schemas import Pupil, Registration


@dataclass(frozen=True)
class Accepted:
    arrangement_id: str
    host_municipality: str
    hourly_rate_cents: int
    cost_cent_minutes: int
    cost_cents: int
    attributed_to: str  # "listed" or "enrolled"
    attributions: tuple[Attribution, ...]
    funder: str | None = None  # the framework funder its funding law routes it to; None: the municipalities


@dataclass(frozen=True)
class Rejected:
    reasons: tuple[str, ...]


_ATTRIBUTIONS: dict[tuple[str, str], Attribution] = {}


def _attribution(pupil_ref: str, municipality: str) -> Attribution:
    """Attributions are frozen and few (pupils x residences): build each once. model_construct skips
    re-validating fields that come from validated reference data; this is the hot path."""
    key = (pupil_ref, municipality)
    found = _ATTRIBUTIONS.get(key)
    if found is None:
        if len(_ATTRIBUTIONS) > 200_000:
            _ATTRIBUTIONS.clear()
        found = _ATTRIBUTIONS[key] = Attribution.model_construct(pupil_ref=pupil_ref, municipality=municipality)
    return found


def _not_collective(pupil: Pupil, day: dt.date) -> str | None:
    """The pupil's eligibility status on `day` when it is not `collective` (None when the pot may pay)."""
    if not pupil.eligibility:  # the usual case, on the hot path: collective
        return None
    status = pupil.eligibility_on(day)
    return None if status == "collective" else status


def _not_collective_reason(ref: str, status: str, day: dt.date) -> str:
    if status == "individual_decision":
        return (f"pupil {ref!r} has an individual decision (individual_decision) on {day.isoformat()}: "
                "their care is funded individually, not from this pot")
    return (f"pupil {ref!r} is excluded from collective funding ({status}) on {day.isoformat()}: "
            "their care is funded otherwise, not from this pot")


def assess(reg: Registration, registry: ReferenceData) -> Accepted | Rejected:
    school = registry.schools.get(reg.school_id)
    if school is None:
        return Rejected((f"school {reg.school_id!r} is not registered",))
    if (reg.school_id, reg.group_id) not in registry.groups:
        return Rejected((f"group {reg.group_id!r} is not registered for school {reg.school_id!r}",))
    found = registry.arrangement_for(reg.school_id, reg.group_id, reg.date)
    if found is None:
        return Rejected((f"no arrangement covers group {reg.group_id!r} on {reg.date.isoformat()}",))
    arrangement_id, arrangement = found
    rate = arrangement.rate_on(reg.date)
    if rate is None:  # unreachable when the gateway accepted the arrangement, kept for safety
        return Rejected((f"arrangement {arrangement_id!r} has no rate in force on {reg.date.isoformat()}",))
    if arrangement.settlement.unroutable(reg.funding):
        return Rejected((f"funding {reg.funding!r} is not routed by arrangement {arrangement_id!r}: its "
                         f"settlement.frameworks names no funder for {reg.funding}, and the municipalities do not "
                         "pay it; register the care untagged or as jeugdwet if they should",))

    reasons: list[str] = []
    if reg.pupils:
        attributed_to = "listed"
        refs = reg.pupils
        residences = [(ref, None) for ref in refs]
        for ref in refs:
            pupil = registry.pupils.get((reg.school_id, ref))
            if pupil is None:
                reasons.append(f"pupil {ref!r} is not on the roster of school {reg.school_id!r}")
            elif pupil.group_id != reg.group_id:
                reasons.append(f"pupil {ref!r} belongs to group {pupil.group_id!r}, not {reg.group_id!r}")
            elif not pupil.enrolled_on(reg.date):
                reasons.append(f"pupil {ref!r} is not enrolled on {reg.date.isoformat()}")
            elif (status := _not_collective(pupil, reg.date)) is not None:
                reasons.append(_not_collective_reason(ref, status, reg.date))
    else:
        attributed_to = "enrolled"
        enrolled = registry.enrolled_with_residence(reg.school_id, reg.group_id, reg.date)
        if not enrolled:
            reasons.append(f"no pupil is enrolled in group {reg.group_id!r} on {reg.date.isoformat()}: "
                           "there is nobody to attribute the care to")
        left_out = [(ref, status) for ref, _ in enrolled
                    if (status := _not_collective(registry.pupils[(reg.school_id, ref)], reg.date)) is not None]
        left_out_refs = {ref for ref, _ in left_out}
        residences = [item for item in enrolled if item[0] not in left_out_refs]
        if enrolled and not residences:
            listed = "; ".join(f"{ref}: {status}" for ref, status in left_out)
            reasons.append(f"no pupil enrolled in group {reg.group_id!r} on {reg.date.isoformat()} is collectively "
                           f"funded ({listed}): their care is funded individually or excluded, not from this pot; "
                           "there is nobody to attribute the care to")
    if reasons:
        return Rejected(tuple(reasons))

    attributions: list[Attribution] = []
    for ref, residence in residences:
        if residence is None and attributed_to == "listed":
            residence = registry.pupils[(reg.school_id, ref)].residence_on(reg.date)
        if residence is None:
            reasons.append(f"pupil {ref!r} has no residence municipality on {reg.date.isoformat()}")
        else:
            attributions.append(_attribution(ref, residence))
    if reasons:
        return Rejected(tuple(reasons))

    exact = cost_cent_minutes(reg.minutes, rate)
    return Accepted(
        arrangement_id=arrangement_id,
        host_municipality=school.municipality,
        hourly_rate_cents=rate,
        cost_cent_minutes=exact,
        cost_cents=cent_minutes_to_cents(exact),
        attributed_to=attributed_to,
        attributions=tuple(attributions),
        funder=arrangement.settlement.funder_of(reg.funding),
    )
