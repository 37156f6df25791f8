"""A settlement statement as a typed, versioned document (design.md sections 5 and 9).

The settlement domain builds every statement through `Statement` (so a missing or misspelt field fails the
close, not a reader later), the service stores it exactly as issued, and every reader goes through
`read_statement`, which upcasts older versions in memory; a stored statement is never rewritten.

Versions:
1. municipalities only: `municipality`, `municipality_name`.
2. funders (section 9): `funder`, `funder_kind`, `funder_name` on every statement; a statement to a funder
   other than a municipality has `municipality: null`, its `frameworks` and `contributions`; lines may carry
   `contribution_funder`, and framework care lines `date`, `minutes` and `pupils`.
3. lines carry what their `description` says, so a reader can put it in another language
   (services/settlement/describe.py): period care and absorbed lines `coverage_start` (absorbed lines
   `absorbed_from_name`), corrections `date` and `late_void`, contributions `contribution_label` and
   `contribution_funder_name`. The stored `description` stays the English text as issued. A version 2 statement
   reads as version 3 without these fields: its lines keep their issued description in every language.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict

STATEMENT_SCHEMA_VERSION = 3
LineKind = Literal["care", "absorbed", "correction", "education_contribution", "contribution"]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LineBasis(_Doc):
    unit: str
    value: str  # exact decimal as text


class StatementLine(_Doc):
    kind: LineKind
    description: str
    basis: LineBasis
    amount_cents: int
    exact_cents: str  # exact decimal as text, before rounding
    registration_id: str | None = None
    original_period_start: str | None = None
    original_period_end: str | None = None
    absorbed_from: str | None = None
    non_participating: bool = False
    contribution_funder: str | None = None
    date: str | None = None  # framework care and corrections: the registration's date
    minutes: str | None = None  # framework care: the registration's minutes and pupils
    pupils: list[str] | None = None
    # Version 3: what the description says (absent on lines of older statements).
    coverage_start: str | None = None  # period care and absorbed lines: the first day covered (to period_end)
    absorbed_from_name: str | None = None
    late_void: bool | None = None  # corrections: voided after close (else registered after close)
    contribution_label: str | None = None
    contribution_funder_name: str | None = None


class StatementBasis(_Doc):
    key: str
    unit: str
    period_days: int
    close_care_cost_cents: int
    close_corrections_cost_cents: int
    close_total_cents: int
    hourly_rates_cents: list[int]
    education_contribution_total_cents: int
    municipality_count: str | None = None
    total_count: str | None = None
    share: str | None = None
    participating_days: int | None = None


class BreakdownRow(_Doc):
    municipality: str
    municipality_name: str | None
    attributed_minutes: str
    cost_cents: int
    participating: bool


class ContributionUse(_Doc):
    position: int
    label: str | None
    amount_cents: int
    applied_cents: int  # used so far, this statement included
    this_statement_cents: int


class Statement(_Doc):
    schema_version: Literal[3]
    statement_id: str
    arrangement_id: str
    school_id: str
    school_name: str | None
    funder: str
    funder_kind: str  # "municipality" or a funder kind (shared.schemas.FUNDER_KINDS)
    funder_name: str | None
    funder_code: str | None = None
    municipality: str | None
    municipality_name: str | None
    host_municipality: str
    period_start: str
    period_end: str
    close_sequence: int
    issued_on: str
    key: str
    non_participating_policy: str
    currency: Literal["EUR"]
    lines: list[StatementLine]
    basis: StatementBasis
    education_contribution_cents: int
    contributions_deducted_cents: int | None = None  # municipalities: what the contributions paid of it
    total_cents: int
    non_participating: bool
    absorbed_from: list[str]
    breakdown: list[BreakdownRow] | None = None
    frameworks: list[str] | None = None
    contributions: list[ContributionUse] | None = None


def issue(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A statement document as issued now: checked against the current version, JSON-ready."""
    return Statement.model_validate(doc).model_dump(mode="json", exclude_unset=True)


def _upcast_1(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "schema_version": 2, "funder": doc["municipality"], "funder_kind": "municipality",
            "funder_name": doc.get("municipality_name")}


def _upcast_2(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "schema_version": 3}  # the new line fields stay absent: the issued descriptions stand


_UPCASTERS = {1: _upcast_1, 2: _upcast_2}


def read_statement(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored statement in the current version (older versions upcast in memory, figures untouched)."""
    current = dict(doc)
    version = int(current.get("schema_version", 1))
    if version > STATEMENT_SCHEMA_VERSION:
        raise ValueError(f"statement {current.get('statement_id')!r} has schema_version {version}; this code "
                         f"reads up to {STATEMENT_SCHEMA_VERSION}")
    while version < STATEMENT_SCHEMA_VERSION:
        current = _UPCASTERS[version](current)
        version = int(current["schema_version"])
    return issue(current)
