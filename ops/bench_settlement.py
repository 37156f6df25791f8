"""Settlement close time at region scale, in process: `python -m ops.bench_settlement`.

Not through the running stack: pushing 1,000,000 registrations through gateway, hours and Kafka takes far
longer than the close it is meant to time. Instead the settlement service's own books are filled directly
(SQLite, the embedded default, the same tables `services/settlement/books.py` defines) with the care lines
the consumer would have written, and every arrangement's period is then closed through the service layer
(`SettlementService.close`: lock, history, lines, `domain.close_period`, close + statements + outbox in one
transaction), one arrangement after another, the way POST /settlements/close would.

The region: `--municipalities` municipalities (342 in the Netherlands), `--arrangements` schools with one
arrangement each (residence_hours key), `--pupils` pupils per school living in random municipalities, and
`--registrations` care lines spread evenly over the arrangements and over the year. One period is closed
per arrangement: the whole year, so every line is settled.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import MetaData

from services.settlement import books
from services.settlement.service import SettlementService
from shared.db import create_tables, make_engine
from shared.outbox import outbox_tables
from shared.registry import RegistryCopy, registry_table
from shared.schemas import CloseBatchRequest, CloseRequest

YEAR_START, YEAR_END = dt.date(2025, 1, 1), dt.date(2025, 12, 31)
RATE = 6500


def region(municipalities: int, arrangements: int, pupils: int, rng: random.Random
           ) -> tuple[RegistryCopy, list[str], dict[str, list[tuple[str, str]]]]:
    """Registry copy, arrangement ids, and per arrangement its pupils (ref, home)."""
    copy = RegistryCopy()
    version = 0

    def apply(kind: str, key: str, doc: dict[str, Any]) -> None:
        nonlocal version
        version += 1
        copy.apply(kind, key, doc, version)

    codes = [f"GM{1000 + i:04d}" for i in range(municipalities)]
    for code in codes:
        apply("municipality", code, {"name": f"Gemeente {code}", "youth_population": rng.randint(500, 50_000)})
    arrangement_ids, homes = [], {}
    for s in range(arrangements):
        school, host = f"school-{s:04d}", codes[s % len(codes)]
        apply("school", school, {"name": f"School {s}", "municipality": host})
        apply("group", f"{school}/g1", {"name": "g1"})
        kids = []
        for p in range(pupils):
            home = host if p % 2 else rng.choice(codes)
            apply("pupil", f"{school}/p{p}", {"group_id": "g1", "enrolled_from": YEAR_START.isoformat(),
                                              "residence": [{"municipality": home, "from": YEAR_START.isoformat()}]})
            kids.append((f"p{p}", home))
        arrangement_id = f"arr-{s:04d}"
        apply("arrangement", arrangement_id, {
            "school_id": school, "group_ids": ["g1"], "start": YEAR_START.isoformat(), "end": YEAR_END.isoformat(),
            "rates": [{"from": YEAR_START.isoformat(), "hourly_rate_cents": RATE}], "cap_cents": 10**12,
            "settlement": {"key": "residence_hours"}})
        arrangement_ids.append(arrangement_id)
        homes[arrangement_id] = kids
    return copy, arrangement_ids, homes


def fill(db: Path, arrangement_ids: list[str], homes: dict[str, list[tuple[str, str]]], registrations: int,
         rng: random.Random) -> None:
    """The care lines the consumer would have written (plain sqlite3: bulk speed, same columns)."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous=OFF")
    days = (YEAR_END - YEAR_START).days + 1
    per = registrations // len(arrangement_ids)
    n = 0
    for a, arrangement_id in enumerate(arrangement_ids):
        count = per + (1 if a < registrations - per * len(arrangement_ids) else 0)
        rows = []
        kids = homes[arrangement_id]
        for _ in range(count):
            minutes = rng.randint(5, 240)
            listed = rng.sample(kids, rng.randint(1, 3))
            rows.append((f"r{n}", arrangement_id, f"school-{a:04d}",
                         (YEAR_START + dt.timedelta(days=n % days)).isoformat(), minutes, minutes * RATE,
                         orjson.dumps([[ref, home] for ref, home in listed]), books.residences_column(listed),
                         "listed", 0, 0, None))
            n += 1
        conn.executemany("INSERT INTO care_lines (registration_id, arrangement_id, school_id, date, minutes, "
                         "cost_cent_minutes, attributions, residences, attributed_to, known_since_close, voided, "
                         "voided_since_close) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        conn.execute("INSERT INTO arrangement_state (arrangement_id, closes_made) VALUES (?, 0)", (arrangement_id,))
    conn.commit()
    conn.close()


def raw_read(db: Path, arrangement_ids: list[str]) -> tuple[float, float]:
    """Baseline: plain sqlite3 fetching every arrangement's care lines, the query a close starts with."""
    conn = sqlite3.connect(db)
    started, cpu = time.perf_counter(), time.process_time()
    for arrangement_id in arrangement_ids:
        conn.execute("SELECT registration_id, date, cost_cent_minutes, minutes, attributions, attributed_to, voided, "
                     "known_since_close, voided_since_close FROM care_lines WHERE arrangement_id = ?",
                     (arrangement_id,)).fetchall()
    result = time.perf_counter() - started, time.process_time() - cpu
    conn.close()
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    copy, arrangement_ids, homes = region(args.municipalities, args.arrangements, args.pupils, rng)
    with tempfile.TemporaryDirectory(prefix="zorgpot-bench-settlement-") as tmp:
        db = Path(tmp) / "settlement.db"
        metadata = MetaData()
        for table in books.metadata.tables.values():
            table.to_metadata(metadata)
        outbox, _ = outbox_tables(metadata)
        registry_table(metadata)
        engine = make_engine(f"sqlite+aiosqlite:///{db}")
        await create_tables(engine, metadata)
        started = time.perf_counter()
        fill(db, arrangement_ids, homes, args.registrations, rng)
        fill_s = time.perf_counter() - started
        read_s, read_cpu_s = raw_read(db, arrangement_ids)
        batch_db = Path(tmp) / "settlement-batch.db"
        with sqlite3.connect(db) as source, sqlite3.connect(batch_db) as target:
            source.backup(target)  # the same books for the batch close
        per_arrangement = []
        statements = charged = 0
        service = SettlementService(engine, copy, outbox, lambda: None)
        started, cpu_started = time.perf_counter(), time.process_time()
        for arrangement_id in arrangement_ids:
            t0 = time.perf_counter()
            outcome = await service.close(CloseRequest(arrangement_id=arrangement_id, period_start=YEAR_START,
                                                       period_end=YEAR_END))
            per_arrangement.append(time.perf_counter() - t0)
            assert outcome.created
            statements += len(outcome.statements)
            charged += outcome.close.charged_cents
        close_s, close_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        total, digest = await statements_digest(engine)

        batch_engine = make_engine(f"sqlite+aiosqlite:///{batch_db}")
        batch_service = SettlementService(batch_engine, copy, outbox, lambda: None)
        started, cpu_started = time.perf_counter(), time.process_time()
        outcomes = await batch_service.close_many(CloseBatchRequest(arrangement_ids=arrangement_ids,
                                                                    period_start=YEAR_START, period_end=YEAR_END))
        batch_s, batch_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        assert all(outcome.created for outcome in outcomes)
        _, batch_digest = await statements_digest(batch_engine)
    per_arrangement.sort()
    return {
        "what": "in-process: SettlementService.close one by one, and close_many at once, on SQLite books filled "
                "directly (not through the stack)",
        "municipalities": args.municipalities, "arrangements": args.arrangements,
        "registrations": args.registrations, "pupils_per_school": args.pupils,
        "fill_s": round(fill_s, 2),
        "close_all_s": round(close_s, 3),  # POST /settlements/close for each arrangement in turn
        "close_all_cpu_s": round(close_cpu_s, 3),  # CPU time of this process: less noisy on a shared machine
        "close_batch_s": round(batch_s, 3),  # one POST /settlements/close/batch for all of them
        "close_batch_cpu_s": round(batch_cpu_s, 3),
        "close_batch_to_raw_read_ratio": round(batch_s / read_s, 1),
        "batch_statements_identical": batch_digest == digest,
        "baseline_raw_read_s": round(read_s, 3),  # sqlite3 fetching the same lines, nothing else
        "baseline_raw_read_cpu_s": round(read_cpu_s, 3),
        "close_to_raw_read_ratio": round(close_s / read_s, 1),
        "close_per_arrangement_ms": {"p50": round(per_arrangement[len(per_arrangement) // 2] * 1000, 2),
                                     "max": round(per_arrangement[-1] * 1000, 2)},
        "lines_per_s": round(args.registrations / close_s),
        "statements": statements,
        "charged_cents": charged,
        "statements_sha256": digest,  # equal before and after an optimisation
        "charged_matches_cost": charged == sum_rounded(total, args.arrangements, charged),
    }


async def statements_digest(engine: Any) -> tuple[int, str]:
    """Sum of the care lines' cost and a digest of every statement document; disposes of the engine."""
    async with engine.connect() as conn:
        total = (await conn.exec_driver_sql("SELECT sum(cost_cent_minutes) FROM care_lines")).scalar_one()
        digest = hashlib.sha256()
        for (doc,) in await conn.exec_driver_sql("SELECT doc FROM statements ORDER BY statement_id"):
            digest.update(doc)
    await engine.dispose()
    return total, digest.hexdigest()[:16]  # equal before and after an optimisation


def sum_rounded(total_cent_minutes: int, arrangements: int, charged: int) -> int:
    """Each arrangement rounds its own total once (half-up), so the sum of charges may differ from the
    rounded grand total by at most half a cent per arrangement; returns `charged` when within that."""
    exact_cents = total_cent_minutes / 60
    return charged if abs(charged - exact_cents) <= arrangements / 2 else -1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registrations", type=int, default=1_000_000)
    parser.add_argument("--arrangements", type=int, default=500)
    parser.add_argument("--municipalities", type=int, default=342)
    parser.add_argument("--pupils", type=int, default=24, help="pupils per school")
    parser.add_argument("--seed", type=int, default=7)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.bench_settlement")
    add_arguments(parser)
    parser.add_argument("--out", default="var/bench-settlement.json")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
