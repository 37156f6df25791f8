"""The settlement close's database sums (services/settlement/queries.py) equal the domain's reference on
this run's database engine: SQLite here, PostgreSQL under ZORGPOT_TEST_DB=postgresql, where the same
SQLAlchemy expressions render differently (CASE, integer division, modulo, GROUP BY over a subquery)."""
from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from sqlalchemy import MetaData, delete

from services.settlement import books
from shared.db import create_tables, make_engine
from shared.outbox import outbox_tables
from shared.registry import registry_table
from tests.integration.conftest import TEST_DB, database_env
from tests.unit.test_settlement_queries import books_, compare_sums


def settlement_db_url(tmp_path: Path) -> str:
    return database_env().get("ZORGPOT_SETTLEMENT_DB") or f"sqlite+aiosqlite:///{tmp_path / 'settlement.db'}"


async def _fresh_and_compare(url: str, case: tuple) -> None:
    metadata = MetaData()
    for table in books.metadata.tables.values():
        table.to_metadata(metadata)
    outbox_tables(metadata)
    registry_table(metadata)
    engine = make_engine(url)  # per example: an async engine's connections belong to one event loop
    try:
        await create_tables(engine, metadata)
        async with engine.begin() as conn:
            await conn.execute(delete(metadata.tables["care_lines"]))
        await compare_sums(engine, *case)
    finally:
        await engine.dispose()


def test_database_sums_equal_the_domain_reference_on_this_engine(tmp_path: Path, database_server: object) -> None:
    url = settlement_db_url(tmp_path)
    assert url.startswith("postgresql") == (TEST_DB == "postgresql"), url

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])
    @given(books_())
    def check(case: tuple) -> None:
        asyncio.run(_fresh_and_compare(url, case))

    check()
