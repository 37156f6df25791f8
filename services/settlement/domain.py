"""Settlement domain: closing a period of an arrangement into one statement per municipality.

Pure and I/O-free (design.md section 5; docs/settlement.md explains the rules with numbers). The
settlement service feeds in what it knows (accepted registrations, voids, reference data, the closes it
already issued) and persists what comes out (the statements and the new `Close` record).

The exactness rule is kept by *cumulative rounding*. Let C_k be the exact cost (cent-minutes) of every
accepted, non-voided registration dated on or before the end of close k, as known at close k, and
R = round half-up to the cent. Close k charges

    (R(C_k) - applied_k) - (R(C_{k-1}) - applied_{k-1}),   applied_k = min(E, R(C_k)),

where E is the education contribution. Summed over closes this telescopes to R(C_last) - applied_last:
the sum of everything ever issued is the rounded total cost minus the contribution, to the cent, however
many periods, late registrations and late voids there were. Rounding residue is never lost; it is carried
into the next close.

Within a close every contribution to a statement is first computed exactly (`Fraction` cents): care of
the period, care absorbed for a non-participating municipality, corrections for earlier periods and the
education contribution. The close's integer total is then split over municipalities, and each
municipality's integer total over its lines, with the largest-remainder method on those exact amounts
(`split_exact`), ties to the lowest municipality code. So lines sum to their statement and statements
sum to the close's total, exactly.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Hashable, Iterable, Mapping, NamedTuple, Sequence, TypeVar

from services.settlement.keys import SPLITS
from services.settlement.routing import (ONE_DAY, ArrangementContext, Bucket, PeriodBasis,
                                         SettlementError, participates, participating_days, residences_of,
                                         routing_day_of, routing_days)
from services.settlement.describe import describe_line
from shared.events import CareLogged
from shared.i18n import translator
from shared.money import CENT_MINUTES_PER_CENT, cent_minutes_to_cents, round_half_up
from shared.schemas import Arrangement, SettlementPolicy
from shared.settlement_keys import KEYS
from shared.statements import STATEMENT_SCHEMA_VERSION, issue


K = TypeVar("K", bound=Hashable)


# --- errors (SettlementError: services/settlement/routing.py) ---------------------------------------

class PeriodConflictError(SettlementError):
    """The period overlaps a closed period, or lies before the last one (HTTP 409)."""


class PeriodAlreadyClosedError(SettlementError):
    """Exactly this period was closed before: the caller returns the statements it issued then (HTTP 200)."""

    def __init__(self, close: "Close") -> None:
        super().__init__(
            f"period {close.period_start.isoformat()}..{close.period_end.isoformat()} of arrangement "
            f"{close.arrangement_id} is already closed (close {close.sequence})"
        )
        self.close = close


# --- inputs ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CareLine:
    """One accepted registration as the settlement service knows it.

    `known_since_close` is how many closes of the arrangement had already been made when the service
    learned of the registration; `voided_since_close` the same for its void. A registration learned after
    the close of its date's period is therefore settled as a correction on the next close.
    """

    registration_id: str
    date: dt.date
    cost_cent_minutes: int
    minutes: int
    # (pupil_ref, residence municipality on `date`), resolved by the hours service when it accepted it.
    attributions: tuple[tuple[str, str], ...]
    attributed_to: str  # "listed" or "enrolled"
    voided: bool = False
    known_since_close: int = 0
    voided_since_close: int | None = None
    # The framework funder its funding law routes it to (settlement.frameworks); None: the municipalities.
    funder: str | None = None

    def __post_init__(self) -> None:
        if not self.attributions:
            raise ValueError(f"registration {self.registration_id}: no pupil attribution, nobody to charge")
        if self.cost_cent_minutes < 0 or self.minutes < 0:
            raise ValueError(f"registration {self.registration_id}: cost and minutes must not be negative")
        if self.known_since_close < 0:
            raise ValueError(f"registration {self.registration_id}: known_since_close must be >= 0")
        if self.voided != (self.voided_since_close is not None):
            raise ValueError(f"registration {self.registration_id}: voided and voided_since_close go together")
        if self.voided_since_close is not None and self.voided_since_close < self.known_since_close:
            raise ValueError(f"registration {self.registration_id}: void known before the registration itself")

    @classmethod
    def from_event(cls, event: CareLogged, known_since_close: int) -> "CareLine":
        return cls(
            registration_id=event.registration_id,
            date=event.date,
            cost_cent_minutes=event.cost_cent_minutes,
            minutes=event.minutes,
            attributions=tuple((a.pupil_ref, a.municipality) for a in event.attributions),
            attributed_to=event.attributed_to,
            known_since_close=known_since_close,
            funder=event.funder,
        )

    def voided_at(self, closes_made: int) -> "CareLine":
        """This line after a void learned when `closes_made` closes had been made (idempotent)."""
        if self.voided:
            return self
        return dataclasses.replace(self, voided=True, voided_since_close=closes_made)


@dataclass(frozen=True, order=True)
class NewCare:
    """New care (not a correction) summed over every registration that settles the same way.

    A registration's cost is split equally over its attributed pupils, each part to the pupil's residence
    on the care date. Registrations with the same residences (one per pupil, sorted) and the same routing
    day (participation, hence routing, is the same on every day that maps to it: `routing_days`) settle
    identically, so only their integer sums matter: sum(cost_i / (60 p)) == sum(cost_i) / (60 p), exact.
    """

    routing_day: dt.date
    residences: tuple[str, ...]  # one per attributed pupil, sorted; a residence twice for two pupils there
    cost_cent_minutes: int
    minutes: int


@dataclass(frozen=True)
class CareSummary:
    """Everything a close needs of an arrangement's care lines, summed where summing loses nothing.

    `summarise_care` derives it from the lines (the reference, used by the tests and small callers); the
    settlement service asks its database for the same sums (services/settlement/queries.py), so a close at
    region scale never walks a million registrations in Python. The two are tested to agree.
    """

    # The cumulative cost the lines give for the previous close (it must equal what that close settled).
    reproduced_cost_cent_minutes: int
    # Registrations dated after the previous close's end (every date when there is none) up to this
    # period's end, not voided: this close's own care.
    new_cost_cent_minutes: int
    new_rates: frozenset[int]  # hourly rates (cent-minutes per minute) of that care, where exact
    new_care: tuple[NewCare, ...]  # that care per (routing day, residences), sorted
    # Registrations dated in an already closed period whose status changed since it was closed (learned
    # late, or voided late): settled one by one as correction lines, oldest date first.
    corrections: tuple["CareLine", ...]
    # The highest close count any line claims to be learned or voided after (sanity check).
    latest_close_seen: int = 0
    # This close's own care that a framework routes to a funder (not in the sums above, which are the
    # municipalities' care): one line per registration, since such statements list every registration.
    framework_care: tuple["CareLine", ...] = ()


@dataclass(frozen=True)
class Close:
    """An issued close: what the next closes need to continue the cumulative rounding and corrections."""

    arrangement_id: str
    sequence: int  # 1 for the first close of the arrangement
    period_start: dt.date
    period_end: dt.date
    issued_on: dt.date
    key: str
    non_participating_policy: str
    host_municipality: str
    cumulative_cost_cent_minutes: int  # C_k: exact cost settled up to and including this close
    cumulative_rounded_cost_cents: int  # R(C_k)
    education_applied_cents: int  # cumulative contribution deducted so far: min(E, R(C_k))
    cumulative_charged_cents: int  # R(C_k) - applied: the sum of all statements issued up to this close
    charged_cents: int  # this close's total over all its statements
    # Period keys only: the split weights used, so a late correction for this period is split the same way.
    weights: tuple[tuple[Bucket, Fraction], ...] = ()
    statement_totals: tuple[tuple[str, int], ...] = ()  # (funder: municipality code or funder id, total_cents)
    # M_k: what the municipalities' part comes to (care not routed to a framework funder; for a norm key
    # the norm cost, exact, possibly fractional); the education contribution and the contributions apply to
    # R(M_k). None in closes made before frameworks existed, where all care was municipal: M_k = C_k.
    cumulative_municipal_cost_cent_minutes: Fraction | int | None = None
    # Cumulative amount each contribution paid so far, keyed "position:funder" (first statements first).
    contributions_applied: tuple[tuple[str, int], ...] = ()
    # T_k: the exact cost settled so far, what R() applies to: C_k, except for a norm key, whose
    # municipalities are charged the norm instead of their care (framework care + norm). None: C_k.
    cumulative_settled_cent_minutes: Fraction | int | None = None

    @property
    def municipal_cost_cent_minutes(self) -> Fraction | int:
        if self.cumulative_municipal_cost_cent_minutes is None:
            return self.cumulative_cost_cent_minutes
        return self.cumulative_municipal_cost_cent_minutes

    @property
    def settled_cent_minutes(self) -> Fraction | int:
        if self.cumulative_settled_cent_minutes is None:
            return self.cumulative_cost_cent_minutes
        return self.cumulative_settled_cent_minutes

    def weight_map(self) -> dict[Bucket, Fraction]:
        return dict(self.weights)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arrangement_id": self.arrangement_id,
            "sequence": self.sequence,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "issued_on": self.issued_on.isoformat(),
            "key": self.key,
            "non_participating_policy": self.non_participating_policy,
            "host_municipality": self.host_municipality,
            "cumulative_cost_cent_minutes": self.cumulative_cost_cent_minutes,
            "cumulative_rounded_cost_cents": self.cumulative_rounded_cost_cents,
            "education_applied_cents": self.education_applied_cents,
            "cumulative_charged_cents": self.cumulative_charged_cents,
            "charged_cents": self.charged_cents,
            "weights": [
                {"municipality": b.municipality, "absorbed_from": b.absorbed_from,
                 "non_participating": b.non_participating, "weight": str(w)}
                for b, w in self.weights
            ],
            "statement_totals": [{"municipality": m, "total_cents": t} for m, t in self.statement_totals],
            "cumulative_municipal_cost_cent_minutes": str(self.municipal_cost_cent_minutes),
            "contributions_applied": [{"contribution": k, "applied_cents": v} for k, v in self.contributions_applied],
            "cumulative_settled_cent_minutes": str(self.settled_cent_minutes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Close":
        return cls(
            arrangement_id=data["arrangement_id"],
            sequence=int(data["sequence"]),
            period_start=dt.date.fromisoformat(data["period_start"]),
            period_end=dt.date.fromisoformat(data["period_end"]),
            issued_on=dt.date.fromisoformat(data["issued_on"]),
            key=data["key"],
            non_participating_policy=data["non_participating_policy"],
            host_municipality=data["host_municipality"],
            cumulative_cost_cent_minutes=int(data["cumulative_cost_cent_minutes"]),
            cumulative_rounded_cost_cents=int(data["cumulative_rounded_cost_cents"]),
            education_applied_cents=int(data["education_applied_cents"]),
            cumulative_charged_cents=int(data["cumulative_charged_cents"]),
            charged_cents=int(data["charged_cents"]),
            weights=tuple(
                (Bucket(w["municipality"], w["absorbed_from"], bool(w["non_participating"])), Fraction(w["weight"]))
                for w in data.get("weights", [])
            ),
            statement_totals=tuple((s["municipality"], int(s["total_cents"])) for s in data.get("statement_totals", [])),
            cumulative_municipal_cost_cent_minutes=_exact_or_none(data.get("cumulative_municipal_cost_cent_minutes")),
            cumulative_settled_cent_minutes=_exact_or_none(data.get("cumulative_settled_cent_minutes")),
            contributions_applied=tuple((c["contribution"], int(c["applied_cents"]))
                                        for c in data.get("contributions_applied", [])),
        )


def _exact_or_none(value: Any) -> Fraction | int | None:
    """A stored exact amount: an integer, or a fraction written as "p/q" (norm costs)."""
    if value is None:
        return None
    exact = Fraction(str(value))
    return exact.numerator if exact.denominator == 1 else exact


@dataclass(frozen=True)
class CloseResult:
    statements: list[dict[str, Any]]  # one per municipality, code ascending, JSON-ready
    close: Close


# --- splitting -------------------------------------------------------------------------------------

def _floor(value: Fraction) -> int:
    return value.numerator // value.denominator


def split_exact(total: int, exact_parts: Mapping[K, Fraction | int]) -> dict[K, int]:
    """Split the integer `total` over parts whose exact (possibly negative) amounts are given.

    Largest-remainder method on the exact amounts: each part gets the floor of its exact amount, the
    cents left over go one each to the largest fractional remainders, ties to the lowest key. When `total`
    equals the exact sum this is exactly `shared.money.largest_remainder(total, exact_parts)`; unlike that
    function the parts may be negative, which a close needs when it charges one municipality and credits
    another (a late void). Cumulative rounding keeps `total` within one cent of the exact sum, so every
    part ends up at the floor or the ceiling of its exact amount.
    """
    exact = {key: Fraction(value) for key, value in exact_parts.items()}
    if not exact:
        if total != 0:
            raise SettlementError(f"cannot split {total} cents over nothing")
        return {}
    parts = {key: _floor(value) for key, value in exact.items()}
    left = total - sum(parts.values())
    order = sorted(exact, key=lambda key: (-(exact[key] - parts[key]), key))
    # Outside the guaranteed range only if a caller passes a total far from the exact sum; still sum-exact.
    for i in range(abs(left)):
        if left > 0:
            parts[order[i % len(order)]] += 1
        else:
            parts[order[len(order) - 1 - i % len(order)]] -= 1
    return parts


# --- validation ------------------------------------------------------------------------------------

def find_identical_close(history: Sequence[Close], period_start: dt.date, period_end: dt.date) -> Close | None:
    """The close of exactly this period, if it was made: closing it again returns the same statements."""
    for close in history:
        if close.period_start == period_start and close.period_end == period_end:
            return close
    return None


def _period_problems(arrangement: Arrangement, history: Sequence[Close],
                     period_start: dt.date, period_end: dt.date) -> tuple[list[str], list[str]]:
    """(problems with the period itself, conflicts with closed periods)."""
    invalid: list[str] = []
    conflicts: list[str] = []
    if period_end < period_start:
        invalid.append(f"period_end {period_end.isoformat()} is before period_start {period_start.isoformat()}")
        return invalid, conflicts
    span = f"({arrangement.start.isoformat()}..{arrangement.end.isoformat()})"
    if period_start < arrangement.start:
        invalid.append(f"period {period_start.isoformat()}..{period_end.isoformat()} starts before the "
                       f"arrangement {span}")
    elif period_start <= arrangement.end < period_end:
        invalid.append(f"period {period_start.isoformat()}..{period_end.isoformat()} runs past the end of the "
                       f"arrangement {span}; close up to {arrangement.end.isoformat()}, later facts go in a "
                       f"correction period after it")
    elif arrangement.end < period_start and (not history or history[-1].period_end < arrangement.end):
        invalid.append(f"period {period_start.isoformat()}..{period_end.isoformat()} lies outside the arrangement "
                       f"{span}; a period after its end holds corrections only and needs the arrangement "
                       f"closed up to {arrangement.end.isoformat()} first")
    for close in history:
        if period_start <= close.period_end and close.period_start <= period_end:
            conflicts.append(
                f"period overlaps closed period {close.period_start.isoformat()}..{close.period_end.isoformat()}"
            )
    if history and not conflicts and period_start <= history[-1].period_end:
        conflicts.append(
            f"period must start after the last closed period, which ended {history[-1].period_end.isoformat()}"
        )
    return invalid, conflicts


def period_problems(arrangement: Arrangement, history: Sequence[Close],
                    period_start: dt.date, period_end: dt.date) -> list[str]:
    """Why [period_start, period_end] cannot be closed as a new period ([] when it can).

    Periods need not be contiguous, but they must not overlap and each must start after the last closed
    period ended: statements are issued in date order, so a late fact can only land on a later close.
    A period lies within the arrangement; once the arrangement is closed up to its last day, a period
    after its end may be closed to settle late registrations and voids (a correction period).
    """
    invalid, conflicts = _period_problems(arrangement, history, period_start, period_end)
    return invalid + conflicts


def refuse_unfinished(period_end: dt.date, issued_on: dt.date) -> None:
    """A period is closed once it has ended: care for its last days can still be registered, and a statement
    must not claim to cover it (SettlementError, HTTP 422)."""
    if period_end > issued_on:
        raise SettlementError(f"period_end {period_end.isoformat()} is after today ({issued_on.isoformat()}): "
                              "a period can be closed once it has ended")


def check_period(arrangement: Arrangement, history: Sequence[Close],
                 period_start: dt.date, period_end: dt.date) -> None:
    """Raise `PeriodAlreadyClosedError`, `SettlementError` or `PeriodConflictError` for a bad period."""
    identical = find_identical_close(history, period_start, period_end)
    if identical is not None:
        raise PeriodAlreadyClosedError(identical)
    invalid, conflicts = _period_problems(arrangement, history, period_start, period_end)
    if invalid:
        raise SettlementError("; ".join(invalid + conflicts))
    if conflicts:
        raise PeriodConflictError("; ".join(conflicts))


def _check_history(arrangement_id: str, history: Sequence[Close]) -> None:
    for index, close in enumerate(history, start=1):
        if close.sequence != index or close.arrangement_id != arrangement_id:
            raise SettlementError(f"close history of {arrangement_id} is out of order at close {index}")
        if index > 1 and close.period_start <= history[index - 2].period_end:
            raise SettlementError(f"close history of {arrangement_id} has overlapping periods at close {index}")


def _check_lines(lines: Sequence[CareLine], closes_made: int) -> None:
    seen: set[str] = set()
    for line in lines:
        if line.registration_id in seen:
            raise SettlementError(f"registration {line.registration_id} is given twice")
        seen.add(line.registration_id)
        if line.known_since_close > closes_made or (line.voided_since_close or 0) > closes_made:
            raise SettlementError(
                f"registration {line.registration_id} claims to be learned after close {closes_made}, "
                f"but only {closes_made} closes exist"
            )


# --- which cost a close covers ---------------------------------------------------------------------

def included_in_close(line: CareLine, close_sequence: int, period_end: dt.date) -> bool:
    """Whether close number `close_sequence` (ending `period_end`) counted this registration's cost."""
    known = line.known_since_close < close_sequence
    voided = line.voided and line.voided_since_close is not None and line.voided_since_close < close_sequence
    return line.date <= period_end and known and not voided


