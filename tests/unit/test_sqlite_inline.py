"""shared/sqlite_inline.py: aiosqlite calls run on the event loop's own thread, except BEGIN IMMEDIATE,
which may wait for another process's write and so runs in a worker thread while the loop goes on."""
from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from shared.db import make_engine
from shared.sqlite_inline import open_connection


def test_calls_run_on_the_loops_thread_and_errors_reach_the_caller(tmp_path: Path) -> None:
    async def scenario() -> None:
        conn = await open_connection(str(tmp_path / "a.db"))
        try:
            await conn.create_function("thread_id", 0, threading.get_ident)
            cursor = await conn.execute("SELECT thread_id()")
            assert (await cursor.fetchone())[0] == threading.get_ident()
            with pytest.raises(sqlite3.OperationalError, match="no such table"):
                await conn.execute("SELECT * FROM missing")
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_begin_immediate_waits_for_another_writer_in_a_thread_while_the_loop_runs(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    other = sqlite3.connect(db, isolation_level=None)  # another process, as far as SQLite can tell
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")

    async def scenario() -> tuple[int, float, float]:
        conn = await open_connection(str(db), timeout=10, isolation_level=None)
        try:
            began = asyncio.ensure_future(conn.execute("BEGIN IMMEDIATE"))
            ticks = 0
            released_at = time.monotonic() + 0.3
            while time.monotonic() < released_at:  # the loop keeps running while BEGIN waits
                await asyncio.sleep(0.01)
                ticks += 1
                assert not began.done()
            other.execute("COMMIT")
            committed = time.monotonic()
            await began
            got = time.monotonic()
            await conn.execute("INSERT INTO t VALUES (2)")
            await conn.execute("COMMIT")
            return ticks, committed, got
        finally:
            await conn.close()

    ticks, committed, got = asyncio.run(scenario())
    other.close()
    assert ticks >= 10 and got >= committed
    rows = sqlite3.connect(db).execute("SELECT x FROM t ORDER BY x").fetchall()
    assert rows == [(1,), (2,)]


def test_engine_reads_and_writes_through_the_inline_driver(tmp_path: Path) -> None:
    async def scenario() -> list[int]:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
        try:
            async with engine.begin() as conn:
                await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
                await conn.exec_driver_sql("INSERT INTO t VALUES (1), (2)")
            async with engine.connect() as conn:
                return [row[0] for row in await conn.exec_driver_sql("SELECT x FROM t ORDER BY x")]
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == [1, 2]
