"""Pydantic models of the reference data and registrations: the HTTP contract (design.md section 4).

The same models travel inside registry events, so a service's copy of the reference data is exactly what
the coordinator put in. Field validators give messages a school can act on.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from shared.identity import REGISTRATION_ID, SLUG_ID, is_municipality_code, pupil_ref_problem
from shared.settlement_keys import KEY_NAMES, KEYS
from shared.timeutil import in_force_on, today

TASK_CATEGORIES = {
    1: "social skills",
    2: "behaviour",
    3: "mental-health treatment",
    4: "personal care",
    5: "paramedical",
    6: "medical care",
    7: "nursing",
    8: "learning disorders",
    9: "indirect support",
    10: "care meetings",
    11: "other care work",
}
FUNDING_SOURCES = ("jeugdwet", "wlz", "zvw", "wmo", "education")
# Laws an arrangement may route to a funder (`settlement.frameworks`); care under them goes in full to it.
FRAMEWORK_LAWS = ("wlz", "zvw", "education", "wmo")
# Laws whose care the municipalities pay by the key when no framework routes it (design.md section 9).
MUNICIPAL_LAWS = ("jeugdwet", "wmo")
FUNDER_KINDS = ("wlz_office", "health_insurer", "school_partnership", "school_board", "subsidy_fund", "other")

SlugId = Annotated[str, Field(pattern=SLUG_ID.pattern, min_length=1, max_length=64)]
# Upper bounds far above any real figure, so a number always fits the 64-bit integers of the events, the
# databases and JSON readers (the fuzzer found a 24-digit norm that made PUT /norms answer 500).
MAX_CENTS = 10**13  # EUR 100 billion
MAX_COUNT = 10**9
MINUTES_PER_WEEK = 7 * 24 * 60


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _check_municipality(code: str) -> str:
    if not is_municipality_code(code):
        raise ValueError(f"municipality code must be 'GM' followed by 4 digits (CBS code), got {code!r}")
    return code


class Period(Model):
    """An effective-dated interval; `from` and `until` are inclusive, `until` open when absent."""

    valid_from: dt.date = Field(alias="from")
    valid_until: dt.date | None = Field(default=None, alias="until")

    @model_validator(mode="after")
    def _ordered(self) -> "Period":
        if self.valid_until is not None and self.valid_until < self.valid_from:
            raise ValueError("until must not be before from")
        return self


class Residence(Period):
    municipality: str

    _code = field_validator("municipality")(_check_municipality)


class Municipality(Model):
    name: str = Field(min_length=1, max_length=200)
    youth_population: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    # Absent: participates always. Present: participates only on days one of these periods covers.
    participation: list[Period] | None = None

    def participates_on(self, day: dt.date) -> bool:
        return self.participation is None or in_force_on(self.participation, day) is not None


class School(Model):
    name: str = Field(min_length=1, max_length=200)
    municipality: str

    _code = field_validator("municipality")(_check_municipality)


class Group(Model):
    name: str = Field(min_length=1, max_length=200)


class CareNeed(Period):
    """How much care a pupil needs, effective-dated (the per-pupil norm compares it with its threshold)."""

    minutes_per_week: int = Field(ge=0, le=MINUTES_PER_WEEK)


class Eligibility(Period):
    """Whether a pupil's care may be charged to a collective pot on a day (double funding otherwise)."""

    status: Literal["collective", "individual_decision", "excluded"]


