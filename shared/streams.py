"""What every stream service shares: the Faust worker runtime around the stream kernel.

Faust is each service's worker runtime (app lifecycle, web views, timers, CLI) with its own Kafka consumer and
producer switched off (its BootStrategy): records are consumed by the kernel (shared/kernel.py), one aiokafka
consumer group per service, in batches, with positions recorded in the service's database. Here: the app,
the database and its migrations, the registry follower, the outbox relay, the broker-epoch watchdog, and the
views every service has (/metrics, /internal/health, /internal/deadletters).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import faust
from faust.web import View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import make_engine
from shared.kafka import EpochWatch, consumer_timeouts, create_topics, fetch_wait_ms
from shared.kernel import (KernelTables, Process, StreamKernel, freeze_startup_objects, kernel_tables,
                           tune_gc_for_batches)
from shared.migrations import migrate
from shared.outbox import OutboxRelay, outbox_tables
from shared.registry import RegistryCopy, RegistryFollower, RegistryStore, registry_table
from shared.settings import Settings, configure_logging, get_settings

log = logging.getLogger("zorgpot.streams")

EXIT_BROKER_EPOCH_CHANGED = 75  # the supervisor (or compose's restart policy) starts us again
EPOCH_CHECK_TIMEOUT_S = 10.0
KERNEL_STOP_TIMEOUT_S = 30.0  # a batch still not committed by then is rolled back (and applied again later)  # an epoch check that takes longer is abandoned and tried again


class KernelBoot(faust.App.BootStrategy):
    """Faust without its Kafka consumer and producer: the kernel consumes, the outbox relay produces."""

    enable_kafka_consumer = False
    enable_kafka_producer = False


class WorkerApp(faust.App):
    BootStrategy = KernelBoot


@dataclass
class ServiceRuntime:
    name: str
    settings: Settings
    app: faust.App
    metadata: MetaData
    engine: AsyncEngine
    outbox: Table
    relay_state: Table
    tables: KernelTables
    registry: RegistryCopy
    registry_store: RegistryStore
    relay: OutboxRelay
    migrations: str
    kernel: StreamKernel | None = None
    started_at: float = field(default_factory=time.monotonic)
    ready_checks: list[Callable[[], bool]] = field(default_factory=list)
    # Set once the schema is migrated and the registry copy is loaded; the kernel waits for it.
    books_ready: asyncio.Event = field(default_factory=asyncio.Event)

    def serve(self, process: Process) -> Any:
        """Consume the process's subscriptions with the kernel, in this worker; returns the process."""
        settings = self.settings

        async def current_epoch() -> str:
            watch = EpochWatch(settings.bootstrap(), settings)
            try:
                return await asyncio.wait_for(watch.current(), EPOCH_CHECK_TIMEOUT_S)
            finally:
                await watch.close()

        self.kernel = StreamKernel(
            process, self.engine, self.tables, self.outbox, bootstrap=settings.bootstrap(),
            group_id=f"zorgpot-{self.name}", batch_max=settings.batch_max, fetch_wait_ms=fetch_wait_ms(settings),
            consumer_options=consumer_timeouts(settings), wake_relay=self.relay.wake, current_epoch=current_epoch,
            commit_delay_s=settings.kernel_commit_delay_ms / 1000)
        kernel = self.kernel

        @self.app.task
        async def _consume() -> None:
            await self.books_ready.wait()
            await kernel.run()

        @self.app.on_before_shutdown.connect
        async def _finish_batch(app: faust.App, **kwargs: Any) -> None:  # noqa: ARG001
            # SIGTERM: let the batch being applied commit and leave the group at once (the others take over
            # its partitions without waiting for a session timeout); Faust cancels the tasks after this.
            try:
                await asyncio.wait_for(kernel.stop(), KERNEL_STOP_TIMEOUT_S)
            except (asyncio.TimeoutError, Exception) as exc:  # noqa: BLE001 - shutting down regardless
                log.warning("%s: the kernel did not stop cleanly: %r", self.name, exc)

        return process


def make_runtime(name: str, metadata: MetaData, migrations: str, settings: Settings | None = None) -> ServiceRuntime:
    """The service's Faust app, database (migrated by the Alembic scripts in `migrations`), outbox relay and
    registry copy. `metadata` gains the outbox, registry and kernel tables."""
    settings = settings or get_settings()
    tune_gc_for_batches()
    bootstrap = settings.bootstrap()
    faust_dir = settings.data_dir / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)
    app = WorkerApp(
        f"zorgpot-{name}",
        broker=[f"kafka://{host}" for host in bootstrap.split(",")],
        web_bind="127.0.0.1" if settings.embedded else "0.0.0.0",
        web_port=settings.port_of(name),
        datadir=str(faust_dir / f"{name}-{settings.worker_instance}"),
        store="memory://",
        autodiscover=False,
        web_enabled=True,
    )
    outbox, relay_state = outbox_tables(metadata)
    registry_docs = registry_table(metadata)
    tables = kernel_tables(metadata)
    engine = make_engine(settings.db_url(name))
    registry = RegistryCopy()
    runtime = ServiceRuntime(
        name=name, settings=settings, app=app, metadata=metadata, engine=engine, outbox=outbox,
        relay_state=relay_state, tables=tables, registry=registry,
        registry_store=RegistryStore(engine, registry_docs, registry),
        relay=OutboxRelay(name, engine, outbox, relay_state, settings), migrations=migrations,
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
        await migrate(rt.engine, rt.migrations)
        await rt.registry_store.load()
        freeze_startup_objects()
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
            # The broker forgot everything (embedded broker restart). Our books and positions are safe in our
            # database; start over: positions recorded under the old epoch are not reused (read again from 0).
            log.warning("%s: broker epoch changed (%s -> %s); restarting", rt.name, state["epoch"], epoch)
            logging.shutdown()
            os._exit(EXIT_BROKER_EPOCH_CHANGED)

    @app.page("/metrics")
    async def _metrics(web, request):  # noqa: ANN001
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/internal/health")
    async def _health(web, request):  # noqa: ANN001
        kernel = rt.kernel
        assigned = [f"{tp.topic}:{tp.partition}" for tp in kernel.assignment()] if kernel else []
        ready = bool(assigned) and rt.books_ready.is_set() and all(check() for check in rt.ready_checks)
        return web.json({"service": rt.name, "ready": ready, "assigned": assigned,
                         "positions": {f"{tp.topic}:{tp.partition}": p.read_from
                                       for tp, p in (kernel.positions.items() if kernel else ())},
                         "applied_records": kernel.applied_records if kernel else 0,
                         "in_transaction": kernel.in_transaction if kernel else False,
                         "registry_version": rt.registry.version}, status=200 if ready else 503)

    @app.page("/internal/deadletters")
    async def _deadletters(web, request):  # noqa: ANN001
        await rt.books_ready.wait()
        if rt.kernel is None:
            return web.json({"deadletters": []})
        return web.json({"deadletters": await rt.kernel.deadletters(request.query.get("status") or None)})

    @app.page("/internal/deadletters/{number}/retry")
    class _Retry(View):
        async def post(self, request, number: str):  # noqa: ANN001, ANN201
            await rt.books_ready.wait()
            if rt.kernel is None or not number.isdigit():
                return self.json({"detail": f"no dead letter {number!r} in {rt.name}"}, status=404)
            found = await rt.kernel.retry_deadletter(int(number))
            if found is None:
                return self.json({"detail": f"no dead letter {rt.name}-{number}"}, status=404)
            return self.json(found)


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
