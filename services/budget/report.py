"""Accountability reports (verantwoordingsrapportage, design.md section 12): pure.

Venray reviews the pilot every three months and Midden-Limburg accounts for its spending before 1 March, so the
coordinator issues a quarterly, annual or final report over one or more arrangements. This module resolves and
checks the request and computes the document from each pot's live registrations (the ledger's `LoggedFacts`),
its payments and its arrangement; the budget service stores it, immutable, and renders it (report_render.py).
No I/O, no clock: `today` is passed.

    request = resolve_request(kind, arrangement_ids, arrangements, period=..., period_start=..., period_end=...)
    check_may_issue(request, arrangements, today)       # Invalid (422, field), NotEnded (409)
    doc = report_document(report_id or report_id_for(request), request, pots, today)

Period: `quarterly` is a calendar quarter ("2026-Q1" or its first and last day), `annual` a calendar year
("2026"), `final` the arrangements' whole term (earliest start to latest end). The period must have ended
(its last day before today, 409 otherwise: a stored report never changes, so it is not issued for a period that
is still running) and must overlap every arrangement it names (422).

Figures per arrangement, over the period clipped to the arrangement (integer cents and minutes):

* spent: the **running-total rule** of statements and by_budget_year: the exact cost (cent-minutes) of the live
  registrations dated up to the period's last day, rounded once, minus the same up to the day before its first
  day. Quarters therefore add up exactly to their year, weeks and budget years to the period, and a final report
  to the pot's `spent_cents`. The individual equivalent (minutes x individual rate) follows the same rule;
  savings = equivalent - spent.
* by group, task category and funding law: minutes, and the period's spent split by largest remainder over the
  exact cost, so the rows add up to the period's spent. Per group also the planned minutes and cost (the plan,
  pro rata to school days, capacity.planned), the delivery ratio and the distinct care workers.
* by week (ISO weeks, clipped to the period): minutes per group and spent (running-total rule).
* by budget year (each calendar year's part of the period): planned (installments due in it), planned capacity
  cost, spent, paid (payments dated in it), minutes, individual equivalent and savings.
* pupils reached: distinct pseudonyms with attributed care in the period; pupils with care on 3 or more
  distinct days; non-resident share of the attributed minutes (as the pot's) and of the pupils reached.
* capacity gaps: per group and week, the weeks in which the group received less than `capacity_alert_ratio` of
  its plan (the same rule as the capacity_gap alert, over the week's part inside the period).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterable, Mapping, Sequence

from services.budget import capacity
from services.budget.domain import LoggedFacts, Payment, iso_week
from shared.money import CENT_MINUTES_PER_CENT, largest_remainder, round_half_up
from shared.schemas import Arrangement, Calendar

DOCUMENT = "accountability_report"
KINDS = ("quarterly", "annual", "final")
THREE_DAYS = 3  # design.md section 12: pupils with care on 3 or more days
ONE_DAY = dt.timedelta(days=1)
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")
_YEAR = re.compile(r"^(\d{4})$")


class ReportError(ValueError):
    """A report that may not be issued as asked; the message says why."""


class Invalid(ReportError):
    """Bad input (422), naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotEnded(ReportError):
    """The period has not ended yet (409)."""


class ReportIdTaken(ReportError):
    """The report_id was issued for another request (409)."""


@dataclass(frozen=True)
class ReportRequest:
    """A resolved request: what makes two requests "the same" (the set of arrangements, kind and period)."""

    kind: str
    arrangement_ids: tuple[str, ...]  # sorted, unique
    period_start: dt.date
    period_end: dt.date

    def key(self) -> dict[str, Any]:
        return {"kind": self.kind, "arrangement_ids": list(self.arrangement_ids),
                "period_start": self.period_start.isoformat(), "period_end": self.period_end.isoformat()}


def quarter_bounds(year: int, quarter: int) -> tuple[dt.date, dt.date]:
    first = dt.date(year, 3 * quarter - 2, 1)
    last = dt.date(year + 1, 1, 1) if quarter == 4 else dt.date(year, 3 * quarter + 1, 1)
    return first, last - ONE_DAY


def period_label(kind: str, start: dt.date, end: dt.date) -> str:
    """"2026-Q1", "2026", or "2025-08-01/2026-07-31" for a final report."""
    if kind == "quarterly":
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    if kind == "annual":
        return str(start.year)
    return f"{start.isoformat()}/{end.isoformat()}"


