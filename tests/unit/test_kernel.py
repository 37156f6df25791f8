"""The stream kernel (shared/kernel.py) on a real SQLite database made by the Alembic migrations, without a
broker: records are handed to `apply_records` as if fetched, with the partition positions a rebalance would
load. A tiny fake process books care.logged events into a table of its own and can be told to fail; the real
BudgetService is used where its books say more (old books migrated, epoch replays)."""
from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from alembic.script import ScriptDirectory
import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY
from sqlalchemy import Column, Integer, MetaData, String, Table, inspect, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.budget import books as budget_books
from services.budget.domain import LoggedFacts, PotBook, apply_logged
from services.budget.service import BudgetService
from shared import topics
from shared.db import make_engine
from shared.events import (SCHEMA_VERSION, Attribution, CareLogged, CareVoided, DeadLettered, HoursSubmitted,
                           UnreadableEvent, parse_event, read_event)
from shared.kernel import Park, Position, Record, StreamKernel, Subscription, UnitOfWork
from shared.migrations import alembic_config, migrate
from shared.registry import RegistryCopy
from tests.unit.service_books import migrated_books, offline_kernel

HOST = "GM0984"
NOW = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
TP = TopicPartition(topics.CARE_LOGGED, 0)
FAKE = "fake"


# --- events and records --------------------------------------------------------------------------------

def logged(rid: str, minutes: int = 60) -> CareLogged:
    return CareLogged(event_id=f"logged:{rid}", registration_id=rid, school_id="focus", group_id="g1",
                      arrangement_id="arr", host_municipality=HOST, date=dt.date(2025, 3, 3), minutes=minutes,
                      task_category=2, funding=None, care_worker="cw", hourly_rate_cents=6500,
                      cost_cent_minutes=minutes * 6500, cost_cents=round(minutes * 6500 / 60), attributed_to="listed",
                      attributions=[Attribution(pupil_ref="p0", municipality=HOST)], accepted_at=NOW)


def voided(rid: str, minutes: int = 60) -> CareVoided:
    return CareVoided(event_id=f"voided:{rid}", registration_id=rid, school_id="focus", arrangement_id="arr",
                      date=dt.date(2025, 3, 3), minutes=minutes, cost_cent_minutes=minutes * 6500, reason="mistake",
                      voided_at=NOW)


def record(offset: int, value: bytes | CareLogged | CareVoided, partition: int = 0) -> Record:
    raw = value if isinstance(value, bytes) else value.to_bytes()
    return Record(topics.CARE_LOGGED, partition, offset, b"focus", raw)


def records(events: list[Any], start: int = 0) -> list[Record]:
    return [record(start + i, e) for i, e in enumerate(events)]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- a tiny process ------------------------------------------------------------------------------------

notes_metadata = MetaData()
notes = Table(  # what the fake process books: one row per event it applied
    "notes", notes_metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(100), nullable=False, unique=True),
    Column("registration_id", String(64), nullable=False),
    Column("kind", String(10), nullable=False),
)


@dataclass
class FakeBatch:
    known: set[str]  # registrations logged (stored or earlier in this batch)
    rows: list[dict[str, Any]] = field(default_factory=list)


class FakeProcess:
    """Books care.logged / care.voided into `notes`. A void of a registration it has not seen is parked.
    `broken`: event ids whose handler raises ValueError (a bug in the service); `failures`: how many times
    begin_batch raises `failure` before it works (a database hiccup, or a bug for the whole batch)."""

    name = FAKE

    def __init__(self) -> None:
        self.subscriptions = [Subscription(topics.CARE_LOGGED, handlers={CareLogged: self._logged,
                                                                         CareVoided: self._voided},
                                           provides={CareLogged: lambda e: e.registration_id})]
        self.broken: set[str] = set()
        self.failures = 0
        self.failure: Exception = OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))
        self.committed: list[list[str]] = []  # event ids per committed batch (after_commit)

    async def ready_for(self, events: list[Any]) -> None:
        pass

    async def begin_batch(self, uow: UnitOfWork, events: list[Any]) -> FakeBatch:
        if self.failures:
            self.failures -= 1
            raise self.failure
        rids = {e.registration_id for e in events}
        known = set((await uow.conn.execute(select(notes.c.registration_id).where(
            notes.c.kind == "logged", notes.c.registration_id.in_(rids)))).scalars())
        return FakeBatch(known)

    def _logged(self, batch: FakeBatch, event: CareLogged) -> None:
        if event.event_id in self.broken:
            raise ValueError(f"cannot book {event.event_id}")
        batch.known.add(event.registration_id)
        batch.rows.append({"event_id": event.event_id, "registration_id": event.registration_id, "kind": "logged"})

    def _voided(self, batch: FakeBatch, event: CareVoided) -> Park | None:
        if event.registration_id not in batch.known:
            return Park(event.registration_id)
        batch.rows.append({"event_id": event.event_id, "registration_id": event.registration_id, "kind": "voided"})
        return None

    async def end_batch(self, uow: UnitOfWork, batch: FakeBatch) -> None:
        if batch.rows:
            await uow.conn.execute(notes.insert(), batch.rows)

    def after_commit(self, batch: FakeBatch) -> None:
        self.committed.append([row["event_id"] for row in batch.rows])


