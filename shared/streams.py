"""What every Faust stream service shares: app configuration, the broker-epoch watchdog, the registry
follower, the outbox relay, and the /metrics and /internal/health views.

Faust is the stream runtime (consumer groups, partition assignment, web views); the money books live in
the service's own database, never in Faust tables (design.md section 7).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from contextvars import ContextVar
from typing import Any, Awaitable, Callable, Iterator

import faust
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import create_tables, make_engine
from shared.events import parse_event
from shared.kafka import EpochWatch, create_topics, fetch_wait_ms
from shared.outbox import OutboxRelay, outbox_tables
from shared.registry import RegistryCopy, RegistryFollower, RegistryStore, registry_table
from shared.settings import Settings, configure_logging, get_settings

log = logging.getLogger("zorgpot.streams")

EXIT_BROKER_EPOCH_CHANGED = 75  # the supervisor (or compose's restart policy) starts us again
EPOCH_CHECK_TIMEOUT_S = 10.0  # an epoch check that takes longer is abandoned and tried again

EVENTS_PROCESSED = Counter("zorgpot_events_processed_total", "Events a service consumed and applied",
                           ["service", "type"])
BATCH_FAILURES = Counter("zorgpot_batch_failures_total",
                         "Batches whose transaction failed and was retried (a growing count blocks a partition)",
                         ["service"])
EVENTS_REJECTED = Counter("zorgpot_events_rejected_total", "Events a service refused, by reason",
                          ["service", "reason"])
_PENDING_COUNTS: ContextVar[dict | None] = ContextVar("zorgpot_pending_counts", default=None)


def count(metric: Counter, *labels: str, amount: int = 1) -> None:
    """Increment `metric` by `amount`: at once, or inside `counted_on_commit()` when that block succeeds."""
    pending = _PENDING_COUNTS.get()
    if pending is None:
        metric.labels(*labels).inc(amount)
    else:
        pending[(metric, labels)] = pending.get((metric, labels), 0) + amount


@contextlib.contextmanager
def counted_on_commit() -> Iterator[None]:
    """Wrap a batch's transaction: what it `count`s is published only if the block ends without an error.

    A batch that fails is rolled back and applied again (`in_batches`); counting as it went would count its
    events once per attempt."""
    pending: dict = {}
    token = _PENDING_COUNTS.set(pending)
    try:
        yield
    finally:
        _PENDING_COUNTS.reset(token)
    for (metric, labels), amount in pending.items():
        metric.labels(*labels).inc(amount)


@dataclass
class ServiceRuntime:
    name: str
    settings: Settings
    app: faust.App
    metadata: MetaData
    engine: AsyncEngine
    outbox: Table
    relay_state: Table
    registry: RegistryCopy
    registry_store: RegistryStore
    relay: OutboxRelay
    upgrade: Callable[[AsyncEngine], Awaitable[None]] | None = None
    started_at: float = field(default_factory=time.monotonic)
    ready_checks: list[Callable[[], bool]] = field(default_factory=list)
    # Set once the tables exist and the registry copy is loaded; agents wait for it before consuming.
    books_ready: asyncio.Event = field(default_factory=asyncio.Event)


def _cap_faust_fetch_wait(max_wait_ms: int) -> None:
    """faust-streaming passes a fixed fetch_max_wait_ms=1500 to its consumer; cap it (see
    shared.kafka.fetch_wait_ms for why the embedded broker needs that). Faust offers no setting for it, so
    the driver's reference to aiokafka is swapped for a copy whose consumer class caps the argument."""
    import types

    import faust.transport.drivers.aiokafka as driver

    original = driver.aiokafka.AIOKafkaConsumer
    if getattr(original, "_zorgpot_capped", False):
        return

    class CappedFetchWaitConsumer(original):  # type: ignore[misc, valid-type]
        _zorgpot_capped = True

        def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
            kwargs["fetch_max_wait_ms"] = min(kwargs.get("fetch_max_wait_ms", 500), max_wait_ms)
            super().__init__(*args, **kwargs)

    driver.aiokafka = types.SimpleNamespace(**{**vars(driver.aiokafka), "AIOKafkaConsumer": CappedFetchWaitConsumer})


def make_runtime(name: str, metadata: MetaData, settings: Settings | None = None,
                 upgrade: Callable[[AsyncEngine], Awaitable[None]] | None = None) -> ServiceRuntime:
    """The service's Faust app, database, outbox relay and registry copy; `upgrade` brings books made by an
    earlier version up to date after the tables are created."""
    settings = settings or get_settings()
    _cap_faust_fetch_wait(fetch_wait_ms(settings))
    bootstrap = settings.bootstrap()
    faust_dir = settings.data_dir / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)
    timeouts = {"broker_session_timeout": 6.0, "broker_heartbeat_interval": 2.0} if settings.embedded else {}
    app = faust.App(
        f"zorgpot-{name}",
        broker=[f"kafka://{host}" for host in bootstrap.split(",")],
        web_bind="127.0.0.1" if settings.embedded else "0.0.0.0",
        web_port=settings.port_of(name),
        datadir=str(faust_dir / f"{name}-{settings.worker_instance}"),
        store="memory://",
        autodiscover=False,
        topic_partitions=6,
        topic_allow_declare=False,  # topics are created by shared.kafka.create_topics with their counts
        topic_disable_leader=True,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        **timeouts,
    )
    outbox, relay_state = outbox_tables(metadata)
    registry_docs = registry_table(metadata)
    engine = make_engine(settings.db_url(name))
    registry = RegistryCopy()
    runtime = ServiceRuntime(
        name=name, settings=settings, app=app, metadata=metadata, engine=engine, outbox=outbox,
        relay_state=relay_state, registry=registry,
        registry_store=RegistryStore(engine, registry_docs, registry),
        relay=OutboxRelay(name, engine, outbox, relay_state, settings), upgrade=upgrade,
    )
    _install_common(runtime)
    return runtime