def cumulative_cost_cent_minutes(lines: Iterable[CareLine], close_sequence: int, period_end: dt.date) -> int:
    """C_k: exact cost counted by close `close_sequence`, every period up to `period_end` together."""
    return sum(line.cost_cent_minutes for line in lines if included_in_close(line, close_sequence, period_end))


def education_applied_cents(contribution_cents: int, rounded_cost_cents: int) -> int:
    """Contribution deducted cumulatively: first statements first, never more than the cost so far."""
    return max(0, min(contribution_cents, rounded_cost_cents))


def waterfall(policy: SettlementPolicy, municipal_rounded_cents: int) -> tuple[int, tuple[tuple[str, int], ...]]:
    """Who pays the municipal cost so far before the municipalities do, cumulatively (design.md section 9).

    The education contribution first (no statement of its own), then each of `contributions` in order, each
    never more than is left: `(education applied, (("position:funder", applied), ...))`. Closes take the
    differences, so every contribution is used up by the first statements first.
    """
    education = education_applied_cents(policy.education_contribution_cents, municipal_rounded_cents)
    left = municipal_rounded_cents - education
    applied = []
    for position, contribution in enumerate(policy.contributions or ()):
        amount = max(0, min(contribution.amount_cents, left))
        left -= amount
        applied.append((f"{position}:{contribution.funder}", amount))
    return education, tuple(applied)


