"""A service's own database on a temporary SQLite file, with the tables the runtime adds (outbox,
registry copy), for service-layer unit tests."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import create_tables, make_engine
from shared.outbox import outbox_tables
from shared.registry import registry_table


async def service_books(tmp_path: Path, service_metadata: MetaData, name: str) -> tuple[AsyncEngine, Table]:
    """(engine, outbox table); the service's tables are copied, so its module metadata stays untouched."""
    metadata = MetaData()
    for table in service_metadata.tables.values():
        table.to_metadata(metadata)
    outbox_tables(metadata)
    registry_table(metadata)
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}")
    await create_tables(engine, metadata)
    return engine, metadata.tables["outbox"]
