"""`make bench`: throughput and latency measured against one embedded broker on this machine.

Every figure is reported next to a baseline measured in the same run (plain aiokafka producing the same
registration payloads), because these machines are noisy: compare ratios, not absolute numbers.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import secrets
import sqlite3
import subprocess
import sys
import threading
import statistics
import tempfile
import time
from pathlib import Path

from typing import Callable, Iterator

import httpx
from aiokafka import AIOKafkaProducer

from ops.stack import ROOT, Stack, stack_ports
from shared import topics
from shared.events import HoursSubmitted, submission_event_id
from shared.kafka import create_topics
from shared.schemas import Registration
from shared.topics import TopicSpec

SCHOOL, GROUP, ARRANGEMENT = "bench-school", "g1", "bench-arr"
START = dt.date(2025, 8, 1)


@contextlib.contextmanager
def bench_stack(prefix: str = "zorgpot-bench-") -> Iterator[tuple[Stack, httpx.Client]]:
    """A stack of its own (embedded broker, four services, SQLite, spare ports), its coordinator client
    (`/api/v1`) and the bench region seeded; stopped and deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        token = f"zp_bench_{secrets.token_hex(8)}"
        stack = Stack(Path(tmp), *stack_ports(), token)
        stack.start_all(timeout=120)
        try:
            with httpx.Client(base_url=f"{stack.gateway_url}/api/v1", timeout=120,
                              headers={"Authorization": f"Bearer {token}"}) as api:
                seed(api)
                yield stack, api
        finally:
            stack.stop_all()


def seed(api: httpx.Client, school: str = SCHOOL, arrangement: str = ARRANGEMENT) -> None:
    def put(path: str, body: dict) -> None:
        reply = api.put(path, json=body)
        reply.raise_for_status()

    put("/municipalities/GM0984", {"name": "Venray"})
    put(f"/schools/{school}", {"name": f"Bench school {school}", "municipality": "GM0984"})
    put(f"/schools/{school}/groups/{GROUP}", {"name": "g1"})
    for i in range(8):
        put(f"/schools/{school}/pupils/p{i}", {"group_id": GROUP, "enrolled_from": START.isoformat(),
                                               "residence": [{"municipality": "GM0984", "from": START.isoformat()}]})
    put(f"/arrangements/{arrangement}", {
        "school_id": school, "group_ids": [GROUP], "start": START.isoformat(), "end": "2026-07-31",
        "rates": [{"from": START.isoformat(), "hourly_rate_cents": 6500}], "cap_cents": 10**12,
        "settlement": {"key": "residence_hours"}})


def registrations(prefix: str, count: int, school: str = SCHOOL) -> list[dict]:
    return [{"registration_id": f"{prefix}-{i}", "school_id": school, "group_id": GROUP,
             "date": (START + dt.timedelta(days=i % 300)).isoformat(), "minutes": 1 + i % 600,
             "care_worker": "cw", "task_category": 1 + i % 11} for i in range(count)]


async def raw_produce(bootstrap: str, items: list[dict]) -> float:
    """Baseline: plain aiokafka, acks=all, producing the very payloads the gateway would publish."""
    create_topics(bootstrap, (TopicSpec("bench.raw", 6, True),))
    now = dt.datetime.now(dt.timezone.utc)
    payloads = [HoursSubmitted(event_id=submission_event_id(i["registration_id"]), registration=Registration(**i),
                               registry_version=1, received_at=now).to_bytes() for i in items]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2, max_batch_size=256 * 1024)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send("bench.raw", value=p, key=SCHOOL.encode()) for p in payloads]
        await asyncio.gather(*futures)
        return len(payloads) / (time.perf_counter() - started)
    finally:
        await producer.stop()


def ingest(api: httpx.Client, items: list[dict], batch: int = 1000) -> float:
    started = time.perf_counter()
    for start in range(0, len(items), batch):
        reply = api.post("/hours/batch", json=items[start:start + batch])
        reply.raise_for_status()
        assert reply.json()["accepted"] == len(items[start:start + batch]), reply.text
    return len(items) / (time.perf_counter() - started)