def net_cost_cents(arrangement: Arrangement, lines: Iterable[CareLine]) -> int:
    """What all statements of all funders together must come to once every registration known now is settled:
    the rounded cost minus the education contribution applied to the municipal part (contributions are paid
    by their funders, on statements)."""
    live = [line for line in lines if not line.voided]
    rounded = cent_minutes_to_cents(sum(line.cost_cent_minutes for line in live))
    municipal = cent_minutes_to_cents(sum(line.cost_cent_minutes for line in live if line.funder is None))
    return rounded - education_applied_cents(arrangement.settlement.education_contribution_cents, municipal)


def settled_by_lines_cents(arrangement: Arrangement | None, lines: Sequence[CareLine],
                           history: Sequence[Close]) -> int:
    """What the closes so far settled, as the care lines reproduce it (without reading any statement)."""
    if not history:
        return 0
    last = history[-1]
    counted = [line for line in lines if included_in_close(line, last.sequence, last.period_end)]
    total = cent_minutes_to_cents(sum(line.cost_cent_minutes for line in counted))
    municipal = cent_minutes_to_cents(sum(line.cost_cent_minutes for line in counted if line.funder is None))
    contribution = arrangement.settlement.education_contribution_cents if arrangement is not None else 0
    return total - education_applied_cents(contribution, municipal)


