"""Database engines: one code path for SQLite (embedded) and PostgreSQL (compose), SQLAlchemy Core async.

SQLite gets WAL (readers do not block the writer), synchronous=FULL (a 202 survives a power cut, not only a
process crash), a busy timeout, and BEGIN IMMEDIATE for write transactions (`engine.begin()`) so two writers
queue instead of failing with "database is locked" halfway through a transaction. Within one process the
write transactions also queue on an asyncio lock first: SQLite lets a waiting writer poll with sleeps of
up to 100 ms (measured: BEGIN IMMEDIATE p99 22-31 ms, max 170 ms in each service at 1,000 registrations/s),
which added up hop after hop in the pipeline; the lock hands over the moment the previous writer commits.
Reads (`engine.connect()`, `readonly(engine)`) start deferred and never wait for a writer.
"""
from __future__ import annotations

import asyncio
import contextlib
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

from sqlalchemy import Column, Dialect, MetaData, Table, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shared import sqlite_inline


WRITE_LOCK_TIMEOUT_S = 60.0  # as SQLite's own busy timeout: a writer that waits longer gets an error


class SQLiteEngine(AsyncEngine):
    """An AsyncEngine whose write transactions (`begin()`) queue on an asyncio lock (see the module doc)."""

    def __init__(self, sync_engine) -> None:  # noqa: ANN001
        super().__init__(sync_engine)
        self._write_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        try:
            await asyncio.wait_for(self._write_lock.acquire(), WRITE_LOCK_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no write transaction on {self.url.database} within {WRITE_LOCK_TIMEOUT_S:.0f} s "
                               "(a writer is stuck, or a write transaction was begun inside another)") from None
        try:
            async with self.connect() as conn:
                await conn.execution_options(zorgpot_write=True)
                async with conn.begin():
                    yield conn
        finally:
            self._write_lock.release()


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Calls run on the loop's thread instead of aiosqlite's worker thread (shared/sqlite_inline.py).
        engine = SQLiteEngine(create_async_engine(url, async_creator=partial(sqlite_inline.open_connection,
                                                                             path, timeout=60)).sync_engine)

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
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("zorgpot_write") else "BEGIN")

        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def readonly(engine: AsyncEngine) -> AsyncEngine:
    """The same engine, for reads only: says so where it is used (on SQLite every `connect()` reads)."""
    return engine.execution_options(readonly=True)


async def create_tables(engine: AsyncEngine, metadata: MetaData) -> None:
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Several workers of a service can start at once against an empty database (compose --scale):
            # one creates the tables, the others wait here and then find them (DDL is transactional there).
            await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727366)")
        await conn.run_sync(metadata.create_all)


async def insert_rows(conn: AsyncConnection, table: Table, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """INSERT `rows` (plain tuples, values in `columns` order) with one DB-API executemany.

    `conn.execute(table.insert(), [dict, ...])` builds a parameter dict per row and runs every value through
    its column type's conversion; for the batches the services write (1,000 outbox rows a request) that costs
    more than the insert itself (ops/bench_ingest.py). Here the statement is compiled once per dialect and
    the tuples go to the driver as they are, so each value must be one the driver takes unconverted: str,
    int, bytes, None, or `driver_value()` of its column (datetimes and booleans on SQLite, for instance).
    """
    if rows:
        await conn.exec_driver_sql(_plain_insert_sql(table, columns, conn.dialect), rows)


def driver_value(conn: AsyncConnection, column: Column, value: object) -> object:
    """`value` as SQLAlchemy would hand it to this connection's driver for `column` (for `insert_rows`)."""
    process = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return process(value) if process is not None else value


@lru_cache(maxsize=64)
def _plain_insert_sql(table: Table, columns: tuple[str, ...], dialect: Dialect) -> str:
    """The INSERT of exactly `columns` as the driver's SQL, its positional parameters in `columns` order."""
    compiled = table.insert().inline().compile(dialect=dialect, column_keys=list(columns))
    if not compiled.positional:  # sqlite3/aiosqlite (qmark) and asyncpg (numeric) are positional
        raise NotImplementedError(f"insert_rows passes tuples; driver {dialect.driver} takes named parameters")
    if tuple(compiled.positiontup or ()) != columns:
        raise ValueError(f"INSERT INTO {table.name} takes its parameters as {compiled.positiontup}, not {columns}: "
                         "list the columns in the table's order, every one without a Python-side default")
    return str(compiled)


async def insert_dicts(conn: AsyncConnection, table: Table, rows: list[dict]) -> None:
    """`conn.execute(table.insert(), rows)` for the stream services' per-batch inserts, through `insert_rows`.

    The same rows and stored values, but each column's conversion is looked up once per batch rather than
    once per value, and the driver gets plain tuples. Every row must have the keys of the first.
    """
    if not rows:
        return
    columns = tuple(column.name for column in table.columns if column.name in rows[0])
    convert = [table.c[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect) for name in columns]
    if any(convert):
        tuples = [tuple(f(row[name]) if f is not None else row[name] for name, f in zip(columns, convert))
                  for row in rows]
    else:
        tuples = [tuple(row[name] for name in columns) for row in rows]
    await insert_rows(conn, table, columns, tuples)


IN_BUCKET = 50  # IN lists are padded to a multiple of this, so few statement shapes are ever compiled


async def select_where_in(conn: AsyncConnection, columns: tuple[Column, ...], key: Column, values: Iterable[Any]
                          ) -> list[Any]:
    """`SELECT columns FROM key's table WHERE key IN values`, as the driver's own SQL with plain parameters.

    SQLAlchemy renders an IN list of 1,000 parameters anew at every execution (~3 ms, measured with py-spy in
    each stream service's batch loop). Here the statement for a padded list length is compiled once per
    dialect and the values go to the driver as a tuple, so each returned value is what the driver gives
    (use it for strings, bytes, integers and booleans, which SQLite returns as 0/1; not for dates)."""
    wanted = list(dict.fromkeys(values))
    if not wanted:
        return []
    rows: list[Any] = []
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start:start + 1000]
        size = -(-len(chunk) // IN_BUCKET) * IN_BUCKET
        chunk += [chunk[-1]] * (size - len(chunk))  # a repeated value changes nothing in an IN list
        sql = _select_in_sql(columns, key, size, conn.dialect)
        rows.extend((await conn.exec_driver_sql(sql, tuple(chunk))).all())
    return rows


@lru_cache(maxsize=256)
def _select_in_sql(columns: tuple[Column, ...], key: Column, size: int, dialect: Dialect) -> str:
    from sqlalchemy import bindparam, select

    names = [f"in_{i}" for i in range(size)]
    compiled = select(*columns).where(key.in_([bindparam(name) for name in names])).compile(dialect=dialect)
    if not compiled.positional or list(compiled.positiontup or ()) != names:
        raise NotImplementedError(f"select_where_in needs a positional driver, not {dialect.driver}")
    return str(compiled)
