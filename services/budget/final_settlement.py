"""The final settlement of a pot (afrekening op basis van ingezette uren, design.md section 10): pure.

Venray pays the school board in installments and, once the arrangement has ended, settles on the care actually
delivered: the delivered cost, capped at the pot's cap, minus what was paid. This module computes that document
from the pot book (delivered cost per calendar month), the payments recorded and the arrangement; the budget
service stores it, immutable, and renders it (services/budget/render.py). No I/O, no clock: `today` is passed.

    check_may_issue(arrangement, today)                 # TooEarly before the end date has passed
    decision = decide(existing_versions, supersedes)    # repeat an issued one, or issue version n+1
    doc = final_settlement_document(arrangement_id, arrangement, book, payments, today, version=...)

Figures (integer cents, each rounded once, half-up, from the exact cent-minutes):

* `delivered_cents`: the cost of the accepted, non-voided care booked on the pot (the pot's `spent_cents`).
* `capped_cents`: `min(delivered, cap)`; `over_cap_cents` = delivered - capped (not payable).
* `paid_cents`: the sum of the payments recorded; `balance_cents` = capped - paid (positive: still to pay to
  the school; negative: the school refunds).
* `by_budget_year`: per calendar year, delivered as the rounded running total at the year's end minus that at
  the previous year's end (the rule of the pot's `by_budget_year`), so the years add up to `delivered_cents`.
  **The cap per year** caps the running total in date order: capped running total = min(running total, cap),
  and each year's capped figure is the difference of the capped running totals. Years up to the cap count in
  full, the year in which the running total crosses the cap is cut to what was left under it, later years
  count 0; the capped years add up exactly to `capped_cents`. A year's balance is its capped minus the
  payments dated in it, so the years add up to `balance_cents` too.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from services.budget.domain import Payment, PotBook, _rounded_per_period
from shared.money import CENT_MINUTES_PER_CENT
from shared.schemas import Arrangement

DOCUMENT_KIND = "final_settlement"


class FinalSettlementError(ValueError):
    """A final settlement that may not be issued as asked; the message says why."""


class TooEarly(FinalSettlementError):
    """The arrangement's end date has not passed yet (409)."""


class NotLatest(FinalSettlementError):
    """`supersedes` names an issued version that is no longer the latest (409)."""


class UnknownSupersedes(FinalSettlementError):
    """`supersedes` names no final settlement of this arrangement (422, field `supersedes`)."""


def final_settlement_id(arrangement_id: str, version: int) -> str:
    """Deterministic: `fs:<arrangement_id>:<version>` (the event id derives from it)."""
    return f"fs:{arrangement_id}:{version}"


def check_may_issue(arrangement: Arrangement, today: dt.date) -> None:
    """A final settlement is made once the arrangement is over: its end date must lie before today."""
    if not arrangement.end < today:
        raise TooEarly(f"the arrangement ends on {arrangement.end.isoformat()}; a final settlement can be issued "
                       f"from {(arrangement.end + dt.timedelta(days=1)).isoformat()} (today is {today.isoformat()})")


@dataclass(frozen=True)
class Decision:
    """What a POST .../final-settlement does: answer with an issued document (`existing`, HTTP 200) or issue
    version `version` superseding `supersedes` (HTTP 201)."""

    existing: Mapping[str, Any] | None = None
    version: int = 1
    supersedes: str | None = None