def invariant_figures(arrangement: Arrangement | None, lines: Sequence[CareLine], history: Sequence[Close]
                      ) -> tuple[int, int]:
    """(what the closes settled as the care lines reproduce it, what all statements come to once every
    registration known now is settled). A key that charges a norm per pupil-day settles from the roster, not
    from registrations: both figures are then what its closes settled (the lines still have to reproduce each
    close's care, `invariant_problems`)."""
    if arrangement is not None and KEYS[arrangement.settlement.key].charges == "norm":
        return settled_cents(history), settled_cents(history)
    if arrangement is None:
        return settled_by_lines_cents(None, lines, history), \
            cent_minutes_to_cents(sum(line.cost_cent_minutes for line in lines if not line.voided))
    return settled_by_lines_cents(arrangement, lines, history), net_cost_cents(arrangement, lines)


def settled_cents(history: Sequence[Close]) -> int:
    """The sum of all statements issued so far (by the exactness rule)."""
    return history[-1].cumulative_charged_cents if history else 0


def unsettled_cents(arrangement: Arrangement, lines: Iterable[CareLine], history: Sequence[Close]) -> int:
    """Cost not yet covered by any close: later periods, late registrations and voids not yet corrected.

    Invariant for the checker: settled_cents(history) + unsettled_cents(...) == net_cost_cents(...), and the
    statements in storage sum to settled_cents(history).
    """
    return net_cost_cents(arrangement, lines) - settled_cents(history)


def invariant_problems(context: ArrangementContext, lines: Sequence[CareLine], history: Sequence[Close],
                       issued_statements_sum_cents: int) -> list[str]:
    """Check stored statements against the exactness rule ([] when everything adds up)."""
    problems: list[str] = []
    if issued_statements_sum_cents != settled_cents(history):
        problems.append(
            f"statements of {context.arrangement_id} sum to {issued_statements_sum_cents} cents, "
            f"the closes settled {settled_cents(history)}"
        )
    if history:
        last = history[-1]
        recomputed = cumulative_cost_cent_minutes(lines, last.sequence, last.period_end)
        if recomputed != last.cumulative_cost_cent_minutes:
            problems.append(
                f"close {last.sequence} of {context.arrangement_id} settled {last.cumulative_cost_cent_minutes} "
                f"cent-minutes, the registrations give {recomputed}"
            )
    return problems


def exact_rate(cost_cent_minutes: int, minutes: int) -> int | None:
    """The hourly rate behind a registration's cost (cent-minutes per minute), when it divides exactly."""
    if minutes and cost_cent_minutes % minutes == 0:
        return cost_cent_minutes // minutes
    return None


def summarise_care(context: ArrangementContext, lines: Iterable[CareLine], history: Sequence[Close],
                   period_end: dt.date) -> CareSummary:
    """The reference `CareSummary` of `lines` for closing the next period (ending `period_end`).

    A line is this close's own care when it is dated after the previous close's end and counts in this
    close; a correction when it is dated in a closed period and counted differently by the previous close
    than by this one (`included_in_close`).
    """
    known_lines = list(lines)
    closes_made = len(history)
    _check_lines(known_lines, closes_made)
    sequence = closes_made + 1
    previous = history[-1] if history else None
    reproduced = cumulative_cost_cent_minutes(known_lines, previous.sequence, previous.period_end) \
        if previous is not None else 0
    days = routing_days(context.municipalities, previous.period_end if previous else None, period_end)
    groups: dict[tuple[dt.date, tuple[str, ...]], list[int]] = defaultdict(lambda: [0, 0])
    new_cost = 0
    rates: set[int] = set()
    corrections = []
    framework_care = []
    for line in sorted(known_lines, key=lambda item: (item.date, item.registration_id)):
        in_previous = previous is not None and included_in_close(line, previous.sequence, previous.period_end)
        if int(included_in_close(line, sequence, period_end)) == int(in_previous):
            continue
        if previous is None or line.date > previous.period_end:
            rate = exact_rate(line.cost_cent_minutes, line.minutes)
            if rate is not None:
                rates.add(rate)
            if line.funder is not None:
                framework_care.append(line)
                continue
            new_cost += line.cost_cent_minutes
            group = groups[(routing_day_of(line.date, days), residences_of(line.attributions))]
            group[0] += line.cost_cent_minutes
            group[1] += line.minutes
        else:
            corrections.append(line)
    return CareSummary(
        reproduced_cost_cent_minutes=reproduced,
        new_cost_cent_minutes=new_cost,
        new_rates=frozenset(rates),
        new_care=tuple(NewCare(day, residences, cost, minutes)
                       for (day, residences), (cost, minutes) in sorted(groups.items())),
        corrections=tuple(corrections),
        latest_close_seen=max((max(line.known_since_close, line.voided_since_close or 0) for line in known_lines),
                              default=0),
        framework_care=tuple(framework_care),
    )


def period_basis(context: ArrangementContext, period_start: dt.date, period_end: dt.date) -> PeriodBasis:
    """The split basis of a period key for [period_start, period_end] (services/settlement/keys.py)."""
    return SPLITS[context.arrangement.settlement.key].period_basis(context, period_start, period_end)


# --- assembling a close ----------------------------------------------------------------------------

class LineKey(NamedTuple):
    """Identity of one statement line; its order is the order lines are listed and ties are broken."""

    order: int  # 0 care, 1 absorbed, 2 correction, 3 education contribution, 4 a contribution
    absorbed_from: str = ""
    non_participating: bool = False
    original_period_start: str = ""
    registration_id: str = ""  # corrections; and framework care, listed per registration
    contribution: str = ""  # "position:funder" of a contribution line


_KIND_OF_ORDER = {0: "care", 1: "absorbed", 2: "correction", 3: "education_contribution", 4: "contribution"}


@dataclass
class _Line:
    """A statement line while it is being built: exact amount, before rounding."""

    exact_cents: Fraction = Fraction(0)
    basis_unit: str = ""
    basis_value: Fraction = Fraction(0)
    original_period: tuple[dt.date, dt.date] | None = None
    registration_date: dt.date | None = None
    late_void: bool = False
    pupils: tuple[str, ...] = ()  # framework care: the registration's pupils (Wlz accounts per client)


def _decimal(value: Fraction, places: int = 2) -> str:
    """Exact value shown with at most `places` decimals, rounded half-up; integers without decimals."""
    if value.denominator == 1:
        return str(value.numerator)
    scaled = round_half_up(value * 10**places)
    sign = "-" if scaled < 0 else ""
    whole, rest = divmod(abs(scaled), 10**places)
    return f"{sign}{whole}.{rest:0{places}d}"


def _covering_close(history: Sequence[Close], day: dt.date) -> Close:
    """The close that settled `day`: the first whose period ended on or after it."""
    for close in history:
        if day <= close.period_end:
            return close
    raise SettlementError(f"no closed period covers {day.isoformat()}")  # callers only ask for covered days


