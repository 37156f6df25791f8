"""A service's own database on a temporary SQLite file, with the tables the runtime adds (outbox,
registry copy), for service-layer unit tests."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import create_tables, make_engine
from shared.outbox import outbox_tables
from shared.registry import registry_table


RUNTIME_TABLES = {"outbox", "relay_state", "registry_docs", "applied_events", "consumer_positions", "parked_events",
                  "deadletters"}


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


async def migrated_books(tmp_path: Path, service: str) -> AsyncEngine:
    """The service's database on a temporary SQLite file, made by its Alembic migrations (as at start-up)."""
    from shared.migrations import migrate

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / f'{service}.db'}")
    await migrate(engine, f"services/{service}/migrations")
    return engine


def offline_kernel(process, engine: AsyncEngine, service_metadata: MetaData):  # noqa: ANN001, ANN201
    """A StreamKernel for `process` on `engine` that is fed with `apply_events` / `apply_records`, no broker."""
    from shared.kernel import StreamKernel, kernel_tables

    metadata = MetaData()
    for table in service_metadata.tables.values():
        if table.name not in RUNTIME_TABLES:
            table.to_metadata(metadata)
    outbox, _ = outbox_tables(metadata)
    registry_table(metadata)
    return StreamKernel(process, engine, kernel_tables(metadata), outbox, bootstrap="unused:0",
                        group_id=f"test-{process.name}", backoff_s=0.001, max_backoff_s=0.01)