async def fake_kernel(engine: AsyncEngine, epoch: str = "e1") -> StreamKernel:
    """A kernel over a FakeProcess, assigned partition 0 of care.logged at its recorded position."""
    kernel = offline_kernel(FakeProcess(), engine, notes_metadata)
    kernel.epoch = epoch
    await kernel.load_positions([TP])
    return kernel


@pytest.fixture()
async def engine(tmp_path: Path):
    engine = await migrated_books(tmp_path, "budget")
    async with engine.begin() as conn:
        await conn.run_sync(notes_metadata.create_all)
    yield engine
    await engine.dispose()


async def rows(engine: AsyncEngine, table: Table, *order: Any) -> list[Any]:
    async with engine.connect() as conn:
        return (await conn.execute(select(table).order_by(*order))).all()


async def noted(engine: AsyncEngine) -> list[str]:
    return [r.event_id for r in await rows(engine, notes, notes.c.seq)]


async def applied_ids(kernel: StreamKernel) -> set[str]:
    return {r.event_id for r in await rows(kernel.engine, kernel.tables.applied)}


async def stored_position(kernel: StreamKernel, tp: TopicPartition = TP) -> tuple[str, int] | None:
    p = kernel.tables.positions
    async with kernel.engine.connect() as conn:
        row = (await conn.execute(select(p.c.epoch, p.c.next_offset).where(
            p.c.topic == tp.topic, p.c.partition == tp.partition))).first()
    return (row.epoch, row.next_offset) if row else None


async def outbox_events(kernel: StreamKernel) -> list[tuple[str, Any]]:
    return [(r.topic, parse_event(r.value)) for r in await rows(kernel.engine, kernel.outbox, kernel.outbox.c.seq)]


# --- tolerant reader -----------------------------------------------------------------------------------

def submitted_doc() -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "event_id": "submitted:r-1", "type": "hours.submitted",
            "registration": {"registration_id": "r-1", "school_id": "focus", "group_id": "g1", "date": "2025-03-03",
                             "minutes": 60, "care_worker": "cw", "task_category": 4},
            "registry_version": 7, "received_at": "2025-03-03T09:00:00Z"}


def test_reader_ignores_unknown_fields_at_the_top_and_inside_the_registration() -> None:
    """Catches a reader that validates strictly (the HTTP models forbid extra fields): a producer adding an
    optional field must not turn every record into a dead letter for older consumers."""
    doc = submitted_doc()
    doc["trace_id"] = "abc"
    doc["registration"]["room"] = "B12"
    event = read_event(orjson.dumps(doc))
    assert isinstance(event, HoursSubmitted)
    assert (event.registration.registration_id, event.registration.minutes, event.registry_version) == ("r-1", 60, 7)
    assert not hasattr(event, "trace_id") and not hasattr(event.registration, "room")
    care = orjson.loads(logged("a").to_bytes()) | {"shift": "late"}
    assert read_event(orjson.dumps(care)) == logged("a")