class _CloseBuilder:
    def __init__(self, context: ArrangementContext) -> None:
        self.context = context
        self.lines: dict[str, dict[LineKey, _Line]] = defaultdict(dict)
        self.rates: set[int] = set()
        # Residence view of this close's care (who the care was for), whatever the routing.
        self.resident_minutes: dict[str, Fraction] = defaultdict(Fraction)
        self.resident_cost: dict[str, Fraction] = defaultdict(Fraction)
        self.resident_participated: dict[str, bool] = {}
        self.care_cost_cent_minutes = 0
        self.correction_cost_cent_minutes = 0
        # New care is summed as integers per (statement line, pupil count) and per (residence, pupil count),
        # and turned into Fractions once in `settle_pending`. Exact: sum(a_i / (60 p)) == (sum a_i) / (60 p).
        self._pending_lines: dict[tuple[str, LineKey, int], list[int]] = {}
        self._pending_residents: dict[tuple[str, int], list[int]] = {}
        self._routes: dict[tuple[str, dt.date], tuple[Bucket, bool]] = {}  # one close: one key and policy
        # Parties other than municipalities with lines on this close (framework and contribution funders).
        self.funder_parties: set[str] = set()
        self.framework_cost_cent_minutes = 0  # this close's framework care, corrections included

    def add(self, municipality: str, key: LineKey, exact_cents: Fraction, basis_unit: str,
            basis_value: Fraction, **details: Any) -> None:
        line = self.lines[municipality].get(key)
        if line is None:
            line = self.lines[municipality][key] = _Line(basis_unit=basis_unit, **details)
        line.exact_cents += exact_cents
        line.basis_value += basis_value

    def add_framework(self, line: CareLine, sign: int = 1, correction_of: Close | None = None) -> None:
        """Care a framework routes to a funder: in full to that funder, one line per registration."""
        assert line.funder is not None
        self.funder_parties.add(line.funder)
        self.framework_cost_cent_minutes += sign * line.cost_cent_minutes
        exact = Fraction(sign * line.cost_cent_minutes, CENT_MINUTES_PER_CENT)
        pupils = tuple(sorted(ref for ref, _residence in line.attributions))
        if correction_of is None:
            self.add(line.funder, LineKey(0, registration_id=line.registration_id), exact, "minutes",
                     Fraction(line.minutes), registration_date=line.date, pupils=pupils)
        else:
            self.add(line.funder, LineKey(2, original_period_start=correction_of.period_start.isoformat(),
                                          registration_id=line.registration_id),
                     exact, "minutes", Fraction(sign * line.minutes),
                     original_period=(correction_of.period_start, correction_of.period_end),
                     registration_date=line.date, late_void=sign < 0, pupils=pupils)

    def note_rate(self, line: CareLine) -> None:
        rate = exact_rate(line.cost_cent_minutes, line.minutes)
        if rate is not None:
            self.rates.add(rate)

    def add_correction_parts(self, line: CareLine, sign: int, key: str, policy: str, host: str,
                             correction_of: Close) -> None:
        """Registration keys: equal parts per attributed pupil, each where the key puts its residence that day."""
        pupils = len(line.attributions)
        for _pupil_ref, residence in line.attributions:
            exact = Fraction(sign * line.cost_cent_minutes, CENT_MINUTES_PER_CENT * pupils)
            minutes = Fraction(sign * line.minutes, pupils)
            bucket = SPLITS[key].bucket(residence, line.date, policy, host, self.context.municipalities)
            line_key = LineKey(2, bucket.absorbed_from, bucket.non_participating,
                               correction_of.period_start.isoformat(), line.registration_id)
            self.add(bucket.municipality, line_key, exact, "attributed_minutes", minutes,
                     original_period=(correction_of.period_start, correction_of.period_end),
                     registration_date=line.date, late_void=sign < 0)

    def add_new_care(self, care: NewCare, key: str, policy: str, host: str) -> None:
        """Registration keys: this close's own care, as integer sums; see `settle_pending`."""
        day, pupils = care.routing_day, len(care.residences)
        municipalities = self.context.municipalities
        for residence in care.residences:
            routed = self._routes.get((residence, day))
            if routed is None:
                bucket = SPLITS[key].bucket(residence, day, policy, host, municipalities)
                participated = residence == host or participates(municipalities, residence, day)
                routed = self._routes[(residence, day)] = (bucket, participated)
            bucket, participated = routed
            if residence not in self.resident_minutes:
                self.resident_minutes[residence] = Fraction(0)
                self.resident_cost[residence] = Fraction(0)
            resident = self._pending_residents.get((residence, pupils))
            if resident is None:
                resident = self._pending_residents[(residence, pupils)] = [0, 0]
            resident[0] += care.cost_cent_minutes
            resident[1] += care.minutes
            self.resident_participated[residence] = self.resident_participated.get(residence, True) and participated
            line_key = LineKey(1 if bucket.absorbed_from else 0, bucket.absorbed_from, bucket.non_participating)
            pending = self._pending_lines.get((bucket.municipality, line_key, pupils))
            if pending is None:
                if line_key not in self.lines[bucket.municipality]:  # zero cost still creates the line
                    self.add(bucket.municipality, line_key, Fraction(0), "attributed_minutes", Fraction(0))
                pending = self._pending_lines[(bucket.municipality, line_key, pupils)] = [0, 0]
            pending[0] += care.cost_cent_minutes
            pending[1] += care.minutes

    def settle_pending(self) -> None:
        """Add the integer sums of new care to the lines and the residence view, as exact Fractions."""
        for (municipality, line_key, pupils), (cost, minutes) in self._pending_lines.items():
            line = self.lines[municipality][line_key]
            line.exact_cents += Fraction(cost, CENT_MINUTES_PER_CENT * pupils)
            line.basis_value += Fraction(minutes, pupils)
        for (residence, pupils), (cost, minutes) in self._pending_residents.items():
            self.resident_cost[residence] += Fraction(cost, CENT_MINUTES_PER_CENT * pupils)
            self.resident_minutes[residence] += Fraction(minutes, pupils)
        self._pending_lines.clear()
        self._pending_residents.clear()

    def add_weighted(self, cost_cent_minutes: Fraction | int, weights: Mapping[Bucket, Fraction], unit: str,
                     correction_of: Close | None = None, line: CareLine | None = None,
                     shown: Mapping[Bucket, Fraction] | None = None) -> None:
        """Period keys: split an exact cost over bucket weights (zero cost still creates the lines). A line
        shows its weight, or `shown[bucket]` when the weights are not what the statement counts."""
        weight_sum = sum(weights.values(), Fraction(0))
        for bucket, weight in sorted(weights.items()):
            exact = Fraction(cost_cent_minutes, CENT_MINUTES_PER_CENT) * weight / weight_sum
            if correction_of is None:
                line_key = LineKey(1 if bucket.absorbed_from else 0, bucket.absorbed_from, bucket.non_participating)
                self.add(bucket.municipality, line_key, exact, unit, (shown or {}).get(bucket, weight))
            else:
                assert line is not None
                line_key = LineKey(2, bucket.absorbed_from, bucket.non_participating,
                                   correction_of.period_start.isoformat(), line.registration_id)
                self.add(bucket.municipality, line_key, exact, "share", weight / weight_sum,
                         original_period=(correction_of.period_start, correction_of.period_end),
                         registration_date=line.date, late_void=cost_cent_minutes < 0)