def wait_processed(stack: Stack, count: int, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = httpx.get(f"{stack.service_url('hours')}/internal/stats", timeout=10).json()
        if stats.get("accepted", {}).get("count", 0) >= count:
            return time.monotonic()
        time.sleep(0.2)
    raise TimeoutError("hours service did not catch up")


def settlement_applied(stack: Stack) -> int:
    """Care lines in the settlement service's books, read straight from its SQLite file (cheap to poll,
    unlike the invariant view; its events counter is bumped before the commit, so a retried batch counts
    twice there)."""
    path = stack.data_dir / "settlement.db"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
        try:
            return conn.execute("SELECT count(*) FROM care_lines").fetchone()[0]
        except sqlite3.OperationalError:  # tables not created yet
            return 0


def pot_registrations(stack: Stack, arrangement: str = ARRANGEMENT) -> int:
    reply = httpx.get(f"{stack.service_url('budget')}/internal/pots/{arrangement}", timeout=10)
    return reply.json()["registrations"] if reply.status_code == 200 else 0


def wait_books(stack: Stack, count: int, timeout: float = 3600) -> float:
    """Until the budget pot and the settlement books both count `count` registrations; returns the time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pot_registrations(stack) >= count and settlement_applied(stack) >= count:
                return time.monotonic()
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.25)
    raise TimeoutError("budget and settlement did not catch up")


def same_partition_as(school: str, prefix: str) -> str:
    """A school id starting with `prefix` whose events land on the same partition as `school`'s (the producers'
    default partitioner: murmur2 of the key), so a probe queues behind the background load, as a school's
    registrations would behind a busy neighbour's."""
    from kafka.partitioner.default import murmur2

    def partition(key: str) -> int:
        return (murmur2(key.encode()) & 0x7FFFFFFF) % topics.PARTITIONS

    return next(f"{prefix}-{i}" for i in range(10_000) if partition(f"{prefix}-{i}") == partition(school))


def pot_latency(api: httpx.Client, samples: int, rate: float, max_s: float) -> tuple[list[float], float]:
    """Seconds from the 202 of one registration to GET /pots/<its pot> showing spent_cents moved, while a
    paced background producer posts batches of 50 into another school's pot at `rate` registrations/s."""
    seed(api, "bench-bg", "bench-bg-arr")
    probe_school = same_partition_as("bench-bg", "bench-probe")
    seed(api, probe_school, "bench-probe-arr")
    stop = threading.Event()
    produced = [0]
    tag = secrets.token_hex(3)

    def background() -> None:
        with httpx.Client(base_url=str(api.base_url), headers=dict(api.headers), timeout=60) as bg:
            batch, n, started = 50, 0, time.monotonic()
            while not stop.is_set():
                items = registrations(f"bg-{tag}-{n}", batch, school="bench-bg")
                bg.post("/hours/batch", json=items).raise_for_status()
                n += 1
                produced[0] += batch
                ahead = started + produced[0] / rate - time.monotonic()
                if ahead > 0:
                    stop.wait(ahead)

    thread = threading.Thread(target=background, daemon=True)
    thread.start()
    time.sleep(2)  # let the background load settle in
    latencies = []
    started = time.monotonic()
    try:
        for item in registrations(f"probe-{tag}", samples, school=probe_school):
            if latencies and time.monotonic() - started > max_s:
                break  # fewer samples rather than an endless run when the machine cannot keep the pace
            before = api.get("/pots/bench-probe-arr").json()["spent_cents"]
            reply = api.post("/hours", json=item)
            assert reply.status_code == 202, reply.text
            t202 = time.perf_counter()
            while api.get("/pots/bench-probe-arr").json()["spent_cents"] == before:
                time.sleep(0.002)
            latencies.append(time.perf_counter() - t202)
    finally:
        stop.set()
        thread.join()
    achieved = produced[0] / (time.monotonic() - started + 2)
    return latencies, achieved


