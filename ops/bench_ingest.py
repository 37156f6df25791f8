"""In-process profile harness for `POST /api/v1/hours/batch` (python -m ops.bench_ingest).

`make bench` measures ingest through a full stack (broker, four services, real HTTP), which takes minutes
and mixes in everything else the machine does. This harness times only the gateway's batch path: the real
gateway app (`create_app`, its lifespan, its SQLite database with WAL and synchronous=FULL in a temporary
directory) driven through httpx.ASGITransport, with the registry `ops.bench` seeds (one school, group and
arrangement) and the very registrations `ops.bench` posts, in batches of 1,000 pre-serialised JSON bodies.

HARNESS ONLY, NO BROKER: the gateway's outbox relay is replaced by `_NoBrokerRelay`, which never publishes
and reports the broker available, so `require_broker` (unchanged) lets the writes through; the webhook
statement feed is replaced by `_NoBrokerFeed`, which does not try to reach a broker. The outbox rows
are still written in the request's transaction, exactly as in the product; nothing drains them, so the
relay's own share of the gateway process (reading the outbox, producing, marking rows published) is not in
these figures.

Baseline in the same run: `orjson.loads` of the same bodies and nothing else. The machine is shared and
noisy: compare the ratios, not the absolute numbers. To see where the time goes, run it under a sampling
profiler, e.g. `py-spy record -o /tmp/ingest.svg -- .venv/bin/python -m ops.bench_ingest --batches 100`
(py-spy is not one of the project's dependencies: `pip install py-spy` into the venv first).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

import services.gateway.app as gateway_app
import services.gateway.settlements as gateway_settlements
from ops.bench import ARRANGEMENT, GROUP, SCHOOL, START, registrations
from services.gateway.parsing import parse_batch
from services.gateway.webhooks import StatementFeed
from shared.outbox import OutboxRelay
from shared.settings import Settings


class _NoBrokerRelay(OutboxRelay):
    """HARNESS ONLY: an outbox relay without a broker. It publishes nothing and says the broker is there,
    so the product's `require_broker` dependency passes; the product code itself is not changed."""

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._wake.wait()

    def broker_available(self) -> bool:
        return True

    async def stop(self) -> None:
        self._stopping = True
        self.wake()


class _NoBrokerFeed(StatementFeed):
    """HARNESS ONLY: the webhook statement feed without a broker (it would only retry connecting)."""

    async def run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.2)


async def seed(api: httpx.AsyncClient) -> None:
    """The registry `ops.bench.seed` puts in (one school, one group, eight pupils, one arrangement)."""
    async def put(path: str, body: dict[str, Any]) -> None:
        (await api.put(path, json=body)).raise_for_status()

    await put("/municipalities/GM0984", {"name": "Venray"})
    await put(f"/schools/{SCHOOL}", {"name": f"Bench school {SCHOOL}", "municipality": "GM0984"})
    await put(f"/schools/{SCHOOL}/groups/{GROUP}", {"name": "g1"})
    for i in range(8):
        await put(f"/schools/{SCHOOL}/pupils/p{i}", {
            "group_id": GROUP, "enrolled_from": START.isoformat(),
            "residence": [{"municipality": "GM0984", "from": START.isoformat()}]})
    await put(f"/arrangements/{ARRANGEMENT}", {
        "school_id": SCHOOL, "group_ids": [GROUP], "start": START.isoformat(), "end": "2026-07-31",
        "rates": [{"from": START.isoformat(), "hourly_rate_cents": 6500}], "cap_cents": 10**12,
        "settlement": {"key": "residence_hours"}})


def bodies(prefix: str, batches: int, size: int) -> list[bytes]:
    return [orjson.dumps(registrations(f"{prefix}-{b}", size)) for b in range(batches)]


async def post_all(api: httpx.AsyncClient, batch_bodies: list[bytes], expect: str) -> list[float]:
    """POST each body; seconds per batch. `expect`: every item 'accepted' or every item a 'duplicate'."""
    times = []
    for body in batch_bodies:
        started = time.perf_counter()
        reply = await api.post("/hours/batch", content=body, headers={"content-type": "application/json"})
        times.append(time.perf_counter() - started)
        assert reply.status_code == 200, reply.text[:500]
        answer = reply.json()
        outcome = "accepted" if expect == "accepted" else "duplicates"
        assert answer[outcome] == answer["received"] and not answer["rejected"], str(answer)[:500]
    return times