class Pupil(Model):
    group_id: SlugId
    enrolled_from: dt.date
    enrolled_until: dt.date | None = None
    residence: list[Residence] = Field(min_length=1)
    care_need: list[CareNeed] = Field(default_factory=list)
    eligibility: list[Eligibility] = Field(default_factory=list)  # none in force on a day: collective

    def eligibility_on(self, day: dt.date) -> str:
        found = in_force_on(self.eligibility, day)
        return found.status if found else "collective"

    def care_need_on(self, day: dt.date) -> int | None:
        found = in_force_on(self.care_need, day)
        return found.minutes_per_week if found else None

    def enrolled_on(self, day: dt.date) -> bool:
        return self.enrolled_from <= day and (self.enrolled_until is None or day <= self.enrolled_until)

    def residence_on(self, day: dt.date) -> str | None:
        found = in_force_on(self.residence, day)
        return found.municipality if found else None

    @model_validator(mode="after")
    def _ordered(self) -> "Pupil":
        if self.enrolled_until is not None and self.enrolled_until < self.enrolled_from:
            raise ValueError("enrolled_until must not be before enrolled_from")
        return self


class Holiday(Period):
    name: str = Field(min_length=1, max_length=200)


class Calendar(Model):
    """A school calendar: school days are Monday to Friday outside the holidays (design.md section 11)."""

    name: str = Field(min_length=1, max_length=200)
    holidays: list[Holiday] = Field(default_factory=list)

    def is_school_day(self, day: dt.date) -> bool:
        return day.weekday() < 5 and in_force_on(self.holidays, day) is None

    def school_days(self, start: dt.date, end: dt.date) -> int:
        """School days in [start, end] (0 when end is before start)."""
        return sum(1 for offset in range(max(0, (end - start).days + 1))
                   if self.is_school_day(start + dt.timedelta(days=offset)))


class Board(Model):
    """A school board that may shift cap between its schools' pots within its own cap (drawing rights)."""

    name: str = Field(min_length=1, max_length=200)
    school_ids: list[SlugId] = Field(min_length=1)
    cap_cents: int = Field(ge=0, le=MAX_CENTS)


class Transfer(Model):
    """Cap moved from one of a board's pots to another (POST /boards/{board_id}/transfers)."""

    transfer_id: SlugId
    from_arrangement: SlugId
    to_arrangement: SlugId
    amount_cents: int = Field(gt=0, le=MAX_CENTS)
    date: dt.date

    @model_validator(mode="after")
    def _two_pots(self) -> "Transfer":
        if self.from_arrangement == self.to_arrangement:
            raise ValueError("from_arrangement and to_arrangement must differ")
        return self


class NormVersion(Model):
    valid_from: dt.date = Field(alias="from")
    threshold_minutes_per_week: int = Field(gt=0, le=MINUTES_PER_WEEK)
    norm_minutes_per_week: int = Field(ge=0, le=MINUTES_PER_WEEK)