def _install_common(rt: ServiceRuntime) -> None:
    app = rt.app
    follower = RegistryFollower(rt.settings.bootstrap(), rt.registry_store, fetch_wait_ms(rt.settings))
    watch = EpochWatch(rt.settings.bootstrap(), rt.settings)
    state: dict[str, str | None] = {"epoch": None}

    @app.task
    async def _start_books() -> None:
        await create_tables(rt.engine, rt.metadata)
        if rt.upgrade is not None:
            await rt.upgrade(rt.engine)
        await rt.registry_store.load()
        rt.books_ready.set()
        app.loop.create_task(follower.run())
        app.loop.create_task(rt.relay.run())

    @app.timer(2.0)
    async def _epoch_watchdog() -> None:
        # Each check gets a fresh consumer and a time limit. In one CI run a long-lived one went quiet after
        # a broker restart: no worker noticed the new epoch for 3 minutes, so none re-consumed.
        try:
            epoch = await asyncio.wait_for(watch.current(), EPOCH_CHECK_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - broker unreachable or too slow (timeout): nothing to compare yet
            log.debug("epoch check failed: %r", exc)
            return
        finally:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(watch.close(), EPOCH_CHECK_TIMEOUT_S)
        if state["epoch"] is None:
            state["epoch"] = epoch
        elif epoch != state["epoch"]:
            # The broker forgot everything (embedded broker restart). Our books are safe in our database;
            # start over so the consumer rejoins from offset 0 and deduplicates what it already applied.
            log.warning("%s: broker epoch changed (%s -> %s); restarting to re-consume from offset 0",
                        rt.name, state["epoch"], epoch)
            logging.shutdown()
            os._exit(EXIT_BROKER_EPOCH_CHANGED)

    @app.page("/metrics")
    async def _metrics(web, request):  # noqa: ANN001
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/internal/health")
    async def _health(web, request):  # noqa: ANN001
        assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in app.consumer.assignment())
        ready = bool(assigned) and rt.books_ready.is_set() and all(check() for check in rt.ready_checks)
        return web.json({"service": rt.name, "ready": ready, "assigned": assigned,
                         "registry_version": rt.registry.version}, status=200 if ready else 503)


def ensure_topics_blocking(settings: Settings, attempts: int = 60) -> None:
    """Create the topics before Faust starts (it is told not to declare them itself)."""
    for attempt in range(attempts):
        try:
            create_topics(settings.bootstrap())
            return
        except Exception as exc:  # noqa: BLE001
            if attempt == attempts - 1:
                raise
            log.info("waiting for the broker at %s: %s", settings.bootstrap(), exc)
            time.sleep(1.0)


def run_worker(rt: ServiceRuntime) -> None:
    """Entry point: `python -m services.<name>` runs one worker of the service."""
    configure_logging(rt.name, rt.settings)
    ensure_topics_blocking(rt.settings)
    import sys
    sys.argv = [f"zorgpot-{rt.name}", "worker", "-l", "debug" if rt.settings.log_level == "DEBUG" else "warn",
                "--web-port", str(rt.settings.port_of(rt.name))]
    rt.app.main()


async def in_batches(rt: ServiceRuntime, stream, handle: Callable[[list], Awaitable[None]]) -> None:  # noqa: ANN001
    """Consume a Faust stream in batches; the handler applies a whole batch in one transaction.

    A batch whose handler raises (database unreachable, a lock timeout, a bug) is retried in place with
    backoff, never skipped: the handler is idempotent and its transaction rolled back, so a retry is safe,
    and skipping would lose money. Letting the exception escape would crash the agent, and Faust would
    only re-read the batch after the next rebalance. A batch that keeps failing blocks its partition and
    shows in zorgpot_batch_failures_total and the log: stop and alert rather than guess."""
    await rt.books_ready.wait()
    async for values in stream.take(rt.settings.batch_max, within=rt.settings.batch_window_ms / 1000):
        delay = 0.1
        while True:
            try:
                await handle(values)
                break
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - see docstring: retry the same batch
                BATCH_FAILURES.labels(rt.name).inc()
                log.exception("%s: applying a batch of %d records failed; retrying in %.1fs", rt.name,
                              len(values), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


def decode_events(service: str, values: list[bytes], wanted: tuple[type, ...]) -> list[Any]:
    """Parse raw records into events of the `wanted` types. A malformed record or an unexpected event type
    is counted (EVENTS_REJECTED) and logged, never allowed to block the stream."""
    events = []
    for raw in values:
        try:
            event = parse_event(raw)
        except Exception as exc:  # noqa: BLE001 - a poison record is counted and logged
            log.error("%s: skipping malformed record: %s", service, exc)
            EVENTS_REJECTED.labels(service, "malformed_event").inc()
            continue
        if isinstance(event, wanted):
            events.append(event)
        else:
            log.error("%s: skipping unexpected event type %s", service, event.type)
            EVENTS_REJECTED.labels(service, "unexpected_event").inc()
    return events
