"""Where the 202 -> `GET /pots` latency goes, hop by hop: `python -m ops.bench_hops [--rate 1000]`.

Starts a stack of its own (`ops.bench.bench_stack`), posts a paced background load into one pot and single
probe registrations into another (as `ops/bench.py`'s latency figure does), and splits each probe's latency
with the Kafka record timestamps the relays' producers set: 202 -> on `hours.submitted` (gateway outbox
relay) -> on `care.logged` (hours service, its relay) -> visible in `GET /pots` (budget service). All
clocks are this machine's. Prints p50/p90 per hop in milliseconds.
"""
from __future__ import annotations

import argparse
import json
import secrets
import threading
import time

import httpx
import orjson
from kafka import KafkaConsumer, TopicPartition

from ops.bench import bench_stack, registrations, seed


def record_times(broker_port: int, topic: str, wanted: set[str]) -> dict[str, float]:
    """registration id -> timestamp (s) of the record on `topic` that carries it."""
    consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{broker_port}", group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest", consumer_timeout_ms=1000)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        found: dict[str, float] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(found) < len(wanted):
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                for record in records:
                    if b"probe-" not in record.value:
                        continue
                    event = orjson.loads(record.value)
                    ids = [event.get("registration_id")]
                    if isinstance(event.get("registration"), dict):
                        ids.append(event["registration"].get("registration_id"))
                    found.update({rid: record.timestamp / 1000 for rid in ids if rid in wanted})
        return found
    finally:
        consumer.close()


def run(rate: float, samples: int) -> dict[str, dict[str, float]]:
    with bench_stack("zorgpot-bench-hops-") as (stack, api):
        seed(api, "bench-bg", "bench-bg-arr")
        seed(api, "bench-probe", "bench-probe-arr")
        stop, tag = threading.Event(), secrets.token_hex(3)

        def background() -> None:
            with httpx.Client(base_url=str(api.base_url), headers=dict(api.headers), timeout=60) as bg:
                n, started = 0, time.monotonic()
                while not stop.is_set():
                    bg.post("/hours/batch", json=registrations(f"bg-{tag}-{n}", 50, school="bench-bg")
                            ).raise_for_status()
                    n += 1
                    ahead = started + n * 50 / rate - time.monotonic()
                    if ahead > 0:
                        stop.wait(ahead)

        thread = threading.Thread(target=background, daemon=True)
        if rate > 0:
            thread.start()
        time.sleep(2)
        probes: dict[str, tuple[float, float, float]] = {}
        try:
            for item in registrations(f"probe-{tag}", samples, school="bench-probe"):
                before = api.get("/pots/bench-probe-arr").json()["spent_cents"]
                posted = time.time()
                assert api.post("/hours", json=item).status_code == 202
                accepted = time.time()
                while api.get("/pots/bench-probe-arr").json()["spent_cents"] == before:
                    time.sleep(0.002)
                probes[item["registration_id"]] = (posted, accepted, time.time())
                time.sleep(0.05)
        finally:
            stop.set()
            if rate > 0:
                thread.join()
        submitted = record_times(stack.broker_port, "hours.submitted", set(probes))
        logged = record_times(stack.broker_port, "care.logged", set(probes))
    hops: dict[str, list[float]] = {"POST /hours answered": [], "202 -> hours.submitted": [],
                                    "hours.submitted -> care.logged": [], "care.logged -> GET /pots": [],
                                    "202 -> GET /pots": []}
    for rid, (posted, accepted, visible) in probes.items():
        if rid in submitted and rid in logged:
            for name, seconds in zip(hops, (accepted - posted, submitted[rid] - accepted,
                                            logged[rid] - submitted[rid], visible - logged[rid],
                                            visible - accepted)):
                hops[name].append(seconds)
    return {name: {"p50_ms": round(sorted(v)[len(v) // 2] * 1000, 1),
                   "p90_ms": round(sorted(v)[int(len(v) * 0.9)] * 1000, 1), "samples": len(v)}
            for name, v in hops.items() if v}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.bench_hops")
    parser.add_argument("--rate", type=float, default=1000, help="background registrations/s (0: idle)")
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()
    print(json.dumps({"background_per_s": args.rate, "hops": run(args.rate, args.samples)}, indent=2))


if __name__ == "__main__":
    main()
