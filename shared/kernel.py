"""The process-application kernel every stream service plugs into (design.md section 7).

A service declares *what* it does with each event type; the kernel owns *how* records become applied effects:

    broker ──getmany──▶ [records of assigned partitions]
        │  skip offsets below the recorded position (already applied)
        │  tolerant read (shared.events.read_event): record -> event, or a dead letter
        │  dedupe on event id (applied_events), release parked events whose referent arrives
        ▼
    one transaction (UnitOfWork):
        process.begin_batch(uow, events)  -> the batch's state (bulk reads)
        handler(state, event)             -> applied, or Park(key): "what I refer to has not arrived"
        process.end_batch(uow, state)     -> the batch's writes (executemany)
        + applied event ids, parked events, dead letters, outbox rows
        + the consumer position (epoch, topic, partition, next offset), compare-and-set
    commit ──▶ process.after_commit(state); counters published

Positions live in the service's database, written with the effects, so after a crash, a rebalance or a
restart the consumer seeks to exactly where the books stop, never to Kafka's committed offsets (those are
only a lag hint) and never to "latest". The compare-and-set makes a fenced worker (evicted from the group
while it was applying) fail its commit instead of applying a batch its successor applies as well. A
position written under an older broker epoch (the embedded broker forgot everything) is never reused: the
partition is read again from 0 and deduplicated on event ids.

A batch that fails is retried with backoff; a failure that is not transient (database unreachable, a lock
timeout) is narrowed down by halving the batch, and the single record that still fails goes to the dead
letter table and topic with its reason, as does a record that cannot be read at all. Nothing is skipped
silently: every record below a committed position is applied, parked, or dead-lettered.

The kernel does no Faust: `shared/streams.py` runs it inside the Faust worker (lifecycle, views, timers).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import gc
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Generic, Iterable, Protocol, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import Gauge
from sqlalchemy import (Column, DateTime, Integer, LargeBinary, MetaData, String, Table, Text, delete, func,
                        select, update)
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import topics
from shared.db import driver_value, insert_rows, select_where_in
from shared.events import DeadLettered, Event, UnreadableEvent, read_event
from shared.outbox import OutgoingEvent, enqueue
from shared.stream_metrics import (BATCH_FAILURES, DEADLETTERS, EVENTS_PROCESSED, FENCED, PARKED, count,
                                    counted_on_commit)

log = logging.getLogger("zorgpot.kernel")

CONSUMER_LAG = Gauge("zorgpot_consumer_lag_messages",
                     "Records in an assigned partition after this worker's recorded position (high watermark "
                     "from fetch responses minus the position in the service's database)",
                     ("service", "topic", "partition"))
KAFKA_COMMIT_EVERY_S = 5.0
# Python's cyclic garbage collector runs a generation-0 pass every 700 allocations by default; a batch of 1,000
# events allocates hundreds of thousands of objects (pydantic models, rows), and each pass also walks what the
# worker keeps alive (registry copy, SQLAlchemy metadata). Memory is still reclaimed: reference counting frees
# almost everything at once, and the collector still runs, 30 times less often (docs/performance.md).
GC_THRESHOLDS = (20_000, 20, 50)


def tune_gc_for_batches() -> None:
    """Collect garbage in bigger steps (GC_THRESHOLDS); process-wide, so a worker calls it once at start."""
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_startup_objects() -> None:
    """Leave what start-up made (it lives as long as the worker) out of every later collection."""
    gc.collect()
    gc.freeze()  # Kafka's committed offsets are only a lag hint for outside tools

S = TypeVar("S")


# --- what a service declares ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Park:
    """A handler's answer for an event that refers to something not applied yet (a void before its
    registration): keep it, and apply it right after an event that `provides` `key`."""

    key: str


Handler = Callable[[Any, Any], "Park | None"]


@dataclass
class Subscription:
    """Per topic: a handler per event type, and which key an event of a type makes available to parked
    events (`provides`). Event types without a handler are dead-lettered, never skipped."""

    topic: str
    handlers: dict[type[Event], Handler]
    provides: dict[type[Event], Callable[[Any], str]] = field(default_factory=dict)


class Process(Protocol[S]):
    """A stream service as the kernel sees it. `begin_batch`/`end_batch` run inside the unit of work's
    transaction; handlers are plain functions over the batch state (no I/O); `ready_for` may wait outside
    the transaction (the hours service waits for the registry version its events need)."""

    name: str
    subscriptions: list[Subscription]

    async def ready_for(self, events: list[Event]) -> None: ...

    async def begin_batch(self, uow: "UnitOfWork", events: list[Event]) -> S: ...

    async def end_batch(self, uow: "UnitOfWork", state: S) -> None: ...

    def after_commit(self, state: S) -> None: ...


# --- the kernel's own tables ---------------------------------------------------------------------------

def kernel_tables(metadata: MetaData) -> "KernelTables":
    """The tables the kernel keeps in every stream service's database (their migrations create them)."""
    return KernelTables(
        applied=Table(
            "applied_events", metadata,
            Column("event_id", String(100), primary_key=True),
            Column("applied_at", DateTime(timezone=True), nullable=False),
        ),
        positions=Table(
            "consumer_positions", metadata,
            Column("topic", String(100), primary_key=True),
            Column("partition", Integer, primary_key=True, autoincrement=False),
            Column("epoch", String(64), nullable=False),
            Column("next_offset", Integer, nullable=False),
        ),
        parked=Table(
            "parked_events", metadata,
            Column("event_id", String(100), primary_key=True),
            Column("waits_for", String(200), nullable=False, index=True),
            Column("topic", String(100), nullable=False),
            Column("value", LargeBinary, nullable=False),
            Column("parked_at", DateTime(timezone=True), nullable=False),
        ),
        deadletters=Table(
            "deadletters", metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("topic", String(100), nullable=False),
            Column("partition", Integer, nullable=False),
            Column("offset", Integer, nullable=False),
            Column("epoch", String(64), nullable=False),
            Column("key", LargeBinary, nullable=True),
            Column("value", LargeBinary, nullable=False),
            Column("value_sha256", String(64), nullable=False, index=True),
            Column("event_id", String(100), nullable=True),
            Column("subject", String(200), nullable=True, index=True),  # e.g. the registration id, if readable
            Column("reason", Text, nullable=False),
            Column("status", String(10), nullable=False),  # open | resolved
            Column("attempts", Integer, nullable=False),
            Column("created_at", DateTime(timezone=True), nullable=False),
            Column("resolved_at", DateTime(timezone=True), nullable=True),
        ),
    )


