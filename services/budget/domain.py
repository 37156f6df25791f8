"""Budget domain: the pot book of one arrangement and the figures shown for it (design.md section 6).

Pure: no I/O, no clock. The adapter owns persistence (one `PotBook` row per arrangement, one `LoggedFacts`
row per live registration), deduplication by event id, and publishing alerts.

Money rules (design.md section 3): costs are carried exactly in cent-minutes (cents x 60); every shown cent
figure is rounded once, half-up, from the exact amount. Minutes split over several pupils are kept exact as
`Fraction`s (serialised as "n/d" strings). Floats appear only for ratios and shares that are displayed
(`elapsed_fraction`, `burn_ratio`, `non_resident_share`); money is always integer cents.

Event flow:

    book = PotBook()                                   # or PotBook.from_dict(row)
    facts = LoggedFacts.from_event(logged)             # store per registration_id
    apply_logged(book, logged)                         # care.logged
    apply_voided(book, voided, original=facts)         # care.voided (with the stored facts)
    new_alerts = update_alerts(arrangement, book)      # publish one budget.alert per item
    figures = pot_figures(arrangement, book, today)

Alert semantics (see `update_alerts`): a threshold alerts once when spending first reaches it. If a void
brings spending back under an already-alerted threshold, that threshold is re-armed, so a later
re-crossing alerts again. One alert per crossing, never one per registration.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache
from fractions import Fraction
from typing import Any, Iterable, Mapping, Sequence

from services.budget import capacity
from shared.events import CareLogged, CareVoided
from shared.money import (
    CENT_MINUTES_PER_CENT,
    cent_minutes_to_cents,
    format_euro,
    largest_remainder,
    round_half_up,
)
from shared.schemas import Arrangement, Calendar

BOOK_FORMAT_VERSION = 2  # 2: spent and minutes per calendar month (budget and school years)
UNSPECIFIED_FUNDING = "unspecified"
DEFAULT_THRESHOLDS = (0.8, 1.0)

Alert = tuple[str, float]  # (level "warning" | "exceeded", threshold as configured)


# --- small helpers ---------------------------------------------------------------------------------

def iso_week(day: dt.date) -> str:
    """ISO week of a date as 'YYYY-Www' (ISO year, so 2025-12-29 is '2026-W01'). Sorts chronologically."""
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def _week_bounds(key: str) -> tuple[dt.date, dt.date]:
    year, week = key.split("-W")
    monday = dt.date.fromisocalendar(int(year), int(week), 1)
    return monday, monday + dt.timedelta(days=6)


def _frac_to_str(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


@lru_cache(maxsize=256)
def _exact_threshold(threshold: float) -> Fraction:
    """The threshold as the decimal the coordinator typed: Fraction('0.8') == 4/5, not the binary float."""
    return Fraction(repr(float(threshold)))


@lru_cache(maxsize=4096)
def _threshold_cents(threshold: float, cap_cents: int) -> int:
    """The least whole number of cents spent that reaches threshold x cap (checked after every event)."""
    exact = _exact_threshold(threshold) * cap_cents
    return -(-exact.numerator // exact.denominator)


def _add(counter: dict[Any, Any], key: Any, amount: Any) -> None:
    """Add to a counter and drop the key when it reaches zero, so a voided entry leaves no trace."""
    value = counter.get(key, 0) + amount
    if value == 0:
        counter.pop(key, None)
    else:
        counter[key] = value


# --- per-registration facts ------------------------------------------------------------------------

@dataclass(frozen=True)
class LoggedFacts:
    """What the adapter keeps per live registration so that a void reverses it exactly.

    `residences` holds one municipality code per attribution (in event order; repeats allowed: two pupils
    from the same municipality). Empty means the registration was not attributed to any pupil.
    `host_municipality` is the host used when the registration was booked, so the non-resident minutes
    are reversed with the same host even if the host were to change later.
    """

    registration_id: str
    arrangement_id: str
    date: dt.date
    minutes: int
    cost_cent_minutes: int
    task_category: int
    funding: str | None
    residences: tuple[str, ...]
    host_municipality: str
    # Design.md section 11: delivered minutes per group and week, distinct pupils by residence. Empty in facts
    # stored before they were kept (those registrations are then left out of these figures, also on a void).
    group_id: str = ""
    pupils: tuple[str, ...] = ()  # the attributed pupil refs, in the order of `residences`
    # Accountability reports (services/budget/report.py) count distinct care workers per group; "" in facts
    # stored before it was kept (those registrations count no care worker).
    care_worker: str = ""

    @classmethod
    def from_event(cls, event: CareLogged, host_municipality: str | None = None) -> "LoggedFacts":
        return cls(
            registration_id=event.registration_id,
            arrangement_id=event.arrangement_id,
            date=event.date,
            minutes=event.minutes,
            cost_cent_minutes=event.cost_cent_minutes,
            task_category=event.task_category,
            funding=event.funding,
            residences=tuple(a.municipality for a in event.attributions),
            host_municipality=host_municipality or event.host_municipality,
            group_id=event.group_id,
            pupils=tuple(a.pupil_ref for a in event.attributions),
            care_worker=event.care_worker,
        )

    @property
    def week(self) -> str:
        return iso_week(self.date)

    @property
    def month(self) -> str:
        return f"{self.date.year:04d}-{self.date.month:02d}"

    @property
    def funding_key(self) -> str:
        return self.funding or UNSPECIFIED_FUNDING

    def residence_minutes(self) -> dict[str, Fraction | int]:
        """The registration's minutes split equally over its attributions, per municipality, exact (an int
        where the municipality's share is whole: Fractions cost ~1 us each)."""
        pupils_per_code: dict[str, int] = {}
        for code in self.residences:
            pupils_per_code[code] = pupils_per_code.get(code, 0) + 1
        pupils = len(self.residences)
        out: dict[str, Fraction | int] = {}
        for code, count in pupils_per_code.items():  # one division per municipality, not one per pupil
            share, rest = divmod(self.minutes * count, pupils)
            out[code] = share if rest == 0 else Fraction(self.minutes * count, pupils)
        return out

    def non_resident_minutes(self, shares: Mapping[str, Fraction | int] | None = None) -> Fraction | int:
        """Minutes for pupils living outside the host municipality (`shares`: residence_minutes(), if known)."""
        shares = self.residence_minutes() if shares is None else shares
        return sum((m for code, m in shares.items() if code != self.host_municipality), 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "registration_id": self.registration_id,
            "arrangement_id": self.arrangement_id,
            "date": self.date.isoformat(),
            "minutes": self.minutes,
            "cost_cent_minutes": self.cost_cent_minutes,
            "task_category": self.task_category,
            "funding": self.funding,
            "residences": list(self.residences),
            "host_municipality": self.host_municipality,
            "group_id": self.group_id,
            "pupils": list(self.pupils),
            "care_worker": self.care_worker,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LoggedFacts":
        return cls(
            registration_id=data["registration_id"],
            arrangement_id=data["arrangement_id"],
            date=dt.date.fromisoformat(data["date"]),
            minutes=int(data["minutes"]),
            cost_cent_minutes=int(data["cost_cent_minutes"]),
            task_category=int(data["task_category"]),
            funding=data.get("funding"),
            residences=tuple(data.get("residences", ())),
            host_municipality=data["host_municipality"],
            group_id=data.get("group_id", ""),
            pupils=tuple(data.get("pupils", ())),
            care_worker=data.get("care_worker", ""),
        )


# --- the book --------------------------------------------------------------------------------------

@dataclass
class PotBook:
    """Running totals of one arrangement's pot. Exact; counters never hold zero entries.

    Zero entries are removed as soon as a void brings them to zero, so a book that saw a registration
    logged and voided equals (==) a book that never saw it (apart from `alerted_levels`, which the
    alert functions manage, and `host_municipality`, the last host seen, kept for information).
    """

    spent_cent_minutes: int = 0
    minutes: int = 0
    registrations: int = 0
    minutes_by_category: dict[int, int] = field(default_factory=dict)
    cent_minutes_by_category: dict[int, int] = field(default_factory=dict)
    minutes_by_funding: dict[str, int] = field(default_factory=dict)
    # Exact minutes per residence municipality (a registration's minutes split equally over its pupils).
    minutes_by_residence: dict[str, Fraction] = field(default_factory=dict)
    non_resident_minutes: Fraction = Fraction(0)
    unattributed_minutes: int = 0
    spent_cent_minutes_by_week: dict[str, int] = field(default_factory=dict)
    # Per calendar month ("2026-01"): both the budget year (January) and the school year (August) start on a
    # month's first day, so every year figure is a sum of whole months (by_budget_year, by_school_year).
    spent_cent_minutes_by_month: dict[str, int] = field(default_factory=dict)
    minutes_by_month: dict[str, int] = field(default_factory=dict)
    alerted_levels: set[float] = field(default_factory=set)
    host_municipality: str | None = None
    # Design.md section 11 (services/budget/capacity.py). Delivered minutes per "group/ISO week"; live
    # attributions per "pupil_ref/residence code" and, per pupil, those outside the host municipality.
    minutes_by_group_week: dict[str, int] = field(default_factory=dict)
    pupil_residences: dict[str, int] = field(default_factory=dict)
    non_resident_pupils: dict[str, int] = field(default_factory=dict)
    # Alert state, managed like alerted_levels: "group/week" keys alerted as capacity gaps (never re-armed), the
    # non-resident pupil share alerted (re-armed below the threshold) and how many such alerts were emitted.
    capacity_alerted: set[str] = field(default_factory=set)
    non_resident_alerted: bool = False
    non_resident_alerts: int = 0

    @property
    def attributed_minutes(self) -> int:
        """Minutes of registrations attributed to at least one pupil (always a whole number)."""
        return self.minutes - self.unattributed_minutes

    @property
    def spent_cents(self) -> int:
        return cent_minutes_to_cents(self.spent_cent_minutes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (string keys, exact fractions as "n/d" strings, keys sorted)."""
        return {
            "format": BOOK_FORMAT_VERSION,
            "spent_cent_minutes": self.spent_cent_minutes,
            "minutes": self.minutes,
            "registrations": self.registrations,
            "minutes_by_category": {str(k): v for k, v in sorted(self.minutes_by_category.items())},
            "cent_minutes_by_category": {
                str(k): v for k, v in sorted(self.cent_minutes_by_category.items())
            },
            "minutes_by_funding": dict(sorted(self.minutes_by_funding.items())),
            "minutes_by_residence": {
                k: _frac_to_str(v) for k, v in sorted(self.minutes_by_residence.items())
            },
            "non_resident_minutes": _frac_to_str(self.non_resident_minutes),
            "unattributed_minutes": self.unattributed_minutes,
            "spent_cent_minutes_by_week": dict(sorted(self.spent_cent_minutes_by_week.items())),
            "spent_cent_minutes_by_month": dict(sorted(self.spent_cent_minutes_by_month.items())),
            "minutes_by_month": dict(sorted(self.minutes_by_month.items())),
            "alerted_levels": sorted(self.alerted_levels),
            "host_municipality": self.host_municipality,
            "minutes_by_group_week": dict(sorted(self.minutes_by_group_week.items())),
            "pupil_residences": dict(sorted(self.pupil_residences.items())),
            "non_resident_pupils": dict(sorted(self.non_resident_pupils.items())),
            "capacity_alerted": sorted(self.capacity_alerted),
            "non_resident_alerted": self.non_resident_alerted,
            "non_resident_alerts": self.non_resident_alerts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PotBook":
        version = data.get("format", BOOK_FORMAT_VERSION)
        if version != BOOK_FORMAT_VERSION:
            raise ValueError(f"unknown PotBook format {version!r}")
        return cls(
            spent_cent_minutes=int(data.get("spent_cent_minutes", 0)),
            minutes=int(data.get("minutes", 0)),
            registrations=int(data.get("registrations", 0)),
            minutes_by_category={int(k): int(v) for k, v in data.get("minutes_by_category", {}).items()},
            cent_minutes_by_category={
                int(k): int(v) for k, v in data.get("cent_minutes_by_category", {}).items()
            },
            minutes_by_funding={str(k): int(v) for k, v in data.get("minutes_by_funding", {}).items()},
            minutes_by_residence={
                str(k): Fraction(v) for k, v in data.get("minutes_by_residence", {}).items()
            },
            non_resident_minutes=Fraction(data.get("non_resident_minutes", "0")),
            unattributed_minutes=int(data.get("unattributed_minutes", 0)),
            spent_cent_minutes_by_week={
                str(k): int(v) for k, v in data.get("spent_cent_minutes_by_week", {}).items()
            },
            spent_cent_minutes_by_month={
                str(k): int(v) for k, v in data.get("spent_cent_minutes_by_month", {}).items()
            },
            minutes_by_month={str(k): int(v) for k, v in data.get("minutes_by_month", {}).items()},
            alerted_levels={float(x) for x in data.get("alerted_levels", [])},
            host_municipality=data.get("host_municipality"),
            minutes_by_group_week={str(k): int(v) for k, v in data.get("minutes_by_group_week", {}).items()},
            pupil_residences={str(k): int(v) for k, v in data.get("pupil_residences", {}).items()},
            non_resident_pupils={str(k): int(v) for k, v in data.get("non_resident_pupils", {}).items()},
            capacity_alerted={str(x) for x in data.get("capacity_alerted", [])},
            non_resident_alerted=bool(data.get("non_resident_alerted", False)),
            non_resident_alerts=int(data.get("non_resident_alerts", 0)),
        )


# --- applying events -------------------------------------------------------------------------------

def apply_facts(book: PotBook, facts: LoggedFacts, sign: int = 1) -> PotBook:
    """Add (sign=+1) or remove (sign=-1) one registration's facts. Mutates and returns `book`."""
    if sign not in (1, -1):
        raise ValueError("sign must be +1 or -1")
    if sign < 0 and (book.registrations < 1 or book.minutes < facts.minutes):
        raise ValueError("cannot remove a registration the book does not hold")
    book.spent_cent_minutes += sign * facts.cost_cent_minutes
    book.minutes += sign * facts.minutes
    book.registrations += sign
    _add(book.minutes_by_category, facts.task_category, sign * facts.minutes)
    _add(book.cent_minutes_by_category, facts.task_category, sign * facts.cost_cent_minutes)
    _add(book.minutes_by_funding, facts.funding_key, sign * facts.minutes)
    _add(book.spent_cent_minutes_by_week, facts.week, sign * facts.cost_cent_minutes)
    _add(book.spent_cent_minutes_by_month, facts.month, sign * facts.cost_cent_minutes)
    _add(book.minutes_by_month, facts.month, sign * facts.minutes)
    if facts.residences:
        shares = facts.residence_minutes()
        for code, minutes in shares.items():
            _add(book.minutes_by_residence, code, sign * minutes)
        book.non_resident_minutes += sign * facts.non_resident_minutes(shares)
    else:
        book.unattributed_minutes += sign * facts.minutes
    if facts.group_id:
        _add(book.minutes_by_group_week, f"{facts.group_id}/{facts.week}", sign * facts.minutes)
    if len(facts.pupils) == len(facts.residences):
        for ref, code in zip(facts.pupils, facts.residences):
            _add(book.pupil_residences, f"{ref}/{code}", sign)
            if code != facts.host_municipality:
                _add(book.non_resident_pupils, ref, sign)
    return book


def apply_logged(book: PotBook, event: CareLogged, host_municipality: str | None = None,
                 facts: LoggedFacts | None = None) -> PotBook:
    """Book a care.logged event. `host_municipality` defaults to the event's own host municipality;
    `facts` are the event's LoggedFacts when the caller already made them.

    No deduplication here: the adapter skips event ids it has already applied.
    """
    facts = facts or LoggedFacts.from_event(event, host_municipality)
    book.host_municipality = facts.host_municipality
    return apply_facts(book, facts, +1)


def apply_voided(book: PotBook, event: CareVoided, original: LoggedFacts) -> PotBook:
    """Reverse a registration exactly, using the facts stored when it was logged.

    Raises ValueError when the void does not match the original (other registration, minutes or cost):
    a void must take out exactly what went in, so a mismatch is a pipeline bug to reject, not to book.
    """
    if event.registration_id != original.registration_id:
        raise ValueError(
            f"void of {event.registration_id!r} given the facts of {original.registration_id!r}"
        )
    if event.minutes != original.minutes or event.cost_cent_minutes != original.cost_cent_minutes:
        raise ValueError(
            f"void of {event.registration_id!r} does not match the logged registration "
            f"({event.minutes} min / {event.cost_cent_minutes} cent-minutes vs "
            f"{original.minutes} min / {original.cost_cent_minutes} cent-minutes)"
        )
    return apply_facts(book, original, -1)


def rebuild_book(facts: Iterable[LoggedFacts], alerted_levels: Iterable[float] = ()) -> PotBook:
    """A book from the stored facts of the live registrations (rebuild / reconciliation)."""
    book = PotBook(alerted_levels=set(alerted_levels))
    for item in facts:
        book.host_municipality = item.host_municipality
        apply_facts(book, item, +1)
    return book


def reconciliation_cents(book_spent_cent_minutes: int, ledger_cent_minutes: int) -> int:
    """Book minus ledger in cents; 0 when they agree.

    Rounded *away from zero* to whole cents (not half-up), so that even a discrepancy of one cent-minute
    reads non-zero on the reconciliation gauge instead of being rounded away.
    """
    diff = book_spent_cent_minutes - ledger_cent_minutes
    magnitude = -(-abs(diff) // CENT_MINUTES_PER_CENT)
    return magnitude if diff >= 0 else -magnitude


# --- thresholds, status and alerts -----------------------------------------------------------------

def _thresholds(arrangement: Arrangement) -> list[float]:
    return sorted(set(arrangement.alert_thresholds))


def exceeded_threshold(thresholds: Sequence[float]) -> float:
    """The threshold from which the status (and an alert) is "exceeded".

    1.0 when configured; otherwise the highest threshold. Exception: a single threshold below 1.0 is a
    warning level, and the pot is "exceeded" at the cap (1.0) without an alert for it. No thresholds at
    all: "exceeded" at the cap.
    """
    ts = sorted(set(thresholds))
    if not ts or 1.0 in ts:
        return 1.0
    if len(ts) == 1 and ts[0] < 1.0:
        return 1.0
    return ts[-1]


def threshold_level(threshold: float, thresholds: Sequence[float]) -> str:
    return "exceeded" if threshold >= exceeded_threshold(thresholds) else "warning"


def _reached(spent_cents: int, cap_cents: int, threshold: float) -> bool:
    """Spending (the shown, once-rounded cents) is at or above threshold x cap. Nothing spent reaches
    nothing, so a zero cap with nothing spent is "ok"."""
    return spent_cents > 0 and spent_cents >= _threshold_cents(threshold, cap_cents)


def budget_status(arrangement: Arrangement, book: PotBook) -> str:
    """"ok", "warning" (lowest threshold reached) or "exceeded" (see `exceeded_threshold`)."""
    ts = _thresholds(arrangement)
    spent = book.spent_cents
    if _reached(spent, arrangement.cap_cents, exceeded_threshold(ts)):
        return "exceeded"
    if ts and _reached(spent, arrangement.cap_cents, ts[0]):
        return "warning"
    return "ok"


def crossed_alerts(arrangement: Arrangement, book: PotBook) -> list[Alert]:
    """Thresholds the current spending has reached that are not yet in `book.alerted_levels`.

    Pure: does not record them. Ascending by threshold; one registration that jumps over two thresholds
    yields both. Call `rearm_alerts` first (or use `update_alerts`) so that thresholds a void dropped
    below can fire again.
    """
    ts = _thresholds(arrangement)
    spent = book.spent_cents
    return [
        (threshold_level(t, ts), t)
        for t in ts
        if t not in book.alerted_levels and _reached(spent, arrangement.cap_cents, t)
    ]


def record_alerts(book: PotBook, alerts: Iterable[Alert]) -> None:
    book.alerted_levels.update(t for _, t in alerts)


def rearm_alerts(arrangement: Arrangement, book: PotBook) -> list[float]:
    """Drop alerted thresholds the spending is no longer at (after a void, or a raised cap) and those no
    longer configured. Returns the re-armed thresholds. A re-armed threshold alerts again when spending
    reaches it again, so each crossing from below produces exactly one alert."""
    ts = set(_thresholds(arrangement))
    spent = book.spent_cents
    rearmed = sorted(
        t for t in book.alerted_levels if t not in ts or not _reached(spent, arrangement.cap_cents, t)
    )
    book.alerted_levels.difference_update(rearmed)
    return rearmed


def update_alerts(arrangement: Arrangement, book: PotBook) -> list[Alert]:
    """Re-arm, find new crossings and record them; returns the alerts to publish (call after each event,
    in the same transaction that stores the book)."""
    rearm_alerts(arrangement, book)
    alerts = crossed_alerts(arrangement, book)
    record_alerts(book, alerts)
    return alerts


# --- figures ---------------------------------------------------------------------------------------

def elapsed_fraction(start: dt.date, end: dt.date, today: dt.date, calendar: Calendar | None = None) -> Fraction:
    """Share of the arrangement's days passed, today included: (min(today, end) - start + 1) / days.

    0 before the start, 1/days on the start day, 1 from the end day on. With a school calendar the days are
    school days (design.md section 11): a holiday does not move it (an arrangement without any school day
    falls back to calendar days).
    """
    if today < start:
        return Fraction(0)
    if calendar is not None:
        passed_days, school_days = capacity.elapsed_school_days(calendar, start, end, today)
        if school_days > 0:
            return Fraction(passed_days, school_days)
    total = (end - start).days + 1
    passed = (min(today, end) - start).days + 1
    return min(Fraction(1), max(Fraction(0), Fraction(passed, total)))


def _straight_line_cents(cap_cents: int, start: dt.date, end: dt.date, day: dt.date,
                         calendar: Calendar | None = None) -> int:
    return round_half_up(cap_cents * elapsed_fraction(start, end, day, calendar))


@dataclass(frozen=True)
class Payment:
    """A payment actually made to the payee for a pot (recorded by the coordinator: payment.recorded)."""

    payment_id: str
    date: dt.date
    amount_cents: int


def school_year_of(month: str) -> str:
    """The school year (1 August - 31 July) a "YYYY-MM" month falls in, as "2025/2026"."""
    year, number = int(month[:4]), int(month[5:7])
    first = year if number >= 8 else year - 1
    return f"{first}/{first + 1}"


def _month(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def _rounded_per_period(per_month: Mapping[str, int], period_of: Any, periods: Sequence[Any],
                        divisor: int) -> dict[Any, int]:
    """Exact amounts per month (in 1/`divisor` cents) summed per period, each period's figure the difference
    of the rounded running total at its end and at the previous period's end: the periods add up exactly to
    the rounded total (the same rule as statements, docs/budget.md). Every one of `periods` gets a figure."""
    exact: dict[Any, int] = {period: 0 for period in periods}
    for month, amount in per_month.items():
        exact[period_of(month)] = exact.get(period_of(month), 0) + amount
    out: dict[Any, int] = {}
    running, shown_before = 0, 0
    for period in sorted(exact):  # years (ints) and school years ("2025/2026") sort in time order
        running += exact[period]
        shown = round_half_up(Fraction(running, divisor))
        out[period] = shown - shown_before
        shown_before = shown
    return out


def year_figures(arrangement: Arrangement, book: PotBook, payments: Sequence[Payment]
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(by_budget_year, by_school_year) for every calendar year and school year the arrangement touches
    (design.md section 10). Cents as integers; each year's spent (and individual equivalent) from the rounded
    running total, so the years add up to the pot's spent_cents (and individual_equivalent_cents)."""
    years = list(range(arrangement.start.year, arrangement.end.year + 1))
    spent = _rounded_per_period(book.spent_cent_minutes_by_month, lambda m: int(m[:4]), years, CENT_MINUTES_PER_CENT)
    minutes: dict[int, int] = {}
    for month, value in book.minutes_by_month.items():
        minutes[int(month[:4])] = minutes.get(int(month[:4]), 0) + value
    rate = arrangement.individual_rate_cents
    equivalent = None
    if rate is not None:
        equivalent = _rounded_per_period({m: v * rate for m, v in book.minutes_by_month.items()},
                                         lambda m: int(m[:4]), years, CENT_MINUTES_PER_CENT)
    by_budget_year = []
    for year in sorted(spent):
        row: dict[str, Any] = {
            "year": year,
            "planned_cents": sum(i.amount_cents for i in arrangement.installments if i.due.year == year),
            "spent_cents": spent[year],
            "minutes": minutes.get(year, 0),
            "paid_cents": sum(p.amount_cents for p in payments if p.date.year == year),
        }
        if equivalent is not None:
            row["individual_equivalent_cents"] = equivalent[year]
            row["savings_cents"] = equivalent[year] - spent[year]
        by_budget_year.append(row)

    first, last = school_year_of(_month(arrangement.start)), school_year_of(_month(arrangement.end))
    school_years = [f"{y}/{y + 1}" for y in range(int(first[:4]), int(last[:4]) + 1)]
    spent_sy = _rounded_per_period(book.spent_cent_minutes_by_month, school_year_of, school_years,
                                   CENT_MINUTES_PER_CENT)
    minutes_sy: dict[str, int] = {}
    for month, value in book.minutes_by_month.items():
        minutes_sy[school_year_of(month)] = minutes_sy.get(school_year_of(month), 0) + value
    by_school_year = [{"school_year": sy, "spent_cents": spent_sy[sy], "minutes": minutes_sy.get(sy, 0)}
                      for sy in spent_sy]
    return by_budget_year, by_school_year


def weekly_series(arrangement: Arrangement, book: PotBook, today: dt.date, calendar: Calendar | None = None
                  ) -> list[dict[str, Any]]:
    """One row per ISO week from the start's week to the end's week (plus any week with bookings outside).

    `spent_cents` is that week's exact spending rounded once; `cumulative_cents` is the exact running
    total rounded once (so it need not equal the sum of the rounded weekly figures). Both are None for
    weeks that begin after `today`. `straight_line_cents` is the straight line from 0 at the start to the
    cap at the end, evaluated at the week's last day (Sunday, clamped to the arrangement).
    """
    keys: set[str] = set(book.spent_cent_minutes_by_week)
    monday = arrangement.start - dt.timedelta(days=arrangement.start.weekday())
    while monday <= arrangement.end:
        keys.add(iso_week(monday))
        monday += dt.timedelta(days=7)
    rows: list[dict[str, Any]] = []
    cumulative = 0
    for key in sorted(keys):
        week_start, week_end = _week_bounds(key)
        spent = book.spent_cent_minutes_by_week.get(key, 0)
        cumulative += spent
        future = week_start > today
        rows.append({
            "week": key,
            "week_start": week_start.isoformat(),
            "week_end": week_end.isoformat(),
            "spent_cents": None if future else cent_minutes_to_cents(spent),
            "cumulative_cents": None if future else cent_minutes_to_cents(cumulative),
            "straight_line_cents": _straight_line_cents(
                arrangement.cap_cents, arrangement.start, arrangement.end, week_end, calendar
            ),
        })
    return rows


def after_final_settlement(spent_cents: int, latest: Mapping[str, Any] | None) -> dict[str, Any]:
    """Pot fields for the latest final settlement (services/budget/final_settlement.py): the delivered cost
    that changed after it (care or voids booked since: spent now minus the delivered cost it counted), 0 and
    no id without one."""
    if latest is None:
        return {"final_settlement_id": None, "final_settlement_version": None, "after_final_settlement_cents": 0,
                "after_final_settlement_display": format_euro(0)}
    after = spent_cents - int(latest["delivered_cents"])
    return {"final_settlement_id": latest["final_settlement_id"], "final_settlement_version": latest["version"],
            "after_final_settlement_cents": after, "after_final_settlement_display": format_euro(after)}


def pot_figures(arrangement: Arrangement, book: PotBook, today: dt.date,
                payments: Sequence[Payment] = (), final_settlement: Mapping[str, Any] | None = None,
                calendar: Calendar | None = None) -> dict[str, Any]:
    """The section-6 figures of one pot, JSON-able (dates as ISO strings, dict keys as strings).

    Paid figures come from the payments actually recorded (design.md section 10), not from due dates: an
    installment counts as paid when the payments together cover it and every installment due before it.

    Every cent figure is rounded once from the exact amount, except the ones defined as differences of
    shown figures so that the display adds up: remaining = cap - spent, savings = individual equivalent
    - spent, true_up = spent - installments paid, after_final_settlement = spent - what the latest final
    settlement (`final_settlement`, its document) counted as delivered.

    `calendar`: the arrangement's school calendar (design.md section 11), when it has one: the elapsed fraction,
    burn ratio, forecast and straight line then count school days; planned capacity counts school days always.
    """
    cap = arrangement.cap_cents
    spent_exact = Fraction(book.spent_cent_minutes, CENT_MINUTES_PER_CENT)
    spent = round_half_up(spent_exact)
    elapsed = elapsed_fraction(arrangement.start, arrangement.end, today, calendar)
    school_days_elapsed, school_days_total = capacity.elapsed_school_days(calendar, arrangement.start,
                                                                          arrangement.end, today)

    burn_ratio = None
    forecast = None
    if elapsed > 0:
        forecast = round_half_up(spent_exact / elapsed)
        if cap > 0:
            burn_ratio = float(spent_exact / cap / elapsed)

    individual_equivalent = None
    savings = None
    if arrangement.individual_rate_cents is not None:
        individual_equivalent = round_half_up(
            Fraction(book.minutes * arrangement.individual_rate_cents, CENT_MINUTES_PER_CENT)
        )
        savings = individual_equivalent - spent

    attributed = book.attributed_minutes
    non_resident_share = float(book.non_resident_minutes / attributed) if attributed > 0 else None
    residence_minutes = (
        largest_remainder(attributed, book.minutes_by_residence) if book.minutes_by_residence else {}
    )

    installments = []
    paid_cents = sum(p.amount_cents for p in payments)
    planned_so_far = 0
    next_installment = None
    for inst in sorted(arrangement.installments, key=lambda i: i.due):
        planned_so_far += inst.amount_cents
        paid = planned_so_far <= paid_cents
        row = {
            "due": inst.due.isoformat(),
            "amount_cents": inst.amount_cents,
            "amount_display": format_euro(inst.amount_cents),
            "paid": paid,
        }
        installments.append(row)
        if not paid and next_installment is None:
            next_installment = row
    true_up = spent - paid_cents
    true_up_capped = min(spent, cap) - paid_cents

    by_budget_year, by_school_year = year_figures(arrangement, book, payments)

    spent_by_category = (
        largest_remainder(spent, book.cent_minutes_by_category) if book.cent_minutes_by_category else {}
    )

    def euro(cents: int | None) -> str | None:
        return None if cents is None else format_euro(cents)

    return {
        "start": arrangement.start.isoformat(),
        "end": arrangement.end.isoformat(),
        "today": today.isoformat(),
        "cap_cents": cap,
        "cap_display": euro(cap),
        "spent_cent_minutes": book.spent_cent_minutes,
        "spent_cents": spent,
        "spent_display": euro(spent),
        "remaining_cents": cap - spent,
        "remaining_display": euro(cap - spent),
        "minutes": book.minutes,
        "registrations": book.registrations,
        "days_total": (arrangement.end - arrangement.start).days + 1,
        "days_elapsed": round_half_up(elapsed_fraction(arrangement.start, arrangement.end, today)
                                      * ((arrangement.end - arrangement.start).days + 1)),
        "calendar_id": arrangement.calendar_id,
        "elapsed_basis": "school_days" if calendar is not None else "calendar_days",
        "school_days_total": school_days_total,
        "school_days_elapsed": school_days_elapsed,
        "elapsed_fraction": float(elapsed),
        "burn_ratio": burn_ratio,
        "forecast_cents": forecast,
        "forecast_display": euro(forecast),
        "individual_rate_cents": arrangement.individual_rate_cents,
        "individual_equivalent_cents": individual_equivalent,
        "individual_equivalent_display": euro(individual_equivalent),
        "savings_cents": savings,
        "savings_display": euro(savings),
        "host_municipality": book.host_municipality,
        "non_resident_share": non_resident_share,
        "non_resident_minutes": round_half_up(book.non_resident_minutes),
        "attributed_minutes": attributed,
        "unattributed_minutes": book.unattributed_minutes,
        "minutes_by_residence": dict(sorted(residence_minutes.items())),
        "installments": installments,
        "installments_paid_cents": paid_cents,
        "installments_paid_display": euro(paid_cents),
        "paid_cents": paid_cents,
        "payments": len(payments),
        "next_installment": next_installment,
        "true_up_cents": true_up,
        "true_up_display": euro(true_up),
        # M2: the cap is a maximum, so an overrun is not automatically payable.
        "true_up_capped_cents": true_up_capped,
        "true_up_capped_display": euro(true_up_capped),
        "status": budget_status(arrangement, book),
        "alert_thresholds": _thresholds(arrangement),
        "minutes_by_task_category": {str(k): v for k, v in sorted(book.minutes_by_category.items())},
        "spent_cents_by_task_category": {str(k): v for k, v in sorted(spent_by_category.items())},
        "minutes_by_funding": dict(sorted(book.minutes_by_funding.items())),
        "weekly": weekly_series(arrangement, book, today, calendar),
        **capacity.plan_figures(arrangement, calendar, book, today),
        "capacity_alert_ratio": arrangement.capacity_alert_ratio,
        **capacity.pupil_figures(book),
        "non_resident_alert_share": arrangement.non_resident_alert_share,
        "by_budget_year": by_budget_year,
        "by_school_year": by_school_year,
        **after_final_settlement(spent, final_settlement),
    }