def test_reader_refuses_a_newer_schema_version_naming_it() -> None:
    """Catches a reader that would guess at a breaking change it does not know: the record must become a
    dead letter saying which version to upgrade for."""
    doc = submitted_doc() | {"schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(UnreadableEvent, match=rf"'hours.submitted' schema_version {SCHEMA_VERSION + 1} is newer"):
        read_event(orjson.dumps(doc))


def test_reader_upcasts_an_older_version_through_the_registered_upcasters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches an upcaster chain that is skipped or applied to the wrong type/version: a version-1 care.logged
    whose minutes were called `duration` reads as the current version."""
    monkeypatch.setattr("shared.events.SCHEMA_VERSION", 2)
    old = orjson.loads(logged("a", minutes=45).to_bytes())
    old["schema_version"] = 1
    old["duration"] = old.pop("minutes")

    def rename(doc: dict[str, Any]) -> dict[str, Any]:
        doc = dict(doc)
        doc["minutes"] = doc.pop("duration")
        return doc

    event = read_event(orjson.dumps(old), upcasters={("care.logged", 1): rename})
    assert isinstance(event, CareLogged) and event.minutes == 45 and event.schema_version == 2
    with pytest.raises(UnreadableEvent, match="no upcaster for 'care.logged' from schema_version 1"):
        read_event(orjson.dumps(old), upcasters={("care.voided", 1): rename})


@pytest.mark.parametrize("raw, problem", [
    (b"\x00\xffnot json", "not JSON"),
    (b"[1, 2]", "not an event: a JSON list"),
    (orjson.dumps({"type": "care.logged", "event_id": "x"}), "'care.logged' does not validate"),
])
def test_reader_names_what_is_wrong_with_an_unreadable_record(raw: bytes, problem: str) -> None:
    """Catches a reader that lets JSON or pydantic errors escape (a crash instead of a dead letter) or that
    gives a reason an operator cannot act on."""
    with pytest.raises(UnreadableEvent, match=problem):
        read_event(raw)


# --- positions ----------------------------------------------------------------------------------------

async def test_apply_records_records_the_position_with_the_effects_and_skips_what_is_below_it(engine) -> None:
    """Catches a position kept apart from the effects (lost or doubled work after a crash) and a consumer
    that applies a redelivered record (offset below the position) a second time."""
    kernel = await fake_kernel(engine)
    assert kernel.positions[TP] == Position(None, None, 0)
    await kernel.apply_records(records([logged("a"), logged("b"), logged("c")]))
    assert await stored_position(kernel) == ("e1", 3)  # last offset 2, + 1
    assert kernel.positions[TP] == Position("e1", 3, 3)
    assert await noted(engine) == ["logged:a", "logged:b", "logged:c"]

    # A fetch that starts below the position (a redelivery after a rebalance): 1 and 2 are skipped, 3 applied.
    await kernel.apply_records(records([logged("b"), logged("c"), logged("d")], start=1))
    assert await noted(engine) == ["logged:a", "logged:b", "logged:c", "logged:d"]
    assert await stored_position(kernel) == ("e1", 4)
    assert kernel.process.committed == [["logged:a", "logged:b", "logged:c"], ["logged:d"]]

    # The same records under new event ids would be applied if the offset check were missing: they are not.
    await kernel.apply_records([record(0, logged("x")), record(3, logged("y"))])
    assert await noted(engine) == ["logged:a", "logged:b", "logged:c", "logged:d"]
    assert await stored_position(kernel) == ("e1", 4)

    # A fetch that starts above the position would skip records: nothing is applied, the position stays.
    await kernel.apply_records([record(6, logged("z"))])
    assert await stored_position(kernel) == ("e1", 4) and "logged:z" not in await noted(engine)

    # A restart reads the position back.
    again = await fake_kernel(engine)
    assert again.positions[TP] == Position("e1", 4, 4)


async def test_a_fenced_worker_applies_nothing_and_rereads_the_position(engine, tmp_path: Path) -> None:
    """Catches a compare-and-set that does not compare: a worker evicted from the group while it applied
    must not commit a batch its successor applies too (nor move the position backwards or past a gap)."""
    second_engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'budget.db'}")  # another worker, same book
    try:
        first, second = await fake_kernel(engine), await fake_kernel(second_engine)
        fenced = metric("zorgpot_fenced_batches_total", service=FAKE)

        # Both were assigned the fresh partition (no position row yet); the first commits offsets 0..4.
        batch = records([logged(f"r{i}") for i in range(5)])
        await first.apply_records(batch)
        await second.apply_records(batch)  # its first-position insert collides: fenced
        assert metric("zorgpot_fenced_batches_total", service=FAKE) == fenced + 1
        assert second.process.committed == []
        assert await noted(engine) == [f"logged:r{i}" for i in range(5)]
        assert await applied_ids(second) == {f"logged:r{i}" for i in range(5)}
        assert await stored_position(first) == ("e1", 5)
        assert second.positions[TP] == Position("e1", 5, 5) == first.positions[TP]

        # Both at the stored position 5 now. The first applies 5..7, the second fetched 5..9: 8 and 9 are new
        # to the books, yet the second must not apply them, for its position (5) is no longer the book's.
        more = records([logged(f"r{i}") for i in range(5, 10)], start=5)
        await first.apply_records(more[:3])
        await second.apply_records(more)
        assert metric("zorgpot_fenced_batches_total", service=FAKE) == fenced + 2
        assert second.process.committed == []
        assert await noted(engine) == [f"logged:r{i}" for i in range(8)]
        assert await applied_ids(first) == {f"logged:r{i}" for i in range(8)}
        assert await stored_position(first) == ("e1", 8)
        assert second.positions[TP] == Position("e1", 8, 8)  # read again: it continues where the books stop

        await second.apply_records(more)  # the same fetch again: 5..7 below the position, 8 and 9 applied
        assert await noted(engine) == [f"logged:r{i}" for i in range(10)]
        assert await stored_position(first) == ("e1", 10)
        assert second.process.committed == [["logged:r8", "logged:r9"]]
    finally:
        await second_engine.dispose()


async def test_a_position_of_an_older_broker_epoch_is_read_again_from_zero(tmp_path: Path) -> None:
    """Catches reusing an offset the broker has forgotten (a new broker numbers from 0 again, so offset 7 of
    the old life would skip seven records of the new one), and a commit that then inserts a second row
    instead of replacing the old one by compare-and-set."""
    engine = await migrated_books(tmp_path, "budget")
    try:
        service = BudgetService(engine, RegistryCopy(), None, lambda: None)
        old = offline_kernel(service, engine, budget_books.metadata)
        old.epoch = "old"
        await old.load_positions([TP])
        await old.apply_records(records([logged(f"r{i}", 10) for i in range(7)]))  # offsets 0..6
        assert await stored_position(old) == ("old", 7)

        kernel = offline_kernel(service, engine, budget_books.metadata)
        kernel.epoch = "new"
        await kernel.load_positions([TP])
        assert kernel.positions[TP] == Position("old", 7, 0)
        # The new broker's partition numbers from 0: r0 and r1 republished (deduplicated), then x at offset 2,
        # which offset 7 of the old life would have skipped.
        await kernel.apply_records(records([logged("r0", 10), logged("r1", 10), logged("x", 15)]))
        assert await stored_position(kernel) == ("new", 3)
        assert len(await rows(engine, kernel.tables.positions)) == 1
        ledger = await rows(engine, budget_books.ledger, budget_books.ledger.c.registration_id)
        assert [r.registration_id for r in ledger] == [f"r{i}" for i in range(7)] + ["x"]
        # Each registration once: 7 x 10 min x 6,500 = 455,000 plus x's 15 x 6,500 = 97,500 -> 552,500 cent-minutes.
        assert sum(r.cost_cent_minutes for r in ledger) == 552_500

        # The compare-and-set is against the old row as read: had it changed since, the commit is fenced.
        stale = offline_kernel(service, engine, budget_books.metadata)
        stale.epoch = "new"
        stale.positions[TP] = Position("old", 7, 0)
        await stale.apply_records(records([logged("r0", 10), logged("r1", 10), logged("x", 15), logged("y", 5)]))
        assert await stored_position(kernel) == ("new", 3)
        assert stale.positions[TP] == Position("new", 3, 3)
        assert "y" not in {r.registration_id for r in await rows(engine, budget_books.ledger)}
    finally:
        await engine.dispose()


# --- dead letters -------------------------------------------------------------------------------------

def _unvalidated_logged() -> bytes:
    doc = orjson.loads(logged("r-poison").to_bytes())
    doc["minutes"] = "lots"
    return orjson.dumps(doc)


@pytest.mark.parametrize("poison, subject, reason", [
    (b"{not json", None, "not JSON"),
    (_unvalidated_logged(), "r-poison", "'care.logged' does not validate: care.logged.minutes"),
])
async def test_an_unreadable_record_is_dead_lettered_and_the_rest_of_the_batch_applies(
        engine, poison: bytes, subject: str | None, reason: str) -> None:
    """Catches a poison record that blocks its partition (the whole batch retried forever), one that is
    skipped silently, and one that takes its valid neighbours down with it."""
    kernel = await fake_kernel(engine)
    counted = metric("zorgpot_deadletters_total", service=FAKE, topic=topics.CARE_LOGGED)
    events = [logged(f"r{i}") for i in range(10)]
    batch = records(events[:4]) + [record(4, poison)] + records(events[4:], start=5)
    await kernel.apply_records(batch)

    assert await noted(engine) == [e.event_id for e in events]
    assert await stored_position(kernel) == ("e1", 11)  # past the poison record
    assert kernel.process.committed == [[e.event_id for e in events]]  # one batch: not narrowed down
    letters = await kernel.deadletters()
    assert len(letters) == 1
    letter = letters[0]
    assert (letter["id"], letter["status"], letter["topic"], letter["partition"], letter["offset"], letter["epoch"],
            letter["subject"], letter["attempts"]) == ("fake-1", "open", topics.CARE_LOGGED, 0, 4, "e1", subject, 1)
    assert reason in letter["reason"]
    assert letter["value"].encode() == poison
    assert metric("zorgpot_deadletters_total", service=FAKE, topic=topics.CARE_LOGGED) == counted + 1
    (topic, announced), = await outbox_events(kernel)
    assert topic == topics.DEADLETTER and isinstance(announced, DeadLettered)
    assert (announced.deadletter_id, announced.service, announced.source_topic, announced.offset,
            announced.subject) == ("fake-1", FAKE, topics.CARE_LOGGED, 4, subject)
    assert reason in announced.reason
    if subject is not None:
        assert (await kernel.held(subject))["id"] == "fake-1"

    # The same bytes again (a republish): still one dead letter, counted once.
    await kernel.apply_records([record(11, poison)])
    assert len(await kernel.deadletters()) == 1 and len(await outbox_events(kernel)) == 1
    assert metric("zorgpot_deadletters_total", service=FAKE, topic=topics.CARE_LOGGED) == counted + 1


async def test_a_record_whose_handler_fails_is_narrowed_down_and_dead_lettered(engine) -> None:
    """Catches a permanent handler error that blocks the partition, or that dead-letters the whole batch
    instead of the one record: halving isolates it, the other nine apply."""
    kernel = await fake_kernel(engine)
    kernel.process.broken = {"logged:r6"}
    failures = metric("zorgpot_batch_failures_total", service=FAKE)
    events = [logged(f"r{i}") for i in range(10)]
    await kernel.apply_records(records(events))

    assert await noted(engine) == [e.event_id for e in events if e.event_id != "logged:r6"]
    assert await applied_ids(kernel) == {e.event_id for e in events} - {"logged:r6"}
    assert await stored_position(kernel) == ("e1", 10)
    letter, = await kernel.deadletters("open")
    assert (letter["offset"], letter["subject"], letter["status"]) == (6, "r6", "open")
    assert letter["reason"] == "ValueError: cannot book logged:r6"
    assert metric("zorgpot_batch_failures_total", service=FAKE) > failures  # it did fail, and was retried


async def test_a_transient_error_is_retried_not_dead_lettered(engine) -> None:
    """Catches a transient database error (locked, unreachable) classified as the record's fault: it would
    dead-letter good records. The same number of failures of a bug (ValueError) does dead-letter."""
    kernel = await fake_kernel(engine)
    kernel.retries = 2  # a permanent error gets 2 tries: 2 transient failures would be enough to give up
    failures = metric("zorgpot_batch_failures_total", service=FAKE)
    kernel.process.failures = 2
    await kernel.apply_records([record(0, logged("a"))])
    assert await noted(engine) == ["logged:a"]
    assert await kernel.deadletters() == []
    assert await stored_position(kernel) == ("e1", 1)
    assert metric("zorgpot_batch_failures_total", service=FAKE) == failures + 2

    kernel.process.failures, kernel.process.failure = 2, ValueError("a bug")
    await kernel.apply_records([record(1, logged("b"))])
    assert await noted(engine) == ["logged:a"]
    assert [(d["offset"], d["reason"]) for d in await kernel.deadletters()] == [(1, "ValueError: a bug")]
    assert await stored_position(kernel) == ("e1", 2)


async def test_retrying_a_dead_letter_after_the_fix_applies_it_once(engine) -> None:
    """Catches a retry that applies twice, that resolves a record still failing, or that loses the reason."""
    kernel = await fake_kernel(engine)
    process: FakeProcess = kernel.process
    process.broken = {"logged:r1", "logged:r2"}
    await kernel.apply_records(records([logged("r0"), logged("r1"), logged("r2"), logged("r3")]))
    assert await noted(engine) == ["logged:r0", "logged:r3"]
    letters = {d["subject"]: d for d in await kernel.deadletters("open")}
    assert {s: d["id"] for s, d in letters.items()} == {"r1": "fake-1", "r2": "fake-2"}

    process.broken = {"logged:r2"}  # r1's cause fixed, r2's not
    fixed = await kernel.retry_deadletter(1)
    assert (fixed["status"], fixed["attempts"]) == ("resolved", 2) and fixed["resolved_at"] is not None
    assert await noted(engine) == ["logged:r0", "logged:r3", "logged:r1"]
    assert "logged:r1" in await applied_ids(kernel)
    assert await stored_position(kernel) == ("e1", 4)  # untouched

    again = await kernel.retry_deadletter(1)
    assert again == fixed  # resolved: nothing is tried, nothing counted
    assert await noted(engine) == ["logged:r0", "logged:r3", "logged:r1"]

    still = await kernel.retry_deadletter(2)
    assert (still["status"], still["attempts"], still["resolved_at"]) == ("open", 2, None)
    assert still["reason"] == "ValueError: cannot book logged:r2"
    assert [d["id"] for d in await kernel.deadletters("open")] == ["fake-2"]
    assert "logged:r2" not in await noted(engine)
    assert await kernel.retry_deadletter(99) is None


async def test_a_retried_record_that_still_cannot_be_read_stays_open(engine) -> None:
    """Catches a retry that marks an unreadable record resolved (the care in it would be lost quietly)."""
    kernel = await fake_kernel(engine)
    await kernel.apply_records([record(0, b"{not json")])
    doc = await kernel.retry_deadletter(1)
    assert (doc["status"], doc["attempts"]) == ("open", 2) and doc["reason"].startswith("not JSON")


# --- parking ------------------------------------------------------------------------------------------

async def test_a_void_before_its_registration_is_parked_then_applied_once_right_after_it(engine) -> None:
    """Catches a void of a registration not yet seen being dropped or refused (the pot would keep the care),
    released more than once, or left behind in parked_events after its registration arrived."""
    kernel = await fake_kernel(engine)
    await kernel.apply_records([record(0, voided("a"))])
    assert await noted(engine) == []
    parked = await rows(engine, kernel.tables.parked)
    assert [(r.event_id, r.waits_for) for r in parked] == [("voided:a", "a")]
    assert await stored_position(kernel) == ("e1", 1)  # parked counts as handled: the position passes it
    assert await kernel.deadletters() == []
    assert metric("zorgpot_parked_events", service=FAKE) == 1

    # A restart in between: the kernel learns what is parked when it is assigned.
    kernel = await fake_kernel(engine)
    await kernel._load_parked_keys()
    await kernel.apply_records([record(1, logged("b")), record(2, logged("a")), record(3, logged("c"))])
    assert await noted(engine) == ["logged:b", "logged:a", "voided:a", "logged:c"]  # right after its registration
    assert await rows(engine, kernel.tables.parked) == []
    assert await applied_ids(kernel) == {"logged:a", "logged:b", "logged:c", "voided:a"}
    assert metric("zorgpot_parked_events", service=FAKE) == 0

    await kernel.apply_records([record(4, voided("a")), record(5, logged("a"))])  # a republish: no effect
    assert await noted(engine) == ["logged:b", "logged:a", "voided:a", "logged:c"]
    assert await rows(engine, kernel.tables.parked) == []


async def test_a_void_ahead_of_its_registration_in_the_same_batch_is_not_left_parked(engine) -> None:
    """Catches a void parked in the very batch that also brings its registration: nothing later provides the
    registration again (it is a duplicate from then on), so it would stay parked for good."""
    kernel = await fake_kernel(engine)
    await kernel.apply_records([record(0, voided("a")), record(1, logged("a"))])
    assert await noted(engine) == ["logged:a", "voided:a"]
    assert await rows(engine, kernel.tables.parked) == []
    assert await applied_ids(kernel) == {"logged:a", "voided:a"}
    assert metric("zorgpot_parked_events", service=FAKE) == 0


@pytest.mark.parametrize("second", [["logged", "voided"], ["voided", "logged"]])
async def test_a_parked_event_that_comes_again_with_its_registration_is_applied_once(engine, second) -> None:
    """Catches a released event applied a second time when its record is in the releasing batch too (a
    republish): the duplicate applied_events row would fail the batch, which then fails until halving
    splits it. Either order in the batch applies the void once, in one batch, and leaves nothing parked."""
    kernel = await fake_kernel(engine)
    await kernel.apply_records([record(0, voided("a"))])
    assert [r.event_id for r in await rows(engine, kernel.tables.parked)] == ["voided:a"]
    failures = metric("zorgpot_batch_failures_total", service=FAKE)
    await kernel.apply_records(records([{"logged": logged("a"), "voided": voided("a")}[kind] for kind in second],
                                       start=1))
    assert await noted(engine) == ["logged:a", "voided:a"]
    assert kernel.process.committed[1:] == [["logged:a", "voided:a"]]  # one batch, not split
    assert metric("zorgpot_batch_failures_total", service=FAKE) == failures
    assert await rows(engine, kernel.tables.parked) == []
    assert await applied_ids(kernel) == {"logged:a", "voided:a"}


# --- migrations ---------------------------------------------------------------------------------------

async def schema(engine: AsyncEngine) -> dict[str, Any]:
    def read(sync) -> dict[str, Any]:  # noqa: ANN001
        found = inspect(sync)
        return {name: ({c["name"]: (str(c["type"]), c["nullable"]) for c in found.get_columns(name)},
                       sorted(i["name"] for i in found.get_indexes(name)))
                for name in found.get_table_names()}

    async with engine.connect() as conn:
        return await conn.run_sync(read)


async def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    """Catches a revision that runs again on every start-up (creating a table twice fails; dropping and
    recreating one loses the books)."""
    engine = await migrated_books(tmp_path, "budget")
    try:
        before = await schema(engine)
        kernel = offline_kernel(BudgetService(engine, RegistryCopy(), None, lambda: None), engine,
                                budget_books.metadata)
        await kernel.apply_events(topics.CARE_LOGGED, [logged("a")])
        await migrate(engine, "services/budget/migrations")
        assert await schema(engine) == before
        async with engine.connect() as conn:
            head = ScriptDirectory.from_config(alembic_config("services/budget/migrations")).get_current_head()
            assert (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).scalars().all() == [head]
        assert await applied_ids(kernel) == {"logged:a"}
        assert [r.registration_id for r in await rows(engine, budget_books.ledger)] == ["a"]
    finally:
        await engine.dispose()


PRE_ALEMBIC_BUDGET = [  # the budget book as the last version before Alembic made it (create_all)
    "CREATE TABLE pots (arrangement_id VARCHAR(64) NOT NULL PRIMARY KEY, school_id VARCHAR(64) NOT NULL, "
    "book BLOB NOT NULL, alerts_emitted INTEGER NOT NULL)",
    "CREATE INDEX ix_pots_school_id ON pots (school_id)",
    "CREATE TABLE ledger (registration_id VARCHAR(64) NOT NULL PRIMARY KEY, arrangement_id VARCHAR(64) NOT NULL, "
    "cost_cent_minutes INTEGER NOT NULL, voided BOOLEAN NOT NULL, facts BLOB NOT NULL)",
    "CREATE INDEX ix_ledger_arrangement_id ON ledger (arrangement_id)",
    "CREATE TABLE applied_events (event_id VARCHAR(100) NOT NULL PRIMARY KEY, type VARCHAR(40) NOT NULL, "
    "applied_at DATETIME NOT NULL)",
    "CREATE TABLE outbox (seq INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, topic VARCHAR(100) NOT NULL, key BLOB, "
    "value BLOB NOT NULL, published BOOLEAN NOT NULL)",
    "CREATE INDEX ix_outbox_unpublished ON outbox (published, seq)",
    "CREATE TABLE relay_state (name VARCHAR(50) NOT NULL PRIMARY KEY, epoch VARCHAR(64) NOT NULL)",
    "CREATE TABLE registry_docs (kind VARCHAR(20) NOT NULL, key VARCHAR(200) NOT NULL, version INTEGER NOT NULL, "
    "doc BLOB NOT NULL, PRIMARY KEY (kind, key))",
]


async def test_a_budget_book_from_before_alembic_migrates_to_head_keeping_its_rows(tmp_path: Path) -> None:
    """Catches a baseline that recreates (empties) existing tables, misses the covering index older books
    lack, or leaves applied_events with its NOT NULL `type` column (every kernel insert would then fail)."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'budget.db'}")
    try:
        # The old book: registration a (30 min = 195,000 cent-minutes = 3,250 cents) booked on pot arr.
        facts = LoggedFacts.from_event(logged("a", 30))
        book = PotBook()
        apply_logged(book, logged("a", 30), facts=facts)
        assert book.spent_cent_minutes == 195_000
        async with engine.begin() as conn:
            for ddl in PRE_ALEMBIC_BUDGET:
                await conn.exec_driver_sql(ddl)
            old_book = {k: v for k, v in book.to_dict().items() if not k.endswith("_by_month")}
            old_book["format"] = 1  # books before budget years had no month totals
            await conn.exec_driver_sql("INSERT INTO pots VALUES ('arr', 'focus', ?, 0)", (orjson.dumps(old_book),))
            await conn.exec_driver_sql("INSERT INTO ledger VALUES ('a', 'arr', 195000, 0, ?)",
                                       (orjson.dumps(facts.to_dict()),))
            await conn.exec_driver_sql("INSERT INTO applied_events VALUES ('logged:a', 'care.logged', "
                                       "'2025-06-01 00:00:00.000000')")
            await conn.exec_driver_sql("INSERT INTO outbox (topic, key, value, published) VALUES "
                                       "('budget.alerts', 'arr', '{}', 1)")
            await conn.exec_driver_sql("INSERT INTO relay_state VALUES ('budget', 'epoch-1')")
            await conn.exec_driver_sql("INSERT INTO registry_docs VALUES ('school', 'focus', 3, '{}')")
        assert "ix_ledger_arrangement_live_cost" not in (await schema(engine))["ledger"][1]

        await migrate(engine, "services/budget/migrations")

        after = await schema(engine)
        assert "ix_ledger_arrangement_live_cost" in after["ledger"][1]
        assert {"consumer_positions", "parked_events", "deadletters", "alembic_version"} <= set(after)
        assert set(after["applied_events"][0]) == {"event_id", "applied_at"}
        async with engine.connect() as conn:
            counts = [(await conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}")).scalar()
                      for table in ("pots", "ledger", "applied_events", "outbox", "relay_state", "registry_docs")]
            assert counts == [1, 1, 1, 1, 1, 1]
            plan = " ".join(str(row[-1]) for row in await conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT arrangement_id, count(*), sum(cost_cent_minutes) FROM ledger "
                "WHERE voided = 0 AND arrangement_id IN ('a') GROUP BY arrangement_id"))
        assert "COVERING INDEX ix_ledger_arrangement_live_cost" in plan
        async with engine.connect() as conn:
            migrated = orjson.loads((await conn.exec_driver_sql("SELECT book FROM pots")).scalar())
        # Format 2, with the month totals rebuilt from the ledger: a's 30 minutes and 195,000 cent-minutes in
        # the month of its care date.
        month = facts.date.isoformat()[:7]
        assert (migrated["format"], migrated["minutes_by_month"], migrated["spent_cent_minutes_by_month"]) == \
            (2, {month: 30}, {month: 195_000})

        # The migrated book works under the kernel: the old applied id still deduplicates, a void reverses a.
        service = BudgetService(engine, RegistryCopy(), None, lambda: None)
        kernel = offline_kernel(service, engine, budget_books.metadata)
        assert await kernel.apply_events(topics.CARE_LOGGED, [logged("a", 30)]) is None  # applied before
        state = await kernel.apply_events(topics.CARE_LOGGED, [voided("a", 30)])
        assert state.changed == {"arr"}
        reconciliation = await service.reconciliation()
        # 195,000 - 195,000 = 0 cent-minutes left in the book; the ledger's live sum is 0 too.
        assert [(p["book_spent_cent_minutes"], p["ledger_cent_minutes"]) for p in reconciliation["pots"]] == [(0, 0)]
        assert await applied_ids(kernel) == {"logged:a", "voided:a"}
    finally:
        await engine.dispose()
