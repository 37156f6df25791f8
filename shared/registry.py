"""Each service's copy of the reference data (municipalities, schools, groups, pupils, arrangements).

The gateway is the source of truth and publishes every change as a full-state `RegistryChanged` event with
a gap-free `version` on the one-partition topic `registry.changes`. A service keeps the documents in its
own database and in memory (`RegistryCopy`), and follows the topic from offset 0 with a group-less consumer
(`RegistryFollower`), skipping versions it already has. Every registration carries the registry version
the gateway had when it accepted it; `wait_for(version)` lets a consumer validate against a copy at least
that new, so "create the group, then register hours for it" can never be judged on stale data.
"""
from __future__ import annotations

import asyncio
import logging

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import topics
from shared.events import RegistryChanged, UnreadableEvent, read_event
from shared.kafka import reconnecting, stop_quietly
from shared.reference import ReferenceData
from shared.stream_metrics import REGISTRY_GAPS

log = logging.getLogger("zorgpot.registry")
GAP_RETRY_S = 0.5  # between reads from the start while the gateway republishes after a broker restart


def registry_table(metadata: MetaData) -> Table:
    return Table(
        "registry_docs", metadata,
        Column("kind", String(20), primary_key=True),
        Column("key", String(200), primary_key=True),
        Column("version", Integer, nullable=False),
        Column("doc", LargeBinary, nullable=False),
    )


class GapInRegistry(Exception):
    """A registry record skips versions: the copy must not jump past what it never saw."""

    def __init__(self, have: int, got: int) -> None:
        super().__init__(f"registry copy at version {have} was offered version {got}: versions in between missing")
        self.have, self.got = have, got


class RegistryCopy(ReferenceData):
    """The service's live copy: reference data that the follower updates, and a way to wait for a version."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Condition()

    async def notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, version: int, timeout: float | None = None) -> bool:
        """Wait until this copy has applied `version`; False on timeout."""
        if self.version >= version:
            return True
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.version >= version), timeout)
            except asyncio.TimeoutError:
                return False
        return True


class RegistryStore:
    """Persists the copy in the service's own database and loads it at start."""

    def __init__(self, engine: AsyncEngine, table: Table, copy: RegistryCopy):
        self.engine = engine
        self.table = table
        self.copy = copy

    async def load(self) -> None:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(self.table).order_by(self.table.c.version))).all()
        for row in rows:
            self.copy.apply(row.kind, row.key, orjson.loads(row.doc), row.version)
        log.info("registry copy loaded at version %d (%d documents)", self.copy.version, len(rows))

    async def apply_events(self, events: list[RegistryChanged]) -> int:
        """Apply the versions that follow on from the copy's, in order; stop at a gap.

        Returns how many were applied; `GapInRegistry` when a version is missing before the newest given (the
        caller then reads the topic again from its start; the gateway publishes every version, so a gap means
        this reader skipped records, e.g. a consumer that carried an old offset across a broker restart).
        """
        fresh = []
        expected = self.copy.version + 1
        for e in sorted((e for e in events if e.version > self.copy.version), key=lambda e: e.version):
            if e.version < expected:  # the same version twice in one read (a republished outbox)
                continue
            if e.version > expected:
                break
            fresh.append(e)
            expected += 1
        gap = any(e.version >= expected for e in events)
        if not fresh:
            if gap:
                raise GapInRegistry(self.copy.version, min(e.version for e in events if e.version >= expected))
            return 0
        newest = {(e.kind, e.key): e for e in fresh}  # the table keeps one document per key: the newest
        # In key order: two workers applying overlapping batches then lock the rows in the same order. In
        # version order a worker two batches ahead of another could lock them crosswise (PostgreSQL:
        # "deadlock detected", seen in CI on test_shared_books).
        rows = [{"kind": e.kind, "key": e.key, "version": e.version, "doc": orjson.dumps(e.doc)}
                for _, e in sorted(newest.items())]
        async with self.engine.begin() as conn:
            # Upsert that never goes back: the workers of a service share its database and each follows the
            # registry, so two of them can write the same version at once (PostgreSQL; SQLite serialises).
            insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(self.table)
            await conn.execute(insert.on_conflict_do_update(
                index_elements=[self.table.c.kind, self.table.c.key],
                set_={"version": insert.excluded.version, "doc": insert.excluded.doc},
                where=self.table.c.version < insert.excluded.version), rows)
        for e in fresh:
            self.copy.apply(e.kind, e.key, e.doc, e.version)
        await self.copy.notify()
        if gap:
            raise GapInRegistry(self.copy.version, min(e.version for e in events if e.version >= expected))
        return len(fresh)


class RegistryFollower:
    """Follows `registry.changes` from offset 0 (every worker reads it all: no consumer group)."""

    def __init__(self, bootstrap: str, store: RegistryStore, fetch_max_wait_ms: int = 500):
        self.bootstrap = bootstrap
        self.store = store
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self._stopping = False

    async def run(self) -> None:
        await reconnecting("registry follower", self._follow, lambda: self._stopping)

    async def _follow(self) -> None:
        """One session: from offset 0 (so a broker that forgot everything is read again from its start)."""
        tp = TopicPartition(topics.REGISTRY, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=self.fetch_max_wait_ms)
        try:
            await consumer.start()
            consumer.assign([tp])
            consumer.seek(tp, 0)
            while not self._stopping:
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
                events = []
                for record in batch.get(tp, []):
                    try:
                        event = read_event(record.value)
                    except UnreadableEvent as exc:  # the gateway is the only writer: never expected
                        log.error("skipping malformed registry record at offset %s: %s", record.offset, exc)
                        continue
                    if isinstance(event, RegistryChanged):
                        events.append(event)
                if events:
                    try:
                        await self.store.apply_events(events)
                    except GapInRegistry as gap:
                        # Read again from the start: the broker may have forgotten everything and the gateway
                        # be republishing its outbox from version 1 behind this consumer's old offset.
                        log.warning("%s; reading registry.changes again from offset 0", gap)
                        REGISTRY_GAPS.inc()
                        await asyncio.sleep(GAP_RETRY_S)
                        consumer.seek(tp, 0)
        finally:
            await stop_quietly(consumer.stop())

    def stop(self) -> None:
        self._stopping = True
