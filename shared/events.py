"""Every event that crosses a service boundary, defined once (design.md section 2).

Events are JSON (orjson) with `schema_version` and a `type` discriminator. `event_id` is deterministic
(derived from the registration id or the registry version), so a re-published event is recognisably the
same event and every consumer can deduplicate on it.

Reading from Kafka is tolerant (`read_event`): unknown fields are ignored at every level (the nested
`Registration` forbids them on HTTP, not on the wire), so adding an optional field never breaks an older
consumer. `schema_version` counts *breaking* changes only: an older version is brought up to date by the
upcasters registered for it (`upcaster`), a newer one is refused (the record is dead-lettered until the
consumer is upgraded). HTTP input stays strict (shared/schemas.py).
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Callable, Literal, Union

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

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
    kind: Literal["municipality", "school", "group", "pupil", "arrangement", "funder", "calendar", "board", "norm"]
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
    # The framework funder the arrangement routes this care's funding law to (settlement.frameworks); None:
    # the municipalities pay it by the key. Resolved by the hours service so settlement only consumes facts.
    funder: str | None = None


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
    # Design.md section 11; optional, so alerts written before them still read as "threshold" alerts.
    # capacity_gap: `threshold` is the capacity_alert_ratio, the group got `delivered_minutes` of its
    # `planned_minutes` in the completed school week `week` ("2026-W07", starting `week_start`).
    # non_resident_share: `threshold` is the arrangement's non_resident_alert_share, `share` the pupil share reached.
    kind: Literal["threshold", "capacity_gap", "non_resident_share"] = "threshold"
    group_id: str | None = None
    week: str | None = None
    week_start: dt.date | None = None
    planned_minutes: int | None = None
    delivered_minutes: int | None = None
    share: float | None = None
    pupils: int | None = None
    non_resident_pupils: int | None = None


# --- settlement.statements -------------------------------------------------------------------------

class StatementIssued(Event):
    type: Literal["statement.issued"] = "statement.issued"
    statement_id: str
    municipality: str | None  # None: a statement to a funder other than a municipality
    arrangement_id: str
    period_start: dt.date
    period_end: dt.date
    total_cents: int
    statement: dict[str, Any]
    funder: str | None = None  # municipality code or funder id (absent in statements issued before funders)
    funder_kind: str = "municipality"


# --- arrangement.payments (gateway -> budget) ---------------------------------------------------------

class PaymentRecorded(Event):
    """A payment actually made to a pot's payee, recorded by the coordinator (design.md section 10). The
    gateway is the source; `event_id` is `payment:<payment_id>`."""

    type: Literal["payment.recorded"] = "payment.recorded"
    payment_id: str
    arrangement_id: str
    school_id: str
    date: dt.date
    amount_cents: int
    reference: str | None = None
    recorded_at: dt.datetime


# --- zorgpot.deadletter ----------------------------------------------------------------------------

class DeadLettered(Event):
    """A record a stream service could not read or apply after retries (shared/kernel.py). The service keeps
    it (GET /api/v1/deadletters) and applies it again on POST /api/v1/deadletters/{id}/retry."""

    type: Literal["deadletter.recorded"] = "deadletter.recorded"
    deadletter_id: str
    service: str
    source_topic: str
    partition: int
    offset: int
    reason: str
    subject: str | None = None  # the registration id the record is about, when it could be read
    value: str  # the record as text (replacement characters where it was not UTF-8)
    dead_lettered_at: dt.datetime


AnyEvent = Annotated[
    Union[RegistryChanged, HoursSubmitted, VoidRequested, CareLogged, CareVoided, HoursRejected,
          BudgetAlert, StatementIssued, PaymentRecorded, DeadLettered],
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyEvent)


def parse_event(raw: bytes | str | dict[str, Any]) -> Any:
    """Decode any Zorgpot event by its `type`, strictly; raises pydantic.ValidationError on a malformed one."""
    data = raw if isinstance(raw, dict) else orjson.loads(raw)
    return _ADAPTER.validate_python(data)


class UnreadableEvent(ValueError):
    """A record that is not an event this code can read; the message says why (it becomes the dead letter's
    reason)."""


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
# (event type, schema_version) -> the function that turns that version's document into the next version's.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register `f(doc) -> doc` bringing `event_type` documents of `from_version` to `from_version + 1`."""
    def register(f: Upcaster) -> Upcaster:
        UPCASTERS[(event_type, from_version)] = f
        return f
    return register


def read_event(raw: bytes, upcasters: dict[tuple[str, int], Upcaster] | None = None) -> Any:
    """The tolerant reader for records from Kafka: any Zorgpot event, older versions upcast, unknown fields
    ignored. Raises UnreadableEvent naming the problem."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UnreadableEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UnreadableEvent(f"not an event: a JSON {type(data).__name__}, not an object")
    version = data.get("schema_version", 1)
    kind = data.get("type")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UnreadableEvent(f"schema_version {version!r} is not a positive integer")
    if version > SCHEMA_VERSION:
        raise UnreadableEvent(f"{kind!r} schema_version {version} is newer than this service reads "
                              f"({SCHEMA_VERSION}): upgrade the service, then retry the dead letter")
    casts = UPCASTERS if upcasters is None else upcasters
    while version < SCHEMA_VERSION:
        step = casts.get((kind, version))
        if step is None:
            raise UnreadableEvent(f"no upcaster for {kind!r} from schema_version {version}")
        data = step(data)
        version += 1
        data["schema_version"] = version
    try:
        return _ADAPTER.validate_python(data, extra="ignore")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise UnreadableEvent(f"{kind!r} does not validate: {problems}") from None


def submission_event_id(registration_id: str) -> str:
    return f"submitted:{registration_id}"


def void_event_id(registration_id: str) -> str:
    return f"void:{registration_id}"


# --- budget.final_settlements (budget -> anyone) -------------------------------------------------------

class FinalSettlementIssued(Event):
    """A final settlement (afrekening, design.md section 10) issued to a pot's payee by the budget service, in
    the same transaction that stored it. `event_id` is `final-settlement:<final_settlement_id>`; `document` is
    the whole immutable document (services/budget/final_settlement.py)."""

    type: Literal["final_settlement.issued"] = "final_settlement.issued"
    final_settlement_id: str
    arrangement_id: str
    school_id: str
    version: int
    supersedes: str | None = None
    delivered_cents: int
    paid_cents: int
    balance_cents: int
    document: dict[str, Any]


# --- board.transfers (gateway -> budget) -------------------------------------------------------------

class CapTransferred(Event):
    """Cap moved between two pots of a school board (drawing rights, design.md section 11), recorded by the
    coordinator. The gateway is the source (it checked the board's cap and the source's spent) and publishes it
    in the transaction that stores the transfer; `event_id` is `transfer:<transfer_id>`. Each pot's effective
    cap is its arrangement's cap plus the transfers in minus the transfers out."""

    type: Literal["cap.transferred"] = "cap.transferred"
    transfer_id: str
    board_id: str
    from_arrangement: str
    to_arrangement: str
    amount_cents: int
    date: dt.date
    recorded_at: dt.datetime


# Every event type above, for parse_event and read_event (rebound here so that types appended later are readable).
AnyEvent = Annotated[  # type: ignore[no-redef]
    Union[RegistryChanged, HoursSubmitted, VoidRequested, CareLogged, CareVoided, HoursRejected,
          BudgetAlert, StatementIssued, PaymentRecorded, DeadLettered, FinalSettlementIssued, CapTransferred],
    Field(discriminator="type"),
]
_ADAPTER = TypeAdapter(AnyEvent)