def close_period(context: ArrangementContext, lines: Iterable[CareLine], history: Sequence[Close],
                 period_start: dt.date, period_end: dt.date, issued_on: dt.date) -> CloseResult:
    """Close [period_start, period_end] of the arrangement: one statement per municipality and the new Close.

    `lines` are all registrations of the arrangement the service knows (voided ones included, marked),
    `history` the closes already issued, oldest first. The close settles every cost dated on or before
    `period_end` that no earlier close settled: the period's care, care dated in a gap before the period
    that was never closed, and corrections for earlier periods (late registrations, late voids).
    """
    _check_history(context.arrangement_id, history)
    refuse_unfinished(period_end, issued_on)
    check_period(context.arrangement, history, period_start, period_end)
    return _close(context, summarise_care(context, lines, history, period_end), history,
                  period_start, period_end, issued_on)


def close_summarised(context: ArrangementContext, care: CareSummary, history: Sequence[Close],
                     period_start: dt.date, period_end: dt.date, issued_on: dt.date) -> CloseResult:
    """`close_period` from the care lines' summary (`summarise_care`, or the database's equal sums)."""
    _check_history(context.arrangement_id, history)
    refuse_unfinished(period_end, issued_on)
    check_period(context.arrangement, history, period_start, period_end)
    return _close(context, care, history, period_start, period_end, issued_on)


def _close(context: ArrangementContext, care: CareSummary, history: Sequence[Close],
           period_start: dt.date, period_end: dt.date, issued_on: dt.date) -> CloseResult:
    """The close itself, history and period already checked."""
    arrangement = context.arrangement
    policy = arrangement.settlement
    host = context.host_municipality
    closes_made = len(history)
    if care.latest_close_seen > closes_made:
        raise SettlementError(f"registrations of {context.arrangement_id} claim to be learned after close "
                              f"{care.latest_close_seen}, but only {closes_made} closes exist")
    sequence = closes_made + 1
    previous = history[-1] if history else None

    if previous is not None and care.reproduced_cost_cent_minutes != previous.cumulative_cost_cent_minutes:
        # The known_since_close marks do not reproduce what the last close settled: refuse rather
        # than issue figures that break the exactness rule.
        raise SettlementError(
            f"registrations do not reproduce close {previous.sequence} of {context.arrangement_id}: it "
            f"settled {previous.cumulative_cost_cent_minutes} cent-minutes, the registrations give "
            f"{care.reproduced_cost_cent_minutes}"
        )

    key = KEYS[policy.key]
    charges_norm = key.charges == "norm"
    # A norm is charged for every day since the previous close (or the arrangement's start), gap included.
    basis_start = (previous.period_end + ONE_DAY if previous else arrangement.start) if charges_norm else period_start
    basis = period_basis(context, basis_start, period_end) if key.by_period else None
    builder = _CloseBuilder(context)
    # This close's own care: per pupil part under the registration keys, one total under the period keys;
    # a norm key charges the norm instead, and its municipal care only monitors delivery.
    builder.care_cost_cent_minutes = care.new_cost_cent_minutes
    builder.rates.update(care.new_rates)
    if charges_norm:
        assert basis is not None and basis.charged_cent_minutes is not None
        period_care_cent_minutes: Fraction | int = basis.charged_cent_minutes
        municipal_delta: Fraction | int = basis.charged_cent_minutes
    else:
        period_care_cent_minutes = care.new_cost_cent_minutes if basis is not None else 0
        municipal_delta = care.new_cost_cent_minutes
    if basis is None:
        for new_care in care.new_care:
            builder.add_new_care(new_care, policy.key, policy.non_participating, host)
    # Care a framework routes to a funder: outside the key and the waterfall, in full to that funder.
    for line in care.framework_care:
        builder.add_framework(line)
        builder.care_cost_cent_minutes += line.cost_cent_minutes
    # Facts about already closed periods: corrections, each split the way its period was split.
    for line in care.corrections:
        in_previous = previous is not None and included_in_close(line, previous.sequence, previous.period_end)
        sign = int(included_in_close(line, sequence, period_end)) - int(in_previous)
        if sign == 0 or previous is None or line.date > previous.period_end:
            raise SettlementError(f"registration {line.registration_id} is not a correction for this close")
        builder.note_rate(line)
        original = _covering_close(history, line.date)
        builder.correction_cost_cent_minutes += sign * line.cost_cent_minutes
        if line.funder is not None:
            builder.add_framework(line, sign, original)
            continue
        if charges_norm:
            continue  # a norm key charged the norm for that period, not this registration
        municipal_delta += sign * line.cost_cent_minutes
        if KEYS[original.key].by_period:
            weights = original.weight_map() or (basis.weights if basis else {})
            if not weights:
                raise SettlementError(
                    f"correction for registration {line.registration_id}: closed period "
                    f"{original.period_start.isoformat()}..{original.period_end.isoformat()} has no split basis"
                )
            builder.add_weighted(sign * line.cost_cent_minutes, weights, "share", original, line)
        else:
            builder.add_correction_parts(line, sign, original.key, original.non_participating_policy,
                                         original.host_municipality, original)

    builder.settle_pending()
    correction_period = period_start > arrangement.end
    if basis is not None and not (correction_period and period_care_cent_minutes == 0):
        # (A correction period has no care of its own, so no zero care lines for everyone with a basis.)
        if basis.weights:
            builder.add_weighted(period_care_cent_minutes, basis.weights, basis.unit, shown=basis.shown)
        elif period_care_cent_minutes:
            raise SettlementError(
                f"cannot split the care cost of {period_start.isoformat()}..{period_end.isoformat()} by "
                f"{policy.key}: the basis is zero for every municipality"
            )
    if key.host_pays_all or not builder.lines:
        # The host always gets a statement when it pays all; and a close with nothing at all still shows up.
        builder.add(host, LineKey(0), Fraction(0), "attributed_minutes", Fraction(0))

    # --- the close's integer total: cumulative rounding and the contribution, first statements first.
    cumulative_cost = (previous.cumulative_cost_cent_minutes if previous else 0) \
        + builder.care_cost_cent_minutes + builder.correction_cost_cent_minutes
    municipal_cost = (previous.municipal_cost_cent_minutes if previous else 0) + municipal_delta
    settled_cost = (previous.settled_cent_minutes if previous else 0) + builder.framework_cost_cent_minutes \
        + municipal_delta
    rounded_cost = _round_cents(settled_cost)
    applied, contributions = waterfall(policy, _round_cents(municipal_cost))
    cumulative_charged = rounded_cost - applied
    charged = cumulative_charged - (previous.cumulative_charged_cents if previous else 0)
    contribution_delta = applied - (previous.education_applied_cents if previous else 0)
    if contribution_delta:
        _add_contribution(builder, contribution_delta, basis, LineKey(3))
    # The contributions, in order: each one's use this close is a charge on its funder's statement and
    # a deduction spread over the municipalities' statements (so they sum to the same close total).
    before = dict(previous.contributions_applied) if previous else {}
    now = dict(contributions)
    for position_funder in list(now) + [k for k in before if k not in now]:
        delta = now.get(position_funder, 0) - before.get(position_funder, 0)
        if delta:
            funder = position_funder.split(":", 1)[1]
            builder.funder_parties.add(funder)
            line_key = LineKey(4, contribution=position_funder)
            builder.add(funder, line_key, Fraction(delta), "share", Fraction(1))
            _add_contribution(builder, delta, basis, line_key)

    # --- split: close total -> statements -> lines, each exact to the cent.
    exact_by_party = {m: sum((l.exact_cents for l in ls.values()), Fraction(0)) for m, ls in builder.lines.items()}
    totals = split_exact(charged, exact_by_party)
    statements = []
    for party in sorted(builder.lines):
        line_amounts = split_exact(totals[party], {k: l.exact_cents for k, l in builder.lines[party].items()})
        make = _funder_statement if party in builder.funder_parties else _statement
        statements.append(make(context, builder, basis, party, line_amounts, sequence,
                               period_start, period_end, issued_on, previous, charged))

    close = Close(
        arrangement_id=context.arrangement_id,
        sequence=sequence,
        period_start=period_start,
        period_end=period_end,
        issued_on=issued_on,
        key=policy.key,
        non_participating_policy=policy.non_participating,
        host_municipality=host,
        cumulative_cost_cent_minutes=cumulative_cost,
        cumulative_rounded_cost_cents=rounded_cost,
        education_applied_cents=applied,
        cumulative_charged_cents=cumulative_charged,
        charged_cents=charged,
        weights=tuple(sorted(basis.weights.items())) if basis else (),
        statement_totals=tuple((s["funder"], s["total_cents"]) for s in statements),
        cumulative_municipal_cost_cent_minutes=municipal_cost,
        contributions_applied=contributions,
        cumulative_settled_cent_minutes=settled_cost,
    )
    return CloseResult(statements=statements, close=close)


