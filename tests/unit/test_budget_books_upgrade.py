"""The budget migrations (services/budget/migrations, baseline 0001) add the reconciliation's covering index to
books made before it existed, and SQLite then answers the reconciliation's sum from that index alone."""
from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import inspect

from services.budget import books
from shared.db import make_engine
from shared.migrations import migrate


def test_upgrade_adds_the_covering_index_once_and_the_sum_reads_only_it(tmp_path: Path) -> None:
    async def scenario() -> tuple[set[str], str]:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'budget.db'}")
        try:
            async with engine.begin() as conn:  # books of an earlier version: the ledger without the index
                await conn.run_sync(lambda sync: books.ledger.create(sync))
                await conn.run_sync(lambda sync: books.live_cost_index.drop(sync))
            await migrate(engine, "services/budget/migrations")
            await migrate(engine, "services/budget/migrations")  # idempotent
            async with engine.connect() as conn:
                names = await conn.run_sync(lambda sync: {i["name"] for i in inspect(sync).get_indexes("ledger")})
                plan = " ".join(str(row[-1]) for row in await conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN SELECT arrangement_id, count(*), sum(cost_cent_minutes) FROM ledger "
                    "WHERE voided = 0 AND arrangement_id IN ('a') GROUP BY arrangement_id"))
            return names, plan
        finally:
            await engine.dispose()

    names, plan = asyncio.run(scenario())
    assert "ix_ledger_arrangement_live_cost" in names
    assert "COVERING INDEX ix_ledger_arrangement_live_cost" in plan
