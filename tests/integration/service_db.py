"""Read a service's own database from a test, whichever engine the stack runs on (SQLite or PostgreSQL)."""
from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from ops.stack import Stack
from shared.db import make_engine


def db_url(stack: Stack, service: str) -> str:
    return stack.env_extra.get(f"ZORGPOT_{service.upper()}_DB") or \
        f"sqlite+aiosqlite:///{(stack.data_dir / f'{service}.db').resolve()}"


def query(stack: Stack, service: str, sql: str, **params: Any) -> list[tuple]:
    async def run() -> list[tuple]:
        engine = make_engine(db_url(stack, service))
        try:
            async with engine.connect() as conn:
                return [tuple(row) for row in (await conn.execute(text(sql), params)).all()]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def empty_books(stack: Stack, service: str, database_server: Any = None) -> None:
    """Throw a (stopped) service's database away: delete its SQLite files, or drop and recreate its
    PostgreSQL database (`database_server` is the session's tests/integration/postgres.PostgresServer)."""
    url = db_url(stack, service)
    if url.startswith("sqlite"):
        for suffix in ("", "-wal", "-shm"):
            (stack.data_dir / f"{service}.db{suffix}").unlink(missing_ok=True)
    else:
        assert database_server is not None, "a PostgreSQL stack needs the database_server fixture"
        database_server.recreate_database(url)