def _round_cents(cent_minutes: Fraction | int) -> int:
    """R: an exact amount in cent-minutes rounded half-up to the cent (integers as shared.money does)."""
    if isinstance(cent_minutes, int):
        return cent_minutes_to_cents(cent_minutes)
    return round_half_up(cent_minutes / CENT_MINUTES_PER_CENT)


def _add_contribution(builder: _CloseBuilder, delta_cents: int, basis: PeriodBasis | None, key: LineKey) -> None:
    """Spread this close's change in an applied contribution over the municipalities' statements, exactly.

    More contribution applied (the usual case) is deducted in proportion to what each municipality is
    charged on this close; contribution handed back (late voids took the cost below it) is credited in
    proportion to each municipality's credits. Fallbacks only matter when the contribution itself was
    changed between closes.
    """
    charges: dict[str, Fraction] = defaultdict(Fraction)
    credits: dict[str, Fraction] = defaultdict(Fraction)
    for municipality, lines in builder.lines.items():
        if municipality in builder.funder_parties:
            continue
        for line in lines.values():
            if line.exact_cents > 0:
                charges[municipality] += line.exact_cents
            elif line.exact_cents < 0:
                credits[municipality] -= line.exact_cents
    candidates = [charges, credits] if delta_cents > 0 else [credits, charges]
    period_weights: dict[str, Fraction] = defaultdict(Fraction)
    for bucket, weight in (basis.weights.items() if basis else []):
        period_weights[bucket.municipality] += weight
    candidates.append(period_weights)
    weights = next((c for c in candidates if sum(c.values(), Fraction(0)) > 0),
                   {builder.context.host_municipality: Fraction(1)})
    weight_sum = sum(weights.values(), Fraction(0))
    for municipality, weight in weights.items():
        if weight:
            builder.add(municipality, key, -delta_cents * weight / weight_sum, "share", weight / weight_sum)


def _contribution_of(context: ArrangementContext, position_funder: str) -> tuple[str, Any]:
    """(funder id, the Contribution in the policy or None when it was removed since) of a line's key."""
    position, funder = position_funder.split(":", 1)
    contributions = context.arrangement.settlement.contributions or []
    found = contributions[int(position)] if int(position) < len(contributions) else None
    return funder, found if found is not None and found.funder == funder else None


def _party_name(context: ArrangementContext, party: str) -> str:
    funder = context.funders.get(party)
    if funder is not None:
        return funder.name
    municipality = context.municipalities.get(party)
    return municipality.name if municipality is not None else party


def _line_out(context: ArrangementContext, key: LineKey, line: _Line, amount: int, party: str,
              coverage_start: dt.date, period: tuple[dt.date, dt.date]) -> dict[str, Any]:
    """A statement line: its figures and the facts its description is put in words from (at issue time in
    English, the stored text; at read time in the reader's language: services/settlement/describe.py)."""
    kind = _KIND_OF_ORDER[key.order]
    out: dict[str, Any] = {
        "kind": kind,
        "description": "",
        "basis": {"unit": line.basis_unit, "value": _decimal(line.basis_value, 6 if line.basis_unit == "share" else 2)},
        "amount_cents": amount,
        "exact_cents": _decimal(line.exact_cents, 4),
        "registration_id": key.registration_id or None,
        "original_period_start": line.original_period[0].isoformat() if line.original_period else None,
        "original_period_end": line.original_period[1].isoformat() if line.original_period else None,
        "absorbed_from": key.absorbed_from or None,
        "non_participating": key.non_participating,
    }
    if key.contribution:
        funder, contribution = _contribution_of(context, key.contribution)
        out.update(contribution_funder=funder, contribution_funder_name=_party_name(context, funder),
                   contribution_label=contribution.label if contribution is not None else None)
    if line.pupils:  # framework care: accounted per client
        out.update(date=line.registration_date.isoformat() if line.registration_date else None,
                   minutes=_decimal(line.basis_value), pupils=list(line.pupils))
    if kind == "correction":
        assert line.registration_date is not None
        out.update(date=line.registration_date.isoformat(), late_void=line.late_void)
    elif kind in ("care", "absorbed") and not key.registration_id:
        out["coverage_start"] = coverage_start.isoformat()
        if kind == "absorbed":
            municipality = context.municipalities.get(key.absorbed_from)
            out["absorbed_from_name"] = municipality.name if municipality else None
    about = {"key": context.arrangement.settlement.key, "period_start": period[0].isoformat(),
             "period_end": period[1].isoformat(), "funder": party,
             "funder_kind": "funder" if party in context.funders else "municipality"}
    out["description"] = describe_line(out, about, translator("en"))  # the issued text
    return out


def _coverage_start(context: ArrangementContext, previous: Close | None, period_start: dt.date) -> dt.date:
    """The first day a close's care lines cover: the period, or earlier when no close covered the days before."""
    return min(previous.period_end + dt.timedelta(days=1) if previous else context.arrangement.start, period_start)