def decide(issued: Sequence[Mapping[str, Any]], supersedes: str | None) -> Decision:
    """Idempotency and versions. `issued`: this arrangement's documents (any order).

    * no `supersedes`: the latest issued document again (a repeat; later facts do not change it), or version 1
      when none was issued;
    * `supersedes` = the latest version: issue the next version, computed from the facts now;
    * `supersedes` = a version whose successor is the latest: that successor (the same request repeated);
    * `supersedes` = an older version: NotLatest; an id that is not one of this arrangement's: UnknownSupersedes.
    """
    versions = sorted(issued, key=lambda d: d["version"])
    latest = versions[-1] if versions else None
    if supersedes is None:
        return Decision(existing=latest) if latest is not None else Decision()
    by_id = {d["final_settlement_id"]: d for d in versions}
    if supersedes not in by_id:
        raise UnknownSupersedes(f"supersedes: {supersedes!r} is not a final settlement of this arrangement")
    assert latest is not None
    if supersedes == latest["final_settlement_id"]:
        return Decision(version=latest["version"] + 1, supersedes=supersedes)
    if latest.get("supersedes") == supersedes:
        return Decision(existing=latest)  # this very correction was issued before: the same answer
    raise NotLatest(f"supersedes: {supersedes!r} is not the latest version; the latest is "
                    f"{latest['final_settlement_id']!r} (version {latest['version']})")


def capped_running(delivered_by_year: Mapping[int, int], cap_cents: int) -> dict[int, int]:
    """Each year's share of min(delivered, cap), capping the running total in year order (module doc)."""
    out: dict[int, int] = {}
    running = capped_before = 0
    for year in sorted(delivered_by_year):
        running += delivered_by_year[year]
        capped = min(running, cap_cents)
        out[year] = capped - capped_before
        capped_before = capped
    return out


def final_settlement_document(arrangement_id: str, arrangement: Arrangement, book: PotBook,
                              payments: Sequence[Payment], today: dt.date, *, version: int = 1,
                              supersedes: str | None = None, school_name: str | None = None) -> dict[str, Any]:
    """The document for the payee (the school), JSON-able, plain cents (renderers format euros).

    Every calendar year the arrangement touches has a row, plus any year a booking or payment falls in."""
    years = set(range(arrangement.start.year, arrangement.end.year + 1))
    years.update(int(month[:4]) for month in book.spent_cent_minutes_by_month)
    years.update(p.date.year for p in payments)
    delivered = _rounded_per_period(book.spent_cent_minutes_by_month, lambda m: int(m[:4]), sorted(years),
                                    CENT_MINUTES_PER_CENT)
    capped = capped_running(delivered, arrangement.cap_cents)
    minutes: dict[int, int] = {}
    for month, value in book.minutes_by_month.items():
        minutes[int(month[:4])] = minutes.get(int(month[:4]), 0) + value
    paid: dict[int, int] = {}
    for p in payments:
        paid[p.date.year] = paid.get(p.date.year, 0) + p.amount_cents
    by_year = [{"year": year, "minutes": minutes.get(year, 0), "delivered_cents": delivered[year],
                "capped_cents": capped[year], "paid_cents": paid.get(year, 0),
                "balance_cents": capped[year] - paid.get(year, 0)} for year in sorted(delivered)]
    delivered_total = sum(delivered.values())  # = the pot's spent_cents (rounded once from the exact total)
    capped_total = sum(capped.values())  # = min(delivered_total, cap)
    paid_total = sum(p.amount_cents for p in payments)
    return {
        "kind": DOCUMENT_KIND,
        "final_settlement_id": final_settlement_id(arrangement_id, version),
        "arrangement_id": arrangement_id,
        "version": version,
        "supersedes": supersedes,
        "issued_on": today.isoformat(),
        "school_id": arrangement.school_id,
        "school_name": school_name,
        "start": arrangement.start.isoformat(),
        "end": arrangement.end.isoformat(),
        "cap_cents": arrangement.cap_cents,
        "minutes": book.minutes,
        "registrations": book.registrations,
        "delivered_cent_minutes": book.spent_cent_minutes,
        "delivered_cents": delivered_total,
        "capped_cents": capped_total,
        "over_cap_cents": delivered_total - capped_total,
        "paid_cents": paid_total,
        "payments": [{"payment_id": p.payment_id, "date": p.date.isoformat(), "amount_cents": p.amount_cents}
                     for p in sorted(payments, key=lambda p: (p.date, p.payment_id))],
        "balance_cents": capped_total - paid_total,
        "by_budget_year": by_year,
    }