@dataclass(frozen=True)
class KernelTables:
    applied: Table
    positions: Table
    parked: Table
    deadletters: Table


# --- the unit of work ----------------------------------------------------------------------------------

class UnitOfWork:
    """One transaction: the handlers' effects plus what the kernel records beside them. Handlers and the
    service's batch hooks emit follow-up events with `emit`; they reach the outbox in the same commit."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.outgoing: list[OutgoingEvent] = []

    def emit(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.outgoing.append(OutgoingEvent(topic, key, value))


class Fenced(RuntimeError):
    """The recorded position moved under us: another worker owns the partition now. Nothing was applied."""


@dataclass
class Position:
    """What this worker knows of one partition: the row as last read or written (for the compare-and-set)
    and the offset it reads from next."""

    stored_epoch: str | None
    stored_offset: int | None
    read_from: int


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass
class _Decoded:
    record: Record
    event: Event | None = None
    problem: str | None = None  # why it cannot be read: a dead letter


def is_transient(exc: BaseException) -> bool:
    """Errors that say nothing about the records: retry the same batch for as long as they last."""
    if isinstance(exc, (OSError, ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        state = str(getattr(exc.orig, "sqlstate", "") or getattr(exc.orig, "pgcode", "") or "")
        return state[:2] in ("08", "40", "53", "57")  # connection, rollback/deadlock, resources, shutdown
    return False


def _identity_of(value: bytes) -> tuple[str | None, str | None]:
    """(event id, registration id) of a record, as far as the record is JSON enough to say."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(data, dict):
        return None, None

    def text(holder: Any, name: str, longest: int) -> str | None:
        found = holder.get(name) if isinstance(holder, dict) else None
        return found if isinstance(found, str) and len(found) <= longest else None

    return (text(data, "event_id", 100),
            text(data, "registration_id", 200) or text(data.get("registration"), "registration_id", 200))


