"""Kafka plumbing shared by every service: client settings per broker profile, topic creation, broker epoch.

The broker epoch: the embedded broker (Tansu) keeps everything in memory, so a broker restart silently
loses every topic, record and committed offset. Every producer and consumer must notice that and react
(producers republish their whole outbox, consumers restart from offset 0 and deduplicate). A broker's life
is named by the first record of the one-partition topic `zorgpot.epoch`: whoever finds that topic missing or
empty creates the topics and writes a fresh random epoch; the record at offset 0 wins any race. On Apache
Kafka the epoch never changes unless the cluster is rebuilt, which is exactly when republishing is right.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from shared import topics
from shared.settings import Settings

log = logging.getLogger("zorgpot.kafka")


def consumer_timeouts(settings: Settings) -> dict[str, int]:
    # Tansu takes about half the session timeout to complete a group join (design.md section 7).
    if settings.embedded:
        return {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}
    return {}


def fetch_wait_ms(settings: Settings) -> int:
    """How long a Fetch may wait for data. Tansu answers a Fetch only when the wait runs out, even when
    records arrive meanwhile (measured: 202 -> accepted took a median 750 ms with Faust's fixed 1500 ms), so
    the embedded profile polls more often. Apache Kafka answers as soon as data arrives: keep 500 ms there.
    ZORGPOT_FETCH_WAIT_MS overrides both."""
    if settings.fetch_wait_ms:
        return settings.fetch_wait_ms
    return 25 if settings.embedded else 500


def create_topics(bootstrap: str, specs: tuple[topics.TopicSpec, ...] = topics.ALL) -> list[str]:
    """Create the missing topics with their partition counts (kafka-python admin: a plain client fits)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="zorgpot-admin", request_timeout_ms=10000)
    try:
        existing = set(admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created: list[str] = []
        for spec in missing:
            config = {"retention.ms": "-1"} if spec.fact else {}
            try:
                admin.create_topics([NewTopic(spec.name, spec.partitions, 1, topic_configs=config)])
            except TopicAlreadyExistsError:
                continue
            except Exception as exc:  # Tansu rejects topic configs it does not know; retry without them.
                if not config:
                    raise
                log.debug("creating %s with configs failed (%s); retrying without", spec.name, exc)
                try:
                    admin.create_topics([NewTopic(spec.name, spec.partitions, 1)])
                except TopicAlreadyExistsError:
                    continue
            created.append(spec.name)
        return created
    finally:
        admin.close()


class EpochWatch:
    """Reads (and if need be establishes) the broker epoch; one long-lived consumer, no group."""

    def __init__(self, bootstrap: str, settings: Settings):
        self.bootstrap = bootstrap
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._tp = TopicPartition(topics.EPOCH, 0)

    async def _read(self) -> str | None:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
                auto_offset_reset="earliest", request_timeout_ms=5000, metadata_max_age_ms=2000,
                fetch_max_wait_ms=fetch_wait_ms(self.settings),
            )
            await self._consumer.start()
        consumer = self._consumer
        if topics.EPOCH not in await consumer.topics():  # a fresh metadata request
            return None
        if consumer.assignment() != {self._tp}:
            consumer.assign([self._tp])
        consumer.seek(self._tp, 0)
        batch = await consumer.getmany(self._tp, timeout_ms=1500, max_records=1)
        records = batch.get(self._tp, [])
        return records[0].value.decode() if records else None

    async def current(self) -> str:
        """The epoch of the broker as it is now; creates topics and the epoch when they are missing."""
        try:
            epoch = await self._read()
            if epoch is not None:
                return epoch
            await asyncio.to_thread(create_topics, self.bootstrap)
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await producer.start()
            try:
                await producer.send_and_wait(topics.EPOCH, uuid.uuid4().hex.encode(), partition=0)
            finally:
                await producer.stop()
            epoch = await self._read()
            if epoch is None:
                raise RuntimeError("broker epoch record not readable after writing it")
            return epoch
        except Exception:
            await self.close()
            raise

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            try:
                await consumer.stop()
            except (Exception, asyncio.CancelledError):  # noqa: BLE001 - closing a broken client must not
                pass  # mask the real error (aiokafka can raise CancelledError from its own internal tasks)


async def reconnecting(name: str, session: Callable[[], Awaitable[None]], stopping: Callable[[], bool],
                       pause_s: float = 1.0) -> None:
    """Run `session` (connect, consume, close) again and again until `stopping()`.

    A broker that went away, or a client library that leaked a CancelledError from its own internal tasks,
    only means: wait a moment and start a fresh session. A real cancellation of this task still stops it.
    """
    while not stopping():
        try:
            await session()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except Exception as exc:  # noqa: BLE001 - broker gone: start over later
            log.warning("%s: %s: %s; reconnecting", name, type(exc).__name__, exc)
        if not stopping():
            await asyncio.sleep(pause_s)


async def stop_quietly(*closers: Awaitable[None]) -> None:
    """Await each client's stop/close; a broken client must not mask the error that broke it."""
    for closing in closers:
        try:
            await closing
        except (Exception, asyncio.CancelledError):  # noqa: BLE001
            pass