def resolve_request(kind: str, arrangement_ids: Sequence[str], arrangements: Mapping[str, Arrangement], *,
                    period: str | int | None = None, period_start: dt.date | None = None,
                    period_end: dt.date | None = None) -> ReportRequest:
    """The period from `period` ("2026-Q1", "2026"; none for final) or from period_start/period_end (the
    contract's form), checked against the kind. `arrangements`: those named (all must be known)."""
    if kind not in KINDS:
        raise Invalid("kind", f"must be one of {', '.join(KINDS)}")
    ids = tuple(sorted(set(arrangement_ids)))
    if not ids:
        raise Invalid("arrangement_ids", "name at least one arrangement")
    missing = [a for a in ids if a not in arrangements]
    if missing:
        raise Invalid("arrangement_ids", f"not registered: {', '.join(missing)}")
    explicit = period_start is not None or period_end is not None
    if period is not None and explicit:
        raise Invalid("period", "give either period or period_start and period_end, not both")
    if explicit and (period_start is None or period_end is None):
        raise Invalid("period_end" if period_end is None else "period_start", "give both period_start and period_end")
    if kind == "final":
        start = min(arrangements[a].start for a in ids)
        end = max(arrangements[a].end for a in ids)
        if period is not None:
            raise Invalid("period", "a final report covers the arrangements' whole term: leave period out")
        if explicit and (period_start, period_end) != (start, end):
            raise Invalid("period_start", f"a final report covers the arrangements' whole term, {start.isoformat()} "
                                          f"to {end.isoformat()}")
        return ReportRequest(kind, ids, start, end)
    if period is not None:
        text = str(period)
        if kind == "quarterly":
            m = _QUARTER.match(text)
            if not m:
                raise Invalid("period", "a quarterly report's period reads like 2026-Q1")
            start, end = quarter_bounds(int(m.group(1)), int(m.group(2)))
        else:
            m = _YEAR.match(text)
            if not m:
                raise Invalid("period", "an annual report's period is a year, like 2026")
            start, end = dt.date(int(text), 1, 1), dt.date(int(text), 12, 31)
    elif explicit:
        assert period_start is not None and period_end is not None
        start, end = period_start, period_end
        if end < start:
            raise Invalid("period_end", "lies before period_start")
        if kind == "quarterly":
            if quarter_bounds(start.year, (start.month - 1) // 3 + 1) != (start, end):
                raise Invalid("period_start", "a quarterly report covers a calendar quarter (1 January - 31 March, ...)")
        elif (start, end) != (dt.date(start.year, 1, 1), dt.date(start.year, 12, 31)):
            raise Invalid("period_start", "an annual report covers a calendar year (1 January - 31 December)")
    else:
        raise Invalid("period", f"a {kind} report needs a period (like "
                                f"{'2026-Q1' if kind == 'quarterly' else '2026'}) or period_start and period_end")
    return ReportRequest(kind, ids, start, end)


def check_may_issue(request: ReportRequest, arrangements: Mapping[str, Arrangement], today: dt.date) -> None:
    """Every arrangement must run during the period (422); the period must be over (409)."""
    outside = [a for a in request.arrangement_ids
               if arrangements[a].end < request.period_start or arrangements[a].start > request.period_end]
    if outside:
        raise Invalid("period", f"{request.period_start.isoformat()} to {request.period_end.isoformat()} lies outside "
                                f"the term of arrangement(s) {', '.join(outside)}")
    if not request.period_end < today:
        raise NotEnded(f"the period ends on {request.period_end.isoformat()}; its report can be issued from "
                       f"{(request.period_end + ONE_DAY).isoformat()} (today is {today.isoformat()})")


def report_id_for(request: ReportRequest) -> str:
    """Deterministic id of a request without report_id: the same kind, period and set of arrangements give the
    same id, so sending it again answers the report issued before."""
    digest = hashlib.sha256(",".join(request.arrangement_ids).encode()).hexdigest()[:12]
    return f"rep-{request.kind}-{period_label(request.kind, request.period_start, request.period_end)}-{digest}" \
        .replace("/", "_")


def same_request(doc: Mapping[str, Any], request: ReportRequest) -> bool:
    return {k: doc[k] for k in ("kind", "arrangement_ids", "period_start", "period_end")} == request.key()


def answer_for(existing: Mapping[str, Any] | None, request: ReportRequest, report_id: str) -> Mapping[str, Any] | None:
    """The stored report when this request was issued before (200), None to issue it; ReportIdTaken (409) when
    the id names a report of another request."""
    if existing is None:
        return None
    if not same_request(existing, request):
        raise ReportIdTaken(f"report_id {report_id!r} was issued for another report ({existing['kind']}, "
                            f"{existing['period_start']} to {existing['period_end']}, "
                            f"{', '.join(existing['arrangement_ids'])})")
    return existing


# --- the figures -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PotInput:
    """One arrangement's facts as the service read them: the arrangement (with its effective cap), every live
    registration (any date: the running-total rule needs those before the period), payments and calendar."""

    arrangement_id: str
    arrangement: Arrangement
    facts: Sequence[LoggedFacts]
    payments: Sequence[Payment] = ()
    calendar: Calendar | None = None
    school_name: str | None = None


def _cents_between(facts: Sequence[LoggedFacts], first: dt.date, last: dt.date, value: Any) -> int:
    """Running-total rule: round(exact sum dated <= last) - round(exact sum dated < first); `value(f)` in
    cent-minutes."""
    upto = before = 0
    for f in facts:
        if f.date <= last:
            upto += value(f)
            if f.date < first:
                before += value(f)
    return round_half_up(Fraction(upto, CENT_MINUTES_PER_CENT)) - round_half_up(Fraction(before,
                                                                                           CENT_MINUTES_PER_CENT))


def _split(total: int, weights: Mapping[Any, int]) -> dict[Any, int]:
    return largest_remainder(total, weights) if any(weights.values()) else {k: 0 for k in weights}


def _ratio(part: Fraction | int, whole: Fraction | int) -> float | None:
    return float(Fraction(part) / whole) if whole else None


def _mondays(first: dt.date, last: dt.date) -> Iterable[dt.date]:
    monday = first - dt.timedelta(days=first.weekday())
    while monday <= last:
        yield monday
        monday += dt.timedelta(days=7)


def arrangement_report(pot: PotInput, period_start: dt.date, period_end: dt.date) -> dict[str, Any]:
    """One arrangement's section of the report (module doc)."""
    arr = pot.arrangement
    first, last = max(period_start, arr.start), min(period_end, arr.end)
    live = sorted(pot.facts, key=lambda f: (f.date, f.registration_id))
    inside = [f for f in live if first <= f.date <= last]
    spent = _cents_between(live, first, last, lambda f: f.cost_cent_minutes)
    rate = arr.individual_rate_cents
    equivalent = None if rate is None else _cents_between(live, first, last, lambda f: f.minutes * rate)

    # by group
    groups = sorted(set(arr.group_ids) | {f.group_id for f in inside})
    cost_by_group = {g: sum(f.cost_cent_minutes for f in inside if f.group_id == g) for g in groups}
    spent_by_group = _split(spent, cost_by_group)
    spans = capacity.holiday_spans(pot.calendar) if pot.calendar is not None else None
    by_group = []
    for g in groups:
        minutes = sum(f.minutes for f in inside if f.group_id == g)
        planned_minutes, planned_cm = capacity.planned(arr, pot.calendar, g, first, last, spans)
        by_group.append({
            "group_id": g, "minutes": minutes, "spent_cents": spent_by_group[g],
            "registrations": sum(1 for f in inside if f.group_id == g),
            "planned_minutes": round_half_up(planned_minutes), "planned_cents": round_half_up(planned_cm / 60),
            "delivery_ratio": _ratio(minutes, planned_minutes),
            "care_workers": len({f.care_worker for f in inside if f.group_id == g and f.care_worker}),
        })

    # by week (ISO weeks clipped to the period), minutes per group and spent by the running-total rule
    by_week = []
    gaps = []
    ratio = capacity.exact_ratio(arr.capacity_alert_ratio)
    for monday in _mondays(first, last):
        lo, hi = max(monday, first), min(monday + dt.timedelta(days=6), last)
        week_facts = [f for f in inside if lo <= f.date <= hi]
        per_group = {g: sum(f.minutes for f in week_facts if f.group_id == g) for g in groups}
        planned_week = {g: capacity.planned(arr, pot.calendar, g, lo, hi, spans)[0] for g in capacity.planned_groups(arr)}
        by_week.append({"week": iso_week(monday), "from": lo.isoformat(), "until": hi.isoformat(),
                        "minutes": sum(per_group.values()), "minutes_by_group": per_group,
                        "planned_minutes": round_half_up(sum(planned_week.values(), Fraction(0))),
                        "spent_cents": _cents_between(live, lo, hi, lambda f: f.cost_cent_minutes)})
        for g, planned_minutes in planned_week.items():
            if planned_minutes > 0 and per_group.get(g, 0) < ratio * planned_minutes:
                gaps.append({"group_id": g, "week": iso_week(monday), "planned_minutes": round_half_up(planned_minutes),
                             "delivered_minutes": per_group.get(g, 0)})

    def breakdown(key_of: Any, name: str) -> list[dict[str, Any]]:
        cost: dict[Any, int] = {}
        minutes: dict[Any, int] = {}
        for f in inside:
            k = key_of(f)
            cost[k] = cost.get(k, 0) + f.cost_cent_minutes
            minutes[k] = minutes.get(k, 0) + f.minutes
        cents = _split(spent, cost)
        return [{name: k, "minutes": minutes[k], "spent_cents": cents[k]} for k in sorted(cost)]

    # by budget year: each calendar year's part of the period
    by_year = []
    for year in range(first.year, last.year + 1):
        lo, hi = max(first, dt.date(year, 1, 1)), min(last, dt.date(year, 12, 31))
        year_spent = _cents_between(live, lo, hi, lambda f: f.cost_cent_minutes)
        planned_cm = sum((capacity.planned(arr, pot.calendar, g, lo, hi, spans)[1]
                          for g in capacity.planned_groups(arr)), Fraction(0))
        row: dict[str, Any] = {
            "year": year, "from": lo.isoformat(), "until": hi.isoformat(),
            "planned_cents": sum(i.amount_cents for i in arr.installments if lo <= i.due <= hi),
            "planned_capacity_cents": round_half_up(planned_cm / 60),
            "spent_cents": year_spent,
            "paid_cents": sum(p.amount_cents for p in pot.payments if lo <= p.date <= hi),
            "minutes": sum(f.minutes for f in inside if lo <= f.date <= hi),
        }
        if rate is not None:
            row["individual_equivalent_cents"] = _cents_between(live, lo, hi, lambda f: f.minutes * rate)
            row["savings_cents"] = row["individual_equivalent_cents"] - year_spent
        by_year.append(row)

    # pupils and residence
    days_of: dict[str, set[dt.date]] = {}
    non_resident_pupils: set[str] = set()
    attributed = 0
    non_resident = Fraction(0)
    for f in inside:
        if f.residences:
            attributed += f.minutes
            non_resident += Fraction(f.non_resident_minutes())
        if len(f.pupils) == len(f.residences):
            for ref, code in zip(f.pupils, f.residences):
                days_of.setdefault(ref, set()).add(f.date)
                if code != f.host_municipality:
                    non_resident_pupils.add(ref)
    minutes_total = sum(f.minutes for f in inside)
    return {
        "arrangement_id": pot.arrangement_id,
        "school_id": arr.school_id,
        "school_name": pot.school_name,
        "start": arr.start.isoformat(),
        "end": arr.end.isoformat(),
        "from": first.isoformat(),
        "until": last.isoformat(),
        "cap_cents": arr.cap_cents,
        "registrations": len(inside),
        "minutes": minutes_total,
        "spent_cents": spent,
        "planned_cents": sum(r["planned_cents"] for r in by_year),
        "planned_capacity_cents": sum(r["planned_capacity_cents"] for r in by_year),
        "paid_cents": sum(r["paid_cents"] for r in by_year),
        "individual_rate_cents": rate,
        "individual_equivalent_cents": equivalent,
        "savings_cents": None if equivalent is None else equivalent - spent,
        "pupils_reached": len(days_of),
        "pupils_3_or_more_days": sum(1 for days in days_of.values() if len(days) >= THREE_DAYS),
        "care_workers": len({f.care_worker for f in inside if f.care_worker}),
        "attributed_minutes": attributed,
        "non_resident_minutes": round_half_up(non_resident),
        "non_resident_share": _ratio(non_resident, attributed),
        "non_resident_pupils": len(non_resident_pupils),
        "non_resident_pupil_share": _ratio(len(non_resident_pupils), len(days_of)),
        "by_group": by_group,
        "by_week": by_week,
        "by_task_category": breakdown(lambda f: f.task_category, "task_category"),
        "by_funding": breakdown(lambda f: f.funding_key, "funding"),
        "by_budget_year": by_year,
        "capacity_alert_ratio": arr.capacity_alert_ratio,
        "capacity_gaps": gaps,
    }


def report_document(report_id: str, request: ReportRequest, pots: Sequence[PotInput], today: dt.date
                    ) -> dict[str, Any]:
    """The report, JSON-able, plain cents and minutes (renderers format euros and hours)."""
    by_id = {p.arrangement_id: p for p in pots}
    sections = [arrangement_report(by_id[a], request.period_start, request.period_end)
                for a in request.arrangement_ids]
    pupils = {(p.arrangement.school_id, ref) for p in pots for f in p.facts
              if request.period_start <= f.date <= request.period_end for ref in f.pupils}

    def total(name: str) -> int | None:
        values = [s[name] for s in sections if s[name] is not None]
        return sum(values) if values else None

    return {
        "document": DOCUMENT,
        "report_id": report_id,
        **request.key(),
        "period": period_label(request.kind, request.period_start, request.period_end),
        "issued_on": today.isoformat(),
        "totals": {
            "registrations": total("registrations"), "minutes": total("minutes"),
            "spent_cents": total("spent_cents"), "planned_cents": total("planned_cents"),
            "planned_capacity_cents": total("planned_capacity_cents"), "paid_cents": total("paid_cents"),
            "cap_cents": total("cap_cents"),
            "individual_equivalent_cents": total("individual_equivalent_cents"),
            "savings_cents": total("savings_cents"),
            # a pupil's pseudonym is unique within its school
            "pupils_reached": len(pupils),
        },
        "arrangements": sections,
    }

