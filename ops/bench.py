"""`make bench`: throughput and latency measured against one embedded broker on this machine.

Every figure is reported next to a baseline measured in the same run (plain aiokafka producing the same
registration payloads), because these machines are noisy: compare ratios, not absolute numbers.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer

from ops.stack import Stack, free_port
from shared.events import HoursSubmitted, submission_event_id
from shared.kafka import create_topics
from shared.schemas import Registration
from shared.topics import TopicSpec

SCHOOL, GROUP, ARRANGEMENT = "bench-school", "g1", "bench-arr"
START = dt.date(2025, 8, 1)


def seed(api: httpx.Client) -> None:
    def put(path: str, body: dict) -> None:
        reply = api.put(path, json=body)
        reply.raise_for_status()

    put("/municipalities/GM0984", {"name": "Venray"})
    put(f"/schools/{SCHOOL}", {"name": "Bench school", "municipality": "GM0984"})
    put(f"/schools/{SCHOOL}/groups/{GROUP}", {"name": "g1"})
    for i in range(8):
        put(f"/schools/{SCHOOL}/pupils/p{i}", {"group_id": GROUP, "enrolled_from": START.isoformat(),
                                               "residence": [{"municipality": "GM0984", "from": START.isoformat()}]})
    put(f"/arrangements/{ARRANGEMENT}", {
        "school_id": SCHOOL, "group_ids": [GROUP], "start": START.isoformat(), "end": "2026-07-31",
        "rates": [{"from": START.isoformat(), "hourly_rate_cents": 6500}], "cap_cents": 10**12,
        "settlement": {"key": "residence_hours"}})


def registrations(prefix: str, count: int) -> list[dict]:
    return [{"registration_id": f"{prefix}-{i}", "school_id": SCHOOL, "group_id": GROUP,
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


def accept_latency(api: httpx.Client, samples: int) -> list[float]:
    """Seconds from the 202 to GET /hours/{id} answering accepted, one registration at a time."""
    latencies = []
    for item in registrations(f"lat-{secrets.token_hex(3)}", samples):
        reply = api.post("/hours", json=item)
        assert reply.status_code == 202, reply.text
        t202 = time.perf_counter()
        while api.get(f"/hours/{item['registration_id']}").json()["status"] != "accepted":
            time.sleep(0.002)
        latencies.append(time.perf_counter() - t202)
    return latencies


def wait_processed(stack: Stack, count: int, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = httpx.get(f"{stack.service_url('hours')}/internal/stats", timeout=10).json()
        if stats.get("accepted", {}).get("count", 0) >= count:
            return time.monotonic()
        time.sleep(0.2)
    raise TimeoutError("hours service did not catch up")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.bench")
    parser.add_argument("--registrations", type=int, default=50_000)
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--out", default="var/bench.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zorgpot-bench-") as tmp:
        token = f"zp_bench_{secrets.token_hex(8)}"
        stack = Stack(Path(tmp), free_port(), free_port(), token)
        stack.start_all(timeout=120)
        try:
            with httpx.Client(base_url=f"{stack.gateway_url}/api/v1", timeout=120,
                              headers={"Authorization": f"Bearer {token}"}) as api:
                seed(api)
                items = registrations("bench", args.registrations)
                raw = asyncio.run(raw_produce(f"127.0.0.1:{stack.broker_port}", items))
                t0 = time.monotonic()
                ingest_rate = ingest(api, items)
                done = wait_processed(stack, args.registrations)
                validated_rate = args.registrations / (done - t0)
                latencies = accept_latency(api, args.latency_samples)
        finally:
            stack.stop_all()
    report = {
        "registrations": args.registrations,
        "raw_produce_per_s": round(raw),
        "ingest_per_s": round(ingest_rate),
        "ingest_ratio": round(ingest_rate / raw, 3),
        "gateway_to_accepted_per_s": round(validated_rate),
        "gateway_to_accepted_ratio": round(validated_rate / raw, 3),
        "accept_latency_ms": {"p50": round(percentile(latencies, 50) * 1000, 1),
                              "p95": round(percentile(latencies, 95) * 1000, 1),
                              "p99": round(percentile(latencies, 99) * 1000, 1),
                              "samples": len(latencies), "mean": round(statistics.mean(latencies) * 1000, 1)},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"\n{'figure':<34}{'value':>12}{'ratio to raw produce':>24}")
    print(f"{'raw produce (aiokafka), /s':<34}{report['raw_produce_per_s']:>12}{1.0:>24.3f}")
    print(f"{'POST /hours/batch accepted, /s':<34}{report['ingest_per_s']:>12}{report['ingest_ratio']:>24.3f}")
    print(f"{'gateway -> accepted, /s':<34}{report['gateway_to_accepted_per_s']:>12}"
          f"{report['gateway_to_accepted_ratio']:>24.3f}")
    lat = report["accept_latency_ms"]
    print(f"{'202 -> accepted latency, ms':<34}{'p50 %.1f  p95 %.1f  p99 %.1f' % (lat['p50'], lat['p95'], lat['p99']):>36}")


if __name__ == "__main__":
    main()