def time_each(fn: Any, batch_bodies: list[bytes], repeat: int) -> list[float]:
    """Seconds per body of fn(body), the best of `repeat` passes (a pure function: the minimum is its cost)."""
    best = [float("inf")] * len(batch_bodies)
    for _ in range(repeat):
        for i, body in enumerate(batch_bodies):
            started = time.perf_counter()
            fn(body)
            best[i] = min(best[i], time.perf_counter() - started)
    return best


async def run(args: argparse.Namespace) -> dict[str, Any]:
    size = args.batch_size
    with tempfile.TemporaryDirectory(prefix="zorgpot-bench-ingest-") as tmp:
        token = f"zp_bench_{secrets.token_hex(8)}"
        # gateway_db="": the SQLite file in tmp, whatever ZORGPOT_GATEWAY_DB says; the broker address is never
        # contacted (_NoBrokerRelay, _NoBrokerFeed).
        settings = Settings(data_dir=Path(tmp), coordinator_token=token, demo=False, gateway_db="",
                            kafka_bootstrap="127.0.0.1:1")
        gateway_app.OutboxRelay = _NoBrokerRelay  # HARNESS ONLY (module docstring)
        gateway_settlements.StatementFeed = _NoBrokerFeed  # HARNESS ONLY
        app = gateway_app.create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway/api/v1", timeout=120,
                                         headers={"Authorization": f"Bearer {token}"}) as api:
                await seed(api)
                tag = secrets.token_hex(3)
                await post_all(api, bodies(f"warm-{tag}", args.warmup, size), "accepted")
                fresh = bodies(f"ingest-{tag}", args.batches, size)

                loads_before = time_each(orjson.loads, fresh, 3)
                cpu0 = time.process_time()
                ingest = await post_all(api, fresh, "accepted")
                ingest_cpu = time.process_time() - cpu0
                cpu0 = time.process_time()
                resend = await post_all(api, fresh, "duplicate")  # every item already stored: dedup path
                resend_cpu = time.process_time() - cpu0
                loads_after = time_each(orjson.loads, fresh, 3)
                parse = time_each(lambda b: parse_batch(b, "application/json"), fresh, 3)

    n = args.batches * size
    loads_s = statistics.median(loads_before + loads_after) * args.batches
    ingest_s, resend_s, parse_s = sum(ingest), sum(resend), sum(parse)
    report = {
        "batches": args.batches, "batch_size": size, "registrations": n,
        "baseline_orjson_loads_per_s": round(n / loads_s),
        "ingest_per_s": round(n / ingest_s),
        "ingest_ratio": round(loads_s / ingest_s, 4),
        "ingest_batch_ms": {"median": round(statistics.median(ingest) * 1000, 1),
                            "min": round(min(ingest) * 1000, 1), "max": round(max(ingest) * 1000, 1)},
        "ingest_cpu_s": round(ingest_cpu, 3),
        "ingest_cpu_share_of_wall": round(ingest_cpu / ingest_s, 3),
        "resend_duplicates_per_s": round(n / resend_s),
        "resend_ratio": round(loads_s / resend_s, 4),
        "resend_cpu_s": round(resend_cpu, 3),
        "parse_batch_per_s": round(n / parse_s),
        "parse_batch_ratio": round(loads_s / parse_s, 4),
        "parse_batch_share_of_ingest": round(parse_s / ingest_s, 3),
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.bench_ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="timed batches (default 20)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first (default 3)")
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print(json.dumps(report, indent=None if args.json else 2))
    if args.json:
        return
    print(f"\n{'figure (%d x %d registrations)' % (args.batches, args.batch_size):<52}{'per s':>10}"
          f"{'ratio to orjson.loads':>24}")
    rows = [("baseline: orjson.loads of the same bodies", report["baseline_orjson_loads_per_s"], 1.0),
            ("POST /hours/batch, all new (accepted)", report["ingest_per_s"], report["ingest_ratio"]),
            ("POST /hours/batch, same bodies again (duplicates)", report["resend_duplicates_per_s"],
             report["resend_ratio"]),
            ("parse_batch alone (parse + validate, no DB/HTTP)", report["parse_batch_per_s"],
             report["parse_batch_ratio"])]
    for name, value, ratio in rows:
        print(f"{name:<52}{value:>10}{ratio:>24.4f}")
    print(f"ingest: batch median {report['ingest_batch_ms']['median']} ms, CPU {report['ingest_cpu_s']} s "
          f"({report['ingest_cpu_share_of_wall']:.0%} of wall); parse_batch is "
          f"{report['parse_batch_share_of_ingest']:.0%} of the ingest wall time")


if __name__ == "__main__":
    main()
