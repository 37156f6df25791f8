"""The workers of one service share its database (scale-out): what they do at the same moment must not
fail. Runs on SQLite and, with ZORGPOT_TEST_DB=postgresql, on PostgreSQL, where it matters most."""
from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import MetaData, select

from shared.db import create_tables, make_engine
from shared.events import RegistryChanged
from shared.registry import RegistryCopy, RegistryStore, registry_table
from tests.integration.conftest import TEST_DB


def database_url(tmp_path: Path, database_server) -> str:  # noqa: ANN001
    if TEST_DB == "postgresql":
        return database_server.fresh_databases()["ZORGPOT_HOURS_DB"]
    return f"sqlite+aiosqlite:///{tmp_path / 'hours.db'}"


def changes(count: int) -> list[RegistryChanged]:
    """`count` versions over seven keys, so most versions replace an earlier document."""
    return [RegistryChanged(event_id=f"registry:{v}", version=v, kind="municipality", key=f"GM{1000 + v % 7}",
                            doc={"name": f"name at version {v}", "youth_population": v}) for v in range(1, count + 1)]


def test_two_workers_follow_the_registry_into_one_database_at_once(tmp_path: Path, database_server) -> None:  # noqa: ANN001
    url = database_url(tmp_path, database_server)

    async def run() -> tuple[list, list]:
        metadata = MetaData()
        table = registry_table(metadata)
        engines = [make_engine(url) for _ in range(2)]
        try:
            # Both workers start on an empty database: table creation and then the same registry batches.
            await asyncio.gather(*(create_tables(e, metadata) for e in engines))
            stores = [RegistryStore(e, table, RegistryCopy()) for e in engines]
            events = changes(60)

            async def follow(store: RegistryStore) -> None:
                for start in range(0, len(events), 5):
                    await store.apply_events(events[start:start + 5])

            outcome = await asyncio.gather(*(follow(s) for s in stores), return_exceptions=True)
            async with engines[0].connect() as conn:
                rows = (await conn.execute(select(table.c.key, table.c.version).order_by(table.c.key))).all()
            return outcome, [tuple(r) for r in rows]
        finally:
            for engine in engines:
                await engine.dispose()

    outcome, rows = asyncio.run(run())
    assert outcome == [None, None]
    # One document per key, the newest version of each: 60 versions over keys GM1000..GM1006.
    assert rows == [(f"GM{1000 + k}", max(v for v in range(1, 61) if v % 7 == k)) for k in range(7)]