class StreamKernel(Generic[S]):
    """Consumes a process's topics with one aiokafka consumer group and applies them in batches."""

    def __init__(self, process: Process[S], engine: AsyncEngine, tables: KernelTables, outbox: Table, *,
                 bootstrap: str, group_id: str, batch_max: int = 1000, fetch_wait_ms: int = 500,
                 consumer_options: dict[str, Any] | None = None, wake_relay: Callable[[], None] = lambda: None,
                 current_epoch: Callable[[], Awaitable[str]] | None = None, retries: int = 3,
                 backoff_s: float = 0.1, max_backoff_s: float = 10.0, commit_delay_s: float = 0.0) -> None:
        self.process = process
        self.name = process.name
        self.engine = engine
        self.tables = tables
        self.outbox = outbox
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.batch_max = batch_max
        self.fetch_wait_ms = fetch_wait_ms
        self.consumer_options = consumer_options or {}
        self.wake_relay = wake_relay
        self._current_epoch = current_epoch
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        # Fault tests only (ZORGPOT_KERNEL_COMMIT_DELAY_MS): hold each batch's transaction open this long before
        # its commit, so a SIGKILL timed by progress can land inside it. 0 in every real deployment.
        self.commit_delay_s = commit_delay_s
        self.in_transaction = False  # a batch's transaction is open (its effects written, not committed)
        self.applied_records = 0  # records committed by this worker since it started (progress for tests)
        self.subscriptions = {s.topic: s for s in process.subscriptions}
        self.epoch: str | None = None
        self.positions: dict[TopicPartition, Position] = {}
        self.consumer: AIOKafkaConsumer | None = None
        # Held while a batch (or a dead-letter retry) is applied; a revoke waits for it (rebalance listener).
        self.in_flight = asyncio.Lock()
        self._parked_keys: set[str] = set()
        self._newly_parked: set[str] = set()
        self._parked_count = 0  # rows in parked_events as of the last commit that parked or released any
        self._gaps: dict[TopicPartition, tuple[int, int]] = {}  # partition -> (position, times a fetch skipped it)
        self._lag_labels: set[tuple[str, str, str]] = set()  # the lag series this kernel published
        self._stopping = False
        self._last_kafka_commit = 0.0

    # -- lifecycle ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume until `stop()`; a broken session (broker gone) is started afresh."""
        from shared.kafka import reconnecting

        await reconnecting(f"{self.name} consumer", self._session, lambda: self._stopping)

    async def stop(self) -> None:
        self._stopping = True
        async with self.in_flight:  # let the batch being applied commit
            pass
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            from shared.kafka import stop_quietly
            await stop_quietly(consumer.stop())

    def assignment(self) -> list[TopicPartition]:
        return sorted(self.positions, key=lambda tp: (tp.topic, tp.partition))

    async def _session(self) -> None:
        if self._current_epoch is not None:
            self.epoch = await self._current_epoch()
        else:
            self.epoch = self.epoch or "static"
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest",  # only ever used below a recorded position: skipped, never lost
            fetch_max_wait_ms=self.fetch_wait_ms, max_poll_records=self.batch_max,
            max_partition_fetch_bytes=4 * 1024 * 1024, **self.consumer_options)
        await consumer.start()
        self.consumer = consumer
        try:
            consumer.subscribe(sorted(self.subscriptions), listener=_Listener(self))
            while not self._stopping:
                batch = await consumer.getmany(timeout_ms=1000, max_records=self.batch_max)
                if batch:
                    await self.apply_fetched(batch)
                self._publish_lag()
                await self._hint_kafka_commit()
        finally:
            self.positions.clear()
            self.consumer = None
            from shared.kafka import stop_quietly
            await stop_quietly(consumer.stop())

    # -- rebalancing ----------------------------------------------------------------------------------
    async def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self.in_flight:  # the in-flight transaction finishes (or fails) before we let go
            for tp in revoked:
                self.positions.pop(tp, None)

    async def on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = list(assigned)
        async with self.in_flight:
            await self.load_positions(assigned, check_epoch=True)
            await self._load_parked_keys()
            if self.consumer is not None:
                for tp in assigned:
                    self.consumer.seek(tp, self.positions[tp].read_from)
        log.info("%s: assigned %s", self.name,
                 ", ".join(f"{tp.topic}:{tp.partition}@{self.positions[tp].read_from}" for tp in assigned) or "nothing")

    async def load_positions(self, assigned: list[TopicPartition], *, check_epoch: bool = False) -> None:
        """Read the recorded positions; a position of an older broker epoch is not reused (read from 0).

        `check_epoch` (on every assignment) reads the broker's epoch afresh first: a restarted broker makes the
        group rejoin, and this is where its new epoch must be noticed, whatever the worker's watchdog saw. When
        the epoch cannot be read, no recorded position is trusted: every partition is read from 0 (applied
        events are deduplicated), which is slow but never skips."""
        trusted = True
        if check_epoch and self._current_epoch is not None:
            try:
                self.epoch = await self._current_epoch()
            except Exception as exc:  # noqa: BLE001 - broker unreachable: distrust the positions instead
                log.warning("%s: broker epoch unreadable on assignment (%r): reading from 0", self.name, exc)
                trusted = False
        p = self.tables.positions
        async with self.engine.connect() as conn:
            rows = {(r.topic, r.partition): r for r in (await conn.execute(
                select(p.c.topic, p.c.partition, p.c.epoch, p.c.next_offset)
                .where(p.c.topic.in_({tp.topic for tp in assigned})))).all()}
        for tp in assigned:
            row = rows.get((tp.topic, tp.partition))
            if row is None:
                self.positions[tp] = Position(None, None, 0)
            elif row.epoch == self.epoch and trusted:
                self.positions[tp] = Position(row.epoch, row.next_offset, row.next_offset)
            else:
                log.warning("%s: %s:%d was recorded at %d under broker epoch %s; the broker is now %s: "
                            "reading it again from 0", self.name, tp.topic, tp.partition, row.next_offset,
                            row.epoch, self.epoch)
                self.positions[tp] = Position(row.epoch, row.next_offset, 0)

    async def _load_parked_keys(self) -> None:
        async with self.engine.connect() as conn:
            waits_for = list((await conn.execute(select(self.tables.parked.c.waits_for))).scalars())
        self._parked_keys, self._parked_count = set(waits_for), len(waits_for)
        PARKED.labels(self.name).set(self._parked_count)

    # -- applying -------------------------------------------------------------------------------------
    async def apply_fetched(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Apply what one getmany returned (aiokafka ConsumerRecords), partition order kept."""
        records: list[Record] = []
        for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
            records.extend(Record(r.topic, r.partition, r.offset, r.key, r.value) for r in batch[tp])
        await self.apply_records(records)

    async def apply_records(self, records: list[Record]) -> None:
        async with self.in_flight:
            records = self._continuous(records)
            if records:
                await self._apply_with_retries(records)

    def _continuous(self, records: list[Record]) -> list[Record]:
        """Drop what is not ours to apply: partitions no longer assigned, offsets below the position
        (applied already). A first offset above the position would skip records: re-seek instead."""
        keep: list[Record] = []
        gap: set[TopicPartition] = set()
        started: set[TopicPartition] = set()  # partitions with a record kept already
        for record in records:
            tp = record.tp
            position = self.positions.get(tp)
            if position is None or tp in gap:
                continue
            if record.offset < position.read_from:
                continue
            if record.offset > position.read_from and tp not in started:
                seen = self._gaps.get(tp, (position.read_from, 0))
                tries = seen[1] + 1 if seen[0] == position.read_from else 1
                self._gaps[tp] = (position.read_from, tries)
                if tries <= 3:
                    log.warning("%s: %s:%d fetched from %d but the books stop at %d: seeking back", self.name,
                                tp.topic, tp.partition, record.offset, position.read_from)
                    gap.add(tp)
                    if self.consumer is not None:
                        self.consumer.seek(tp, position.read_from)
                    continue
                # Those offsets hold no record this consumer can see: a transaction marker, offsets a broker
                # skipped, or records deleted by retention (fact topics keep everything, so that would be a
                # misconfigured topic). Seeking again cannot bring them; say so and go on.
                log.error("%s: %s:%d has no readable records at offsets %d..%d (transaction markers, skipped "
                          "offsets or retention); going on at %d", self.name, tp.topic, tp.partition,
                          position.read_from, record.offset - 1, record.offset)
            started.add(tp)
            keep.append(record)
        return keep

    async def _apply_with_retries(self, records: list[Record]) -> None:
        delay, attempt = self.backoff_s, 0
        while True:
            try:
                await self._apply(records)
                return
            except asyncio.CancelledError:
                raise
            except Fenced as exc:
                FENCED.labels(self.name).inc()
                log.warning("%s: %s; nothing applied, positions read again", self.name, exc)
                await self.load_positions(list({r.tp for r in records} & set(self.positions)))
                if self.consumer is not None:
                    for tp in {r.tp for r in records} & set(self.positions):
                        self.consumer.seek(tp, self.positions[tp].read_from)
                return
            except Exception as exc:  # noqa: BLE001 - classified below; never skipped
                BATCH_FAILURES.labels(self.name).inc()
                attempt += 1
                transient = is_transient(exc)
                if transient or attempt < self.retries:
                    log.warning("%s: a batch of %d records failed (%s: %s); retry %d in %.1fs", self.name,
                                len(records), type(exc).__name__, exc, attempt, delay, exc_info=not transient)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff_s)
                    continue
                if len(records) == 1:
                    log.error("%s: %s:%d@%d fails permanently (%s: %s): dead-lettered", self.name,
                              records[0].topic, records[0].partition, records[0].offset, type(exc).__name__, exc)
                    await self._apply(records, dead={0: f"{type(exc).__name__}: {exc}"})
                    return
                half = len(records) // 2  # narrow it down: the records that do apply, apply
                await self._apply_with_retries(records[:half])
                await self._apply_with_retries(self._continuous(records[half:]))
                return

    async def _apply(self, records: list[Record], dead: dict[int, str] | None = None) -> None:
        """One transaction for `records`; `dead` names records (by index) to dead-letter without applying."""
        decoded = [self._decode(r) for r in records]
        for index, reason in (dead or {}).items():
            decoded[index] = _Decoded(records[index], problem=reason)
        items = [_Item(d.event, d.record.topic, d.record) for d in decoded if d.event is not None]
        if items:  # outside the transaction: it may wait (the hours service waits for the registry)
            await self.process.ready_for([item.event for item in items])
        now = dt.datetime.now(dt.timezone.utc)
        with counted_on_commit():
            async with self.engine.begin() as conn:
                uow = UnitOfWork(conn)
                state = await self._apply_events(uow, items, now)
                for d in decoded:
                    if d.problem is not None:
                        await self._dead_letter(conn, uow, d, now)
                await self._advance(conn, records)
                await enqueue(conn, self.outbox, uow.outgoing)
                if self.commit_delay_s:
                    self.in_transaction = True
                    try:
                        await asyncio.sleep(self.commit_delay_s)
                    finally:
                        self.in_transaction = False
        self.applied_records += len(records)
        self._committed(records, uow, state)

    async def _apply_events(self, uow: UnitOfWork, items: list["_Item"], now: dt.datetime) -> Any:
        """Inside the transaction: dedupe, release parked events, run the process over what is fresh.
        Returns the batch state (None when nothing was fresh)."""
        conn, t = uow.conn, self.tables
        applied: set[str] = set()
        ids = list({item.event.event_id for item in items})
        if ids:
            applied = {row[0] for row in await select_where_in(conn, (t.applied.c.event_id,), t.applied.c.event_id, ids)}
        fresh: list[_Item] = []
        for item in items:
            if item.event.event_id in applied:
                count(EVENTS_PROCESSED, self.name, "duplicate")
                continue
            applied.add(item.event.event_id)
            fresh.append(item)
        fresh = await self._with_released(conn, fresh)
        if not fresh:
            return None
        state = await self.process.begin_batch(uow, [item.event for item in fresh])
        applied_rows, parked, released = [], [], []
        done: set[str] = set()  # applied in this batch: a released event that came again as a record, once
        waiting: dict[str, list[_Item]] = {}  # parked earlier in this very batch, by the key they wait for
        stamp = driver_value(conn, t.applied.c.applied_at, now)
        pending = fresh[::-1]
        while pending:
            item = pending.pop()
            if item.event.event_id in done:
                if item.record is None:
                    released.append(item.event.event_id)
                continue
            outcome = self.subscriptions[item.topic].handlers[type(item.event)](state, item.event)
            if isinstance(outcome, Park):
                if item.record is not None:  # a released event that still waits simply stays parked
                    parked.append((item, outcome.key))
                    waiting.setdefault(outcome.key, []).append(item)
                continue
            if item.record is None:
                released.append(item.event.event_id)
            applied_rows.append((item.event.event_id, stamp))
            done.add(item.event.event_id)
            provides = self.subscriptions[item.topic].provides.get(type(item.event))
            waiters = waiting.pop(provides(item.event), []) if provides is not None else []
            if waiters:  # what this batch parked ahead of this event: apply it right after it, not never
                parked = [(p, key) for p, key in parked if all(p is not w for w in waiters)]
                pending.extend(waiters[::-1])
        await self.process.end_batch(uow, state)
        await insert_rows(conn, t.applied, ("event_id", "applied_at"), applied_rows)
        await self._park(conn, parked, now)
        if released:
            await conn.execute(delete(t.parked).where(t.parked.c.event_id.in_(released)))
        if parked or released:  # the gauge counts events kept, and goes down again when they are released
            self._parked_count = (await conn.execute(select(func.count()).select_from(t.parked))).scalar_one()
        return state

    def _committed(self, records: list[Record], uow: UnitOfWork, state: Any) -> None:
        """After a commit: positions and parked keys in memory follow the database; the relay is woken."""
        for r in records:
            position = self.positions.get(r.tp)
            if position is not None:
                position.stored_epoch, position.stored_offset = self.epoch, r.offset + 1
                position.read_from = r.offset + 1
        if self._newly_parked:
            self._parked_keys |= self._newly_parked
            self._newly_parked = set()
        PARKED.labels(self.name).set(self._parked_count)
        if uow.outgoing:
            self.wake_relay()
        if state is not None:
            self.process.after_commit(state)

    def _decode(self, record: Record) -> _Decoded:
        if record.topic not in self.subscriptions:
            return _Decoded(record, problem=f"topic {record.topic!r} has no subscription in {self.name}")
        try:
            event = read_event(record.value)
        except UnreadableEvent as exc:
            return _Decoded(record, problem=str(exc))
        if type(event) not in self.subscriptions[record.topic].handlers:
            return _Decoded(record, problem=f"{self.name} has no handler for {event.type!r} on {record.topic}")
        return _Decoded(record, event=event)

    async def _with_released(self, conn: AsyncConnection, fresh: list["_Item"]) -> list["_Item"]:
        """Insert, right after each event that provides a key parked events wait for, those events."""
        if not self._parked_keys:
            return fresh
        wanted: dict[str, int] = {}
        for i, item in enumerate(fresh):
            provides = self.subscriptions[item.topic].provides.get(type(item.event))
            if provides is not None and provides(item.event) in self._parked_keys:
                wanted.setdefault(provides(item.event), i)
        if not wanted:
            return fresh
        p = self.tables.parked
        rows = (await conn.execute(select(p.c.waits_for, p.c.topic, p.c.value).where(p.c.waits_for.in_(list(wanted)))
                                   .order_by(p.c.parked_at, p.c.event_id))).all()
        after: dict[int, list[_Item]] = {}
        for row in rows:
            after.setdefault(wanted[row.waits_for], []).append(_Item(read_event(row.value), row.topic, None))
        out: list[_Item] = []
        for i, item in enumerate(fresh):
            out.append(item)
            out.extend(after.get(i, []))
        return out

    async def _park(self, conn: AsyncConnection, parked: list[tuple["_Item", str]], now: dt.datetime) -> None:
        if not parked:
            return
        p = self.tables.parked
        exists = set((await conn.execute(select(p.c.event_id).where(
            p.c.event_id.in_([item.event.event_id for item, _ in parked])))).scalars())
        stamp = driver_value(conn, p.c.parked_at, now)
        rows = [(item.event.event_id, key, item.topic, item.record.value, stamp)
                for item, key in parked if item.event.event_id not in exists]
        await insert_rows(conn, p, ("event_id", "waits_for", "topic", "value", "parked_at"), rows)
        for item, key in parked:
            log.warning("%s: %s parked until %s arrives (%s:%d@%d)", self.name, item.event.event_id, key,
                        item.topic, item.record.partition, item.record.offset)
            count(EVENTS_PROCESSED, self.name, "parked")
        self._newly_parked |= {key for _, key in parked}

    async def _dead_letter(self, conn: AsyncConnection, uow: UnitOfWork, d: _Decoded, now: dt.datetime) -> None:
        r, t = d.record, self.tables.deadletters
        digest = hashlib.sha256(r.value).hexdigest()
        existing = (await conn.execute(select(t.c.id).where(t.c.value_sha256 == digest, t.c.topic == r.topic,
                                                           t.c.status == "open"))).scalar_one_or_none()
        if existing is not None:  # the same record again (a republish after a broker reset): one dead letter
            return
        event_id, subject = _identity_of(r.value)
        if d.event is not None:
            event_id = d.event.event_id
        result = await conn.execute(t.insert().values(
            topic=r.topic, partition=r.partition, offset=r.offset, epoch=self.epoch or "", key=r.key, value=r.value,
            value_sha256=digest, event_id=event_id, subject=subject, reason=d.problem[:2000],
            status="open", attempts=1, created_at=now))
        deadletter_id = f"{self.name}-{result.inserted_primary_key[0]}"
        uow.emit(topics.DEADLETTER, self.name.encode(), DeadLettered(
            event_id=f"deadletter:{deadletter_id}", deadletter_id=deadletter_id, service=self.name,
            source_topic=r.topic, partition=r.partition, offset=r.offset, reason=d.problem[:2000],
            subject=subject, value=r.value.decode("utf-8", "replace")[:100_000],
            dead_lettered_at=now).to_bytes())
        count(DEADLETTERS, self.name, r.topic)

    async def _advance(self, conn: AsyncConnection, records: list[Record]) -> None:
        """Compare-and-set each partition's position to just after its last record in this batch."""
        p = self.tables.positions
        last: dict[TopicPartition, int] = {}
        for r in records:
            last[r.tp] = r.offset + 1
        for tp, next_offset in sorted(last.items(), key=lambda item: (item[0].topic, item[0].partition)):
            position = self.positions.get(tp)
            if position is None:
                raise Fenced(f"{tp.topic}:{tp.partition} is no longer assigned to this worker")
            if position.stored_epoch is None:
                try:
                    async with conn.begin_nested():
                        await conn.execute(p.insert().values(topic=tp.topic, partition=tp.partition,
                                                             epoch=self.epoch, next_offset=next_offset))
                except sa_exc.IntegrityError:
                    raise Fenced(f"{tp.topic}:{tp.partition}: another worker recorded a first position") from None
            else:
                result = await conn.execute(
                    update(p).where(p.c.topic == tp.topic, p.c.partition == tp.partition,
                                    p.c.epoch == position.stored_epoch, p.c.next_offset == position.stored_offset)
                    .values(epoch=self.epoch, next_offset=next_offset))
                if result.rowcount != 1:
                    raise Fenced(f"{tp.topic}:{tp.partition} moved past {position.stored_offset} "
                                 f"(epoch {position.stored_epoch}) under another worker")

    async def apply_events(self, topic: str, events: list[Event]) -> Any:
        """Apply `events` in one unit of work as if consumed from `topic`, but with no position: for the
        service-layer tests and tools that feed a service without Kafka. Returns the batch state (None when
        every event was applied before)."""
        async with self.in_flight:
            return await self._apply_unpositioned(
                [_Item(e, topic, Record(topic, -1, -1, None, e.to_bytes())) for e in events])

    async def _apply_unpositioned(self, items: list["_Item"]) -> Any:
        """One unit of work for `items` that moves no position (caller holds `in_flight`); the batch state."""
        if items:
            await self.process.ready_for([item.event for item in items])
        now = dt.datetime.now(dt.timezone.utc)
        with counted_on_commit():
            async with self.engine.begin() as conn:
                uow = UnitOfWork(conn)
                state = await self._apply_events(uow, items, now)
                await enqueue(conn, self.outbox, uow.outgoing)
        self._committed([], uow, state)
        return state

    # -- dead letters ---------------------------------------------------------------------------------
    async def deadletters(self, status: str | None = None) -> list[dict[str, Any]]:
        t = self.tables.deadletters
        query = select(t).order_by(t.c.id)
        if status:
            query = query.where(t.c.status == status)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [self._deadletter_doc(row) for row in rows]

    def _deadletter_doc(self, row: Any) -> dict[str, Any]:
        return {"id": f"{self.name}-{row.id}", "service": self.name, "topic": row.topic,
                "partition": row.partition, "offset": row.offset, "epoch": row.epoch, "event_id": row.event_id,
                "subject": row.subject, "reason": row.reason, "status": row.status, "attempts": row.attempts,
                "created_at": row.created_at.isoformat(),
                "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
                "value": row.value.decode("utf-8", "replace")}

    async def held(self, subject: str) -> dict[str, Any] | None:
        """The open dead letter about `subject` (a registration id), if any."""
        t = self.tables.deadletters
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(t).where(t.c.subject == subject, t.c.status == "open")
                                      .order_by(t.c.id.desc()).limit(1))).first()
        return self._deadletter_doc(row) if row is not None else None

    async def retry_deadletter(self, number: int) -> dict[str, Any] | None:
        """Apply a dead-lettered record again (after its cause was fixed). Applied at most once (event id);
        the position is not touched (it is past the record already). Returns the dead letter as it is now,
        None when there is no such dead letter."""
        t = self.tables.deadletters
        async with self.in_flight:
            async with self.engine.connect() as conn:
                row = (await conn.execute(select(t).where(t.c.id == number))).first()
            if row is None:
                return None
            if row.status == "open":
                record = Record(row.topic, row.partition, row.offset, row.key, row.value)
                problem: str | None
                try:
                    problem = await self._apply_retried(record)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - still failing: say why, keep it open
                    problem = f"{type(exc).__name__}: {exc}"
                now = dt.datetime.now(dt.timezone.utc)
                values: dict[str, Any] = {"attempts": row.attempts + 1}
                if problem is None:
                    values.update(status="resolved", resolved_at=now)
                else:
                    values.update(reason=problem[:2000])
                async with self.engine.begin() as conn:
                    await conn.execute(update(t).where(t.c.id == number).values(**values))
            async with self.engine.connect() as conn:
                return self._deadletter_doc((await conn.execute(select(t).where(t.c.id == number))).first())

    async def _apply_retried(self, record: Record) -> str | None:
        """Apply one dead-lettered record (no position change); the problem if it still cannot apply."""
        decoded = self._decode(record)
        if decoded.event is None:
            return decoded.problem
        await self._apply_unpositioned([_Item(decoded.event, record.topic, record)])
        return None

    # -- lag ------------------------------------------------------------------------------------------
    def _publish_lag(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        for labels in self._lag_labels:  # partitions move between workers: drop this kernel's old series
            CONSUMER_LAG.remove(*labels)
        self._lag_labels = set()
        for tp, position in list(self.positions.items()):
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - not fetched yet
                highwater = None
            if highwater is not None:
                labels = (self.name, tp.topic, str(tp.partition))
                CONSUMER_LAG.labels(*labels).set(max(0, highwater - position.read_from))
                self._lag_labels.add(labels)

    async def _hint_kafka_commit(self) -> None:
        """Commit the recorded positions to Kafka now and then: only for outside tools reading lag."""
        if self.consumer is None or time.monotonic() - self._last_kafka_commit < KAFKA_COMMIT_EVERY_S:
            return
        self._last_kafka_commit = time.monotonic()
        offsets = {tp: OffsetAndMetadata(p.read_from, "") for tp, p in self.positions.items() if p.read_from > 0}
        if offsets:
            try:
                await self.consumer.commit(offsets)
            except Exception as exc:  # noqa: BLE001 - a hint only; a rebalance in between is fine
                log.debug("%s: lag hint commit failed: %s", self.name, exc)


@dataclass(frozen=True)
class _Item:
    """An event to apply: from a record of `topic`, or (record None) a parked event released by this batch."""

    event: Event
    topic: str
    record: Record | None


class _Listener(ConsumerRebalanceListener):
    def __init__(self, kernel: StreamKernel) -> None:
        self.kernel = kernel

    async def on_partitions_revoked(self, revoked) -> None:  # noqa: ANN001
        await self.kernel.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned) -> None:  # noqa: ANN001
        await self.kernel.on_assigned(assigned)