class Norm(Model):
    """A per-pupil norm (Nijmegen), re-set every year: each version applies from its date."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    versions: list[NormVersion] = Field(min_length=1)

    def version_on(self, day: dt.date) -> NormVersion | None:
        applicable = [v for v in self.versions if v.valid_from <= day]
        return max(applicable, key=lambda v: v.valid_from) if applicable else None


class PlanLine(Period):
    """Planned care for one group: minutes a week from `from` (until `until`)."""

    group_id: SlugId
    minutes_per_week: int = Field(ge=0, le=MINUTES_PER_WEEK)


class Rate(Model):
    valid_from: dt.date = Field(alias="from")
    hourly_rate_cents: int = Field(gt=0, le=MAX_CENTS)


class FundingLine(Model):
    source: str = Field(min_length=1, max_length=40)
    funder: str | None = Field(default=None, max_length=200)
    amount_cents: int = Field(ge=0, le=MAX_CENTS)


class Installment(Model):
    due: dt.date
    amount_cents: int = Field(ge=0, le=MAX_CENTS)


class Funder(Model):
    """A party other than a municipality that receives statements (design.md section 9)."""

    name: str = Field(min_length=1, max_length=200)
    kind: Literal[FUNDER_KINDS]  # type: ignore[valid-type]
    code: str | None = Field(default=None, min_length=1, max_length=40)  # e.g. an AGB or UZOVI code


class Contribution(Model):
    """A fixed amount a funder pays towards the cost the municipalities would otherwise pay (the waterfall)."""

    funder: SlugId
    amount_cents: int = Field(gt=0, le=MAX_CENTS)
    label: str | None = Field(default=None, min_length=1, max_length=200)


class SettlementPolicy(Model):
    key: Literal[KEY_NAMES]  # type: ignore[valid-type]  # shared/settlement_keys.py
    shares: dict[str, Annotated[int, Field(le=MAX_COUNT)]] | None = None
    municipalities: list[str] | None = None
    education_contribution_cents: int = Field(default=0, ge=0, le=MAX_CENTS)
    non_participating: Literal["host_absorbs", "bill"] = "host_absorbs"
    # Law -> funder id: care tagged with that law is charged in full to that funder.
    frameworks: dict[Literal[FRAMEWORK_LAWS], SlugId] | None = None  # type: ignore[valid-type]
    # Applied in this order to the municipal cost, each used up by the closes in period order.
    contributions: list[Contribution] | None = None

    def funder_of(self, funding: str | None) -> str | None:
        """The framework funder that pays care tagged `funding`; None when the municipalities pay it."""
        return (self.frameworks or {}).get(funding) if funding else None  # type: ignore[call-overload]

    def unroutable(self, funding: str | None) -> bool:
        """A tagged law that no framework maps and that the municipalities do not pay."""
        return bool(funding) and funding not in MUNICIPAL_LAWS and self.funder_of(funding) is None

    def funders(self) -> set[str]:
        """Every funder id the policy names (frameworks and contributions)."""
        return set((self.frameworks or {}).values()) | {c.funder for c in self.contributions or []}

    @model_validator(mode="after")
    def _key_inputs(self) -> "SettlementPolicy":
        for code in list(self.shares or {}) + list(self.municipalities or []):
            _check_municipality(code)
        for funder in self.funders():
            if is_municipality_code(funder):
                raise ValueError(f"funder {funder!r}: a municipality is paid through the key, not as a framework "
                                 "or contribution funder")
        problems = KEYS[self.key].problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Arrangement(Model):
    school_id: SlugId
    group_ids: list[SlugId] = Field(min_length=1)
    start: dt.date
    end: dt.date
    rates: list[Rate] = Field(min_length=1)
    cap_cents: int = Field(ge=0, le=MAX_CENTS)
    individual_rate_cents: int | None = Field(default=None, gt=0, le=MAX_CENTS)
    funding: list[FundingLine] = Field(default_factory=list)
    installments: list[Installment] = Field(default_factory=list)
    alert_thresholds: list[float] = Field(default_factory=lambda: [0.8, 1.0])
    settlement: SettlementPolicy
    calendar_id: SlugId | None = None  # elapsed share, burn ratio and forecast count its school days
    plan: list[PlanLine] = Field(default_factory=list)  # planned capacity per group
    capacity_alert_ratio: float = Field(default=0.5, gt=0, le=1)
    norm_id: SlugId | None = None  # settlement key per_pupil_norm
    non_resident_alert_share: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> "Arrangement":
        if self.end < self.start:
            raise ValueError("end must not be before start")
        for line in self.plan:
            if line.group_id not in self.group_ids:
                raise ValueError(f"plan: group {line.group_id!r} is not one of the arrangement's group_ids")
        if self.settlement.key == "per_pupil_norm" and self.norm_id is None:  # once that key is offered
            raise ValueError("settlement key per_pupil_norm needs norm_id")
        if min(r.valid_from for r in self.rates) > self.start:
            raise ValueError("rates: the first rate must start on or before the arrangement start")
        if any(not 0 < t <= 10 for t in self.alert_thresholds):
            raise ValueError("alert_thresholds are fractions of the cap, each in (0, 10]")
        return self

    def rate_on(self, day: dt.date) -> int | None:
        applicable = [r for r in self.rates if r.valid_from <= day]
        if not applicable:
            return None
        return max(applicable, key=lambda r: r.valid_from).hourly_rate_cents

    def covers(self, day: dt.date) -> bool:
        return self.start <= day <= self.end


class Registration(Model):
    """One care-hour registration as a school submits it."""

    registration_id: str = Field(min_length=1, max_length=64, pattern=REGISTRATION_ID.pattern)
    school_id: SlugId
    group_id: SlugId
    date: dt.date
    # strict: JSON true or "60" is not a number of minutes (the CSV parser converts its cells itself)
    minutes: int = Field(ge=1, le=720, strict=True)
    care_worker: str = Field(min_length=1, max_length=200)
    task_category: int = Field(strict=True)
    funding: Literal["jeugdwet", "wlz", "zvw", "wmo", "education"] | None = None
    pupils: list[str] | None = Field(default=None, max_length=200)

    @field_validator("task_category")
    @classmethod
    def _care_category(cls, value: int) -> int:
        if value == 12:
            raise ValueError("task_category 12 (education tasks) is not care and cannot be charged to the pot")
        if value not in TASK_CATEGORIES:
            raise ValueError("task_category must be 1..11 (ZiO screening list)")
        return value

    @field_validator("date")
    @classmethod
    def _not_future(cls, value: dt.date) -> dt.date:
        if value > today():
            raise ValueError(f"date {value.isoformat()} is in the future; register care after it was given")
        return value

    @field_validator("pupils")
    @classmethod
    def _pupil_refs(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for ref in value:
            problem = pupil_ref_problem(ref)
            if problem:
                raise ValueError(f"{problem} (got {ref!r})")
        if len(set(value)) != len(value):
            raise ValueError("pupils lists a pupil_ref more than once")
        return value


    def content_hash(self) -> str:
        """Canonical digest of the content: equal for an identical resend, different for any change."""
        return content_hash_of(self.model_dump(mode="json"))


# A whole batch in one call into pydantic (validate_python, dump_python) instead of one call per registration:
# the same Registration schema and validators, item by item.
REGISTRATIONS: TypeAdapter[list[Registration]] = TypeAdapter(list[Registration])


def content_hash_of(registration_doc: dict) -> str:
    """`Registration.content_hash()` from the registration's `model_dump(mode="json")`, for callers that
    already hold that dump (the gateway dumps a whole batch at once and reuses it for the events)."""
    return hashlib.sha256(orjson.dumps(registration_doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


class PaymentRequest(Model):
    """A payment actually made to a pot's payee (POST /arrangements/{id}/payments, design.md section 10).
    `payment_id` is the idempotency key: the same id with the same content is a no-op, with other content a
    conflict. The date must lie in one of the arrangement's budget years and not in the future (checked by
    the gateway against the arrangement)."""

    payment_id: str = Field(min_length=1, max_length=64, pattern=REGISTRATION_ID.pattern)
    date: dt.date
    amount_cents: int = Field(ge=1, le=MAX_CENTS, strict=True, description="euro cents paid, a positive whole number")
    reference: str | None = Field(default=None, min_length=1, max_length=200)

    def content_hash(self) -> str:
        return hashlib.sha256(orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()


class VoidRequest(Model):
    reason: str = Field(min_length=1, max_length=500)


class CloseRequest(Model):
    """Close a settlement period of an arrangement (POST /settlements/close); dates inclusive."""

    arrangement_id: SlugId
    period_start: dt.date
    period_end: dt.date


MAX_CLOSE_BATCH = 1000  # a region has hundreds of arrangements; one request closes them all


class CloseBatchRequest(Model):
    """Close the same period for several arrangements (POST /settlements/close/batch): all of them or none."""

    arrangement_ids: list[SlugId] = Field(min_length=1, max_length=MAX_CLOSE_BATCH)
    period_start: dt.date
    period_end: dt.date

    @field_validator("arrangement_ids")
    @classmethod
    def _each_once(cls, ids: list[str]) -> list[str]:
        repeated = sorted(a for a, times in Counter(ids).items() if times > 1)
        if repeated:
            raise ValueError(f"each arrangement may be listed once; repeated: {', '.join(repeated)}")
        return ids
