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