def _statement(context: ArrangementContext, builder: _CloseBuilder, basis: PeriodBasis | None,
               municipality: str, line_amounts: Mapping[LineKey, int], sequence: int,
               period_start: dt.date, period_end: dt.date, issued_on: dt.date,
               previous: Close | None, close_total_cents: int) -> dict[str, Any]:
    policy = context.arrangement.settlement
    coverage = _coverage_start(context, previous, period_start)

    lines_out: list[dict[str, Any]] = []
    education_deducted = contributions_deducted = 0
    for key in sorted(line_amounts):
        line = builder.lines[municipality][key]
        kind = _KIND_OF_ORDER[key.order]
        amount = line_amounts[key]
        if kind == "education_contribution":
            education_deducted -= amount
        elif kind == "contribution":
            contributions_deducted -= amount
        lines_out.append(_line_out(context, key, line, amount, municipality, coverage, (period_start, period_end)))

    period_days = (period_end - period_start).days + 1
    split = KEYS[policy.key]
    summary: dict[str, Any] = {
        "key": policy.key,
        "unit": split.unit,
        "period_days": period_days,
        # Close-wide figures (all statements of this close together), before the contribution.
        "close_care_cost_cents": cent_minutes_to_cents(builder.care_cost_cent_minutes),
        "close_corrections_cost_cents": cent_minutes_to_cents(builder.correction_cost_cent_minutes),
        "close_total_cents": close_total_cents,
        "hourly_rates_cents": sorted(builder.rates),
        "education_contribution_total_cents": policy.education_contribution_cents,
    }
    if basis is not None:
        total_count = sum(basis.counts.values(), Fraction(0))
        own = basis.counts.get(municipality, Fraction(0))
        summary.update(municipality_count=_decimal(own), total_count=_decimal(total_count),
                       share=_decimal(own / total_count, 6) if total_count else "0",
                       participating_days=basis.participating_days.get(municipality, 0))
    elif split.host_pays_all:
        total_minutes = sum(builder.resident_minutes.values(), Fraction(0))
        summary.update(municipality_count=_decimal(total_minutes), total_count=_decimal(total_minutes),
                       share="1", participating_days=period_days)
    else:
        total_minutes = sum(builder.resident_minutes.values(), Fraction(0))
        own = builder.resident_minutes.get(municipality, Fraction(0))
        summary.update(municipality_count=_decimal(own), total_count=_decimal(total_minutes),
                       share=_decimal(own / total_minutes, 6) if total_minutes else "0",
                       participating_days=period_days if municipality == context.host_municipality else
                       participating_days(context.municipalities, municipality, period_start, period_end))

    name = context.municipalities[municipality].name if municipality in context.municipalities else None
    statement: dict[str, Any] = {
        **_header(context, municipality, sequence, period_start, period_end, issued_on),
        "funder_kind": "municipality",
        "funder_name": name,
        "municipality": municipality,
        "municipality_name": name,
        "lines": lines_out,
        "basis": summary,
        "education_contribution_cents": education_deducted,
        "contributions_deducted_cents": contributions_deducted,
        "total_cents": sum(line_amounts.values()),
        "non_participating": any(l["non_participating"] for l in lines_out),
        "absorbed_from": sorted({l["absorbed_from"] for l in lines_out if l["absorbed_from"]}),
    }
    if split.host_pays_all and municipality == context.host_municipality:
        statement["breakdown"] = _residence_breakdown(context, builder)
    return issue(statement)


def _header(context: ArrangementContext, funder: str, sequence: int, period_start: dt.date, period_end: dt.date,
            issued_on: dt.date) -> dict[str, Any]:
    """What every statement of a close says about itself, whoever it is addressed to."""
    policy = context.arrangement.settlement
    return {
        "schema_version": STATEMENT_SCHEMA_VERSION,
        "statement_id": f"{context.arrangement_id}:{period_start.isoformat()}:{period_end.isoformat()}:{funder}",
        "arrangement_id": context.arrangement_id,
        "school_id": context.arrangement.school_id,
        "school_name": context.school_name,
        "funder": funder,
        "host_municipality": context.host_municipality,
        "period_start": period_start.isoformat(),
        "period_end": period_end.isoformat(),
        "close_sequence": sequence,
        "issued_on": issued_on.isoformat(),
        "key": policy.key,
        "non_participating_policy": policy.non_participating,
        "currency": "EUR",
    }


def _funder_statement(context: ArrangementContext, builder: _CloseBuilder, basis: PeriodBasis | None,
                      funder: str, line_amounts: Mapping[LineKey, int], sequence: int,
                      period_start: dt.date, period_end: dt.date, issued_on: dt.date,
                      previous: Close | None, close_total_cents: int) -> dict[str, Any]:
    """The statement of a funder other than a municipality: its framework care, one line per registration,
    and what its contributions paid on this close."""
    policy = context.arrangement.settlement
    coverage = _coverage_start(context, previous, period_start)
    lines_out = [_line_out(context, key, builder.lines[funder][key], line_amounts[key], funder, coverage,
                           (period_start, period_end)) for key in sorted(line_amounts)]
    party = context.funders.get(funder)
    applied_before = dict(previous.contributions_applied) if previous else {}
    contributions = []
    for position, contribution in enumerate(policy.contributions or ()):
        if contribution.funder == funder:
            key = LineKey(4, contribution=f"{position}:{funder}")
            this_close = line_amounts.get(key, 0)
            contributions.append({"position": position, "label": contribution.label,
                                  "amount_cents": contribution.amount_cents,
                                  "applied_cents": applied_before.get(key.contribution, 0) + this_close,
                                  "this_statement_cents": this_close})
    return issue({
        **_header(context, funder, sequence, period_start, period_end, issued_on),
        "funder_kind": party.kind if party is not None else "other",
        "funder_name": party.name if party is not None else None,
        "funder_code": party.code if party is not None else None,
        "municipality": None,
        "municipality_name": None,
        "frameworks": sorted(law for law, whom in (policy.frameworks or {}).items() if whom == funder),
        "contributions": contributions,
        "lines": lines_out,
        "basis": {
            "key": policy.key,
            "unit": "minutes",
            "period_days": (period_end - period_start).days + 1,
            "close_care_cost_cents": cent_minutes_to_cents(builder.care_cost_cent_minutes),
            "close_corrections_cost_cents": cent_minutes_to_cents(builder.correction_cost_cent_minutes),
            "close_total_cents": close_total_cents,
            "hourly_rates_cents": sorted(builder.rates),
            "education_contribution_total_cents": policy.education_contribution_cents,
        },
        "education_contribution_cents": 0,
        "total_cents": sum(line_amounts.values()),
        "non_participating": False,
        "absorbed_from": [],
    })


def _residence_breakdown(context: ArrangementContext, builder: _CloseBuilder) -> list[dict[str, Any]]:
    """host_pays: who the period's care was for, per residence municipality (informational, not charged).

    Rows are rounded with the largest-remainder method so they add up to the period's care cost.
    """
    exact = dict(builder.resident_cost)
    rounded = split_exact(cent_minutes_to_cents(builder.care_cost_cent_minutes), exact) if exact else {}
    return [
        {
            "municipality": code,
            "municipality_name": context.municipalities[code].name if code in context.municipalities else None,
            "attributed_minutes": _decimal(builder.resident_minutes[code]),
            "cost_cents": rounded[code],
            "participating": builder.resident_participated.get(code, False),
        }
        for code in sorted(exact)
    ]


__all__ = [
    "ArrangementContext", "Bucket", "CareLine", "Close", "CloseResult", "LineKey", "PeriodAlreadyClosedError",
    "CareSummary", "NewCare", "PeriodBasis", "PeriodConflictError", "SettlementError", "check_period",
    "close_period", "close_summarised", "residences_of", "routing_day_of", "routing_days", "summarise_care",
    "cumulative_cost_cent_minutes", "education_applied_cents", "find_identical_close",
    "included_in_close", "invariant_problems", "net_cost_cents", "period_basis", "period_problems",
    "settled_cents", "split_exact", "unsettled_cents",
]
