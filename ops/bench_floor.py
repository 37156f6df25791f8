"""The stream framework's own cost per event: `python -m ops.bench_floor {aiokafka,kernel,faust} --bootstrap H:P`.

Consumes `--count` records of a topic from offset 0 and does nothing with them, then prints one JSON line:
CPU microseconds per event of this process, and events per second, both from the first record on (start-up
and group join excluded). `ops/bench.py` runs both modes against its own broker after the pipeline run, so
the pipeline's figures can be read against what merely receiving the events costs:

* `aiokafka`: a plain consumer, `getmany` of up to 1,000 records (what kafka-python/aiokafka cost);
* `kernel`: the stream kernel the services run on (shared/kernel.py) with handlers that do nothing, on a
  SQLite database of its own: getmany batches, the tolerant reader (pydantic validation of every event), the
  event-id dedupe, and one transaction per batch recording applied ids and the position. The floor under
  every Zorgpot stream service;
* `faust`: a faust-streaming agent with the settings the services had before the kernel
  (`stream.take(batch_max, within=window)`, a capped fetch wait) whose handler does nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

import orjson

from shared.kafka import fetch_wait_ms
from shared.settings import get_settings


def report(mode: str, count: int, cpu_started: float, wall_started: float) -> None:
    cpu, wall = time.process_time() - cpu_started, time.perf_counter() - wall_started
    line = orjson.dumps({"mode": mode, "events": count, "cpu_us_per_event": round(cpu / count * 1e6, 1),
                         "per_s": round(count / wall)}) + b"\n"
    os.write(1, line)  # straight to fd 1: a Faust worker redirects sys.stdout into its log


async def plain_aiokafka(bootstrap: str, topic: str, count: int) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"zorgpot-floor-{os.getpid()}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=fetch_wait_ms(get_settings()))
    await consumer.start()
    try:
        seen, cpu_started, wall_started = 0, 0.0, 0.0
        while seen < count:
            batch = await consumer.getmany(timeout_ms=200, max_records=1000)
            records = sum(len(records) for records in batch.values())
            if records and not seen:
                cpu_started, wall_started = time.process_time(), time.perf_counter()
            seen += records
            if records:
                await consumer.commit()
        report("aiokafka", seen, cpu_started, wall_started)
    finally:
        await consumer.stop()


class _NothingProcess:
    """A process whose handlers do nothing: what the kernel itself costs per event."""

    name = "floor"

    def __init__(self, topic: str) -> None:
        from shared.events import CareLogged, CareVoided
        from shared.kernel import Subscription

        self.subscriptions = [Subscription(topic, handlers={CareLogged: self.nothing, CareVoided: self.nothing})]
        self.applied = 0

    def nothing(self, state, event) -> None:  # noqa: ANN001
        self.applied += 1

    async def ready_for(self, events) -> None:  # noqa: ANN001
        pass

    async def begin_batch(self, uow, events):  # noqa: ANN001, ANN201
        return None

    async def end_batch(self, uow, state) -> None:  # noqa: ANN001
        pass

    def after_commit(self, state) -> None:  # noqa: ANN001
        pass


async def stream_kernel(bootstrap: str, topic: str, count: int) -> None:
    from sqlalchemy import MetaData

    from shared.db import create_tables, make_engine
    from shared.kafka import consumer_timeouts
    from shared.kernel import StreamKernel, freeze_startup_objects, kernel_tables, tune_gc_for_batches
    from shared.outbox import outbox_tables

    settings = get_settings()
    metadata = MetaData()
    outbox, _ = outbox_tables(metadata)
    tables = kernel_tables(metadata)
    engine = make_engine(f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/floor.db")
    await create_tables(engine, metadata)
    process = _NothingProcess(topic)
    tune_gc_for_batches()  # as the services' workers do (shared/streams.py)
    freeze_startup_objects()
    kernel = StreamKernel(process, engine, tables, outbox, bootstrap=bootstrap,
                          group_id=f"zorgpot-floor-{os.getpid()}", batch_max=settings.batch_max,
                          fetch_wait_ms=fetch_wait_ms(settings), consumer_options=consumer_timeouts(settings))
    task = asyncio.create_task(kernel.run())
    cpu_started = wall_started = 0.0
    while kernel.applied_records < count:
        if kernel.applied_records and not cpu_started:
            cpu_started, wall_started = time.process_time(), time.perf_counter()
            first = kernel.applied_records
        await asyncio.sleep(0.005)
    report("kernel", kernel.applied_records - first, cpu_started, wall_started)
    task.cancel()
    os._exit(0)


def _cap_faust_fetch_wait(max_wait_ms: int) -> None:
    """faust-streaming passes a fixed fetch_max_wait_ms=1500 to its consumer; the services capped it for the
    embedded broker when they ran on Faust's consumer, and the comparison keeps that."""
    import types

    import faust.transport.drivers.aiokafka as driver

    original = driver.aiokafka.AIOKafkaConsumer

    class CappedFetchWaitConsumer(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
            kwargs["fetch_max_wait_ms"] = min(kwargs.get("fetch_max_wait_ms", 500), max_wait_ms)
            super().__init__(*args, **kwargs)

    driver.aiokafka = types.SimpleNamespace(**{**vars(driver.aiokafka), "AIOKafkaConsumer": CappedFetchWaitConsumer})


def faust_agent(bootstrap: str, topic_name: str, count: int) -> None:
    import faust

    settings = get_settings()
    _cap_faust_fetch_wait(fetch_wait_ms(settings))
    app = faust.App(f"zorgpot-floor-{os.getpid()}", broker=f"kafka://{bootstrap}", store="memory://",
                    web_enabled=False, autodiscover=False, consumer_auto_offset_reset="earliest",
                    topic_allow_declare=False, topic_disable_leader=True, datadir=tempfile.mkdtemp(),
                    broker_session_timeout=6.0, broker_heartbeat_interval=2.0)
    topic = app.topic(topic_name, value_serializer="raw", key_serializer="raw")
    state = {"seen": 0, "cpu": 0.0, "wall": 0.0}

    @app.agent(topic, concurrency=1)
    async def nothing(stream) -> None:  # noqa: ANN001
        async for values in stream.take(settings.batch_max, within=0.05):
            if not state["seen"]:
                state["cpu"], state["wall"] = time.process_time(), time.perf_counter()
            state["seen"] += len(values)
            if state["seen"] >= count:
                report("faust", state["seen"], state["cpu"], state["wall"])
                os._exit(0)  # the figure is out; a Faust worker's orderly stop takes seconds

    sys.argv = ["zorgpot-floor", "worker", "-l", "warn", "--without-web"]
    app.main()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.bench_floor")
    parser.add_argument("mode", choices=["aiokafka", "kernel", "faust"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", default="care.logged")
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    if args.mode == "aiokafka":
        asyncio.run(plain_aiokafka(args.bootstrap, args.topic, args.count))
    elif args.mode == "kernel":
        asyncio.run(stream_kernel(args.bootstrap, args.topic, args.count))
    else:
        faust_agent(args.bootstrap, args.topic, args.count)


if __name__ == "__main__":
    main()
