"""Database engines: one code path for SQLite (embedded) and PostgreSQL (compose), SQLAlchemy Core async.

SQLite gets WAL (readers do not block the writer), synchronous=FULL (a 202 survives a power cut, not only a
process crash), a busy timeout, and BEGIN IMMEDIATE for write transactions so two writers queue instead of
failing with "database is locked" halfway through a transaction.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import MetaData, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection, _record):  # noqa: ANN001
            # Take over transaction control from the driver so we can say BEGIN IMMEDIATE ourselves.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn):  # noqa: ANN001
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("readonly") else "BEGIN IMMEDIATE")

        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def readonly(engine: AsyncEngine) -> AsyncEngine:
    """The same engine, but transactions start deferred (shared lock on SQLite): use it for reads."""
    return engine.execution_options(readonly=True)


async def create_tables(engine: AsyncEngine, metadata: MetaData) -> None:
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Several workers of a service can start at once against an empty database (compose --scale):
            # one creates the tables, the others wait here and then find them (DDL is transactional there).
            await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727366)")
        await conn.run_sync(metadata.create_all)