def replay(stack: Stack, expected: dict[str, Callable[[], bool]]) -> tuple[float, float]:
    """Rebuild budget and settlement from offset 0 at once: stop both, empty their databases (python -m ops
    replay-from-start; no closes were made in the bench), start them. Seconds until both count everything: from
    the start of the processes, and from the moment both report healthy (group joined)."""
    for service in ("budget", "settlement"):
        stack.stop(service)
    for service in ("budget", "settlement"):
        subprocess.run([sys.executable, "-m", "ops", "replay-from-start", service], cwd=ROOT,
                       env=dict(stack.env, PYTHONPATH=str(ROOT)), check=True, capture_output=True, timeout=120)
    started = time.monotonic()
    stack.start("budget")
    stack.start("settlement")
    deadline = started + 3600
    ready_at = None
    while not all(check() for check in expected.values()):
        if ready_at is None and _quietly(lambda: all(
                httpx.get(f"{stack.service_url(s)}/internal/health", timeout=2).status_code == 200
                for s in ("budget", "settlement")))():
            ready_at = time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError("replay did not finish")
        time.sleep(0.25)
    done = time.monotonic()
    return done - started, done - (ready_at or started)


def _quietly(check: Callable[[], bool]) -> Callable[[], bool]:
    def wrapped() -> bool:
        try:
            return check()
        except (httpx.HTTPError, ValueError, KeyError):
            return False
    return wrapped


