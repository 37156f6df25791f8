"""Every event that crosses a service boundary, defined once (design.md section 2).

Events are JSON (orjson) with `schema_version` and a `type` discriminator. `event_id` is deterministic
(derived from the registration id or the registry version), so a re-published event is recognisably the
same event and every consumer can deduplicate on it.
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Callable, Literal, Union

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.schemas import Registration

SCHEMA_VERSION = 1


class Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = SCHEMA_VERSION
    event_id: str

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True))


# --- registry.changes (gateway -> every service) -------------------------------------------------

class RegistryChanged(Event):
    """Full new state of one reference entity. `version` is the gateway's registry sequence (gap-free)."""

    type: Literal["registry.changed"] = "registry.changed"
    version: int
    kind: Literal["municipality", "school", "group", "pupil", "arrangement"]
    key: str  # "GM0984", "school", "school/group", "school/pupil_ref", "arrangement_id"
    doc: dict[str, Any]


# --- hours.submitted (gateway -> hours) ----------------------------------------------------------

class HoursSubmitted(Event):
    type: Literal["hours.submitted"] = "hours.submitted"
    registration: Registration
    # Registry version the gateway had when it accepted this; the hours service validates against a
    # registry copy at least this new, so "create group, then post hours" never races.
    registry_version: int
    received_at: dt.datetime


_DATETIME: TypeAdapter[dt.datetime] = TypeAdapter(dt.datetime)


def hours_submitted_encoder(registry_version: int, received_at: dt.datetime) -> Callable[[str, dict[str, Any]], bytes]:
    """`encode(event_id, registration_doc)` for one batch of registrations received together.

    The bytes are exactly `HoursSubmitted(event_id=event_id, registration=reg, registry_version=registry_version,
    received_at=received_at).to_bytes()` when `registration_doc` is `reg.model_dump(mode="json")`, but without
    building and dumping an event model per registration: the registration is validated already, and the
    envelope's fields (in `HoursSubmitted`'s field order) are the same for the whole batch. `received_at` is
    serialised once, by pydantic, as `to_bytes` would. tests/unit/test_gateway_intake.py compares the two.
    """
    received = _DATETIME.dump_python(received_at, mode="json")

    def encode(event_id: str, registration_doc: dict[str, Any]) -> bytes:
        return orjson.dumps({"schema_version": SCHEMA_VERSION, "event_id": event_id, "type": "hours.submitted",
                             "registration": registration_doc, "registry_version": registry_version,
                             "received_at": received})

    return encode


class VoidRequested(Event):
    type: Literal["hours.void_requested"] = "hours.void_requested"
    registration_id: str
    school_id: str
    reason: str
    registry_version: int
    received_at: dt.datetime


# --- care.logged (hours -> budget, settlement) ---------------------------------------------------

class Attribution(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    pupil_ref: str
    municipality: str  # residence on the care date


class CareLogged(Event):
    type: Literal["care.logged"] = "care.logged"
    registration_id: str
    school_id: str
    group_id: str
    arrangement_id: str
    host_municipality: str
    date: dt.date
    minutes: int
    task_category: int
    funding: str | None
    care_worker: str
    hourly_rate_cents: int
    cost_cent_minutes: int  # exact: minutes x hourly_rate_cents (= cost in cents x 60)
    cost_cents: int  # display only: cost_cent_minutes / 60 rounded half-up
    attributed_to: Literal["listed", "enrolled"]
    attributions: list[Attribution]
    accepted_at: dt.datetime


class CareVoided(Event):
    type: Literal["care.voided"] = "care.voided"
    registration_id: str
    school_id: str
    arrangement_id: str
    date: dt.date
    minutes: int
    cost_cent_minutes: int
    reason: str
    voided_at: dt.datetime


# --- hours.rejected --------------------------------------------------------------------------------

class HoursRejected(Event):
    type: Literal["hours.rejected"] = "hours.rejected"
    registration_id: str
    school_id: str
    reasons: list[str]
    rejected_at: dt.datetime


# --- budget.alerts ---------------------------------------------------------------------------------

class BudgetAlert(Event):
    type: Literal["budget.alert"] = "budget.alert"
    arrangement_id: str
    school_id: str
    level: Literal["warning", "exceeded"]
    threshold: float
    spent_cents: int
    cap_cents: int
    crossed_at: dt.datetime


# --- settlement.statements -------------------------------------------------------------------------

class StatementIssued(Event):
    type: Literal["statement.issued"] = "statement.issued"
    statement_id: str
    municipality: str
    arrangement_id: str
    period_start: dt.date
    period_end: dt.date
    total_cents: int
    statement: dict[str, Any]


AnyEvent = Annotated[
    Union[RegistryChanged, HoursSubmitted, VoidRequested, CareLogged, CareVoided, HoursRejected,
          BudgetAlert, StatementIssued],
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyEvent)


def parse_event(raw: bytes | str | dict[str, Any]) -> Any:
    """Decode any Zorgpot event by its `type`; raises pydantic.ValidationError on a malformed one."""
    data = raw if isinstance(raw, dict) else orjson.loads(raw)
    return _ADAPTER.validate_python(data)


def submission_event_id(registration_id: str) -> str:
    return f"submitted:{registration_id}"


def void_event_id(registration_id: str) -> str:
    return f"void:{registration_id}"