def framework_floor(stack: Stack, count: int) -> dict[str, dict]:
    """What merely receiving `count` care.logged events costs: plain aiokafka, the stream kernel with handlers
    that do nothing, and a do-nothing Faust agent (ops/bench_floor.py), each in a process of its own."""
    out = {}
    for mode in ("aiokafka", "kernel", "faust"):
        done = subprocess.run([sys.executable, "-m", "ops.bench_floor", mode, "--count", str(count),
                               "--bootstrap", f"127.0.0.1:{stack.broker_port}"], cwd=ROOT, env=stack.env,
                              capture_output=True, text=True, timeout=600)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"ops.bench_floor {mode} printed no figure: {done.stderr[-2000:]}")
        out[mode] = json.loads(lines[-1])
    return out


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.bench")
    parser.add_argument("--registrations", type=int, default=200_000,
                        help="registrations pushed through the whole pipeline (e.g. 20000 for a quick run)")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--latency-rate", type=float, default=1000.0,
                        help="registrations/s of the background load while latency is probed")
    parser.add_argument("--latency-max-s", type=float, default=120.0,
                        help="stop probing after this long even with fewer samples")
    parser.add_argument("--out", default="var/bench.json")
    args = parser.parse_args()
    n = args.registrations
    with bench_stack() as (stack, api):
        items = registrations("bench", n)
        raw = asyncio.run(raw_produce(f"127.0.0.1:{stack.broker_port}", items))
        t0 = time.monotonic()
        ingest_rate = ingest(api, items)
        accepted_at = wait_processed(stack, n)
        books_at = wait_books(stack, n)
        validated_rate = n / (accepted_at - t0)
        pipeline_rate = n / (books_at - t0)
        invariant = httpx.get(f"{stack.service_url('settlement')}/internal/invariant",
                              params={"arrangement_id": ARRANGEMENT}, timeout=300).json()["arrangements"][0]
        assert invariant["registrations"] == n and invariant["ok"], invariant
        floor = framework_floor(stack, n)
        latencies, achieved_rate = pot_latency(api, args.latency_samples, args.latency_rate, args.latency_max_s)
        # Everything on care.logged now: the bench pot, the background pot, the probes.
        totals = {aid: pot_registrations(stack, aid) for aid in (ARRANGEMENT, "bench-bg-arr", "bench-probe-arr")}
        events = sum(totals.values())
        replay_s, replay_after_ready_s = replay(stack, {
            "budget": _quietly(lambda: all(pot_registrations(stack, aid) >= c for aid, c in totals.items())),
            "settlement": _quietly(lambda: settlement_applied(stack) >= events)})
        replay_rate = events / replay_s
    lat = lambda pct: round(percentile(latencies, pct) * 1000, 1)  # noqa: E731
    report = {
        "registrations": n,
        "raw_produce_per_s": round(raw),
        "ingest_per_s": round(ingest_rate),
        "ingest_ratio": round(ingest_rate / raw, 3),
        "gateway_to_accepted_per_s": round(validated_rate),
        "gateway_to_accepted_ratio": round(validated_rate / raw, 3),
        "pipeline_per_s": round(pipeline_rate),
        "pipeline_ratio": round(pipeline_rate / raw, 3),
        "framework_floor": {
            "what": "consuming care.logged and doing nothing, per event: CPU of that consumer alone",
            "aiokafka_cpu_us_per_event": floor["aiokafka"]["cpu_us_per_event"],
            "aiokafka_per_s": floor["aiokafka"]["per_s"],
            "kernel_cpu_us_per_event": floor["kernel"]["cpu_us_per_event"],
            "kernel_per_s": floor["kernel"]["per_s"],
            "kernel_ratio_to_aiokafka": round(floor["kernel"]["cpu_us_per_event"]
                                              / floor["aiokafka"]["cpu_us_per_event"], 1),
            "faust_agent_cpu_us_per_event": floor["faust"]["cpu_us_per_event"],
            "faust_agent_per_s": floor["faust"]["per_s"],
            "faust_ratio_to_aiokafka": round(floor["faust"]["cpu_us_per_event"]
                                             / floor["aiokafka"]["cpu_us_per_event"], 1),
        },
        "pot_latency_ms": {"p50": lat(50), "p95": lat(95), "p99": lat(99), "samples": len(latencies),
                           "mean": round(statistics.mean(latencies) * 1000, 1),
                           "background_posted_per_s": round(achieved_rate)},
        "replay": {"events": events, "seconds": round(replay_s, 1), "events_per_s": round(replay_rate),
                   "seconds_after_ready": round(replay_after_ready_s, 1),
                   "ratio": round(replay_rate / raw, 3)},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"\n{'figure':<44}{'value':>12}{'ratio to raw produce':>24}")
    rows = [("raw produce (aiokafka), /s", report["raw_produce_per_s"], 1.0),
            ("POST /hours/batch accepted, /s", report["ingest_per_s"], report["ingest_ratio"]),
            ("gateway -> accepted (hours), /s", report["gateway_to_accepted_per_s"], report["gateway_to_accepted_ratio"]),
            ("gateway -> pots + settlement books, /s", report["pipeline_per_s"], report["pipeline_ratio"]),
            ("replay budget + settlement from 0, events/s", report["replay"]["events_per_s"], report["replay"]["ratio"])]
    for name, value, ratio in rows:
        print(f"{name:<44}{value:>12}{ratio:>24.3f}")
    fl = report["framework_floor"]
    print(f"{'receive only, CPU us/event: aiokafka':<44}{fl['aiokafka_cpu_us_per_event']:>12}{1.0:>24.1f}")
    print(f"{'  kernel (no-op handlers)':<44}{fl['kernel_cpu_us_per_event']:>12}{fl['kernel_ratio_to_aiokafka']:>24.1f}")
    print(f"{'  faust agent (no-op)':<44}{fl['faust_agent_cpu_us_per_event']:>12}{fl['faust_ratio_to_aiokafka']:>24.1f}")
    pot = report["pot_latency_ms"]
    print(f"{'202 -> GET /pots moved, ms (at %d/s)' % pot['background_posted_per_s']:<44}"
          f"{'p50 %.1f  p95 %.1f  p99 %.1f' % (pot['p50'], pot['p95'], pot['p99']):>36}")


if __name__ == "__main__":
    main()
