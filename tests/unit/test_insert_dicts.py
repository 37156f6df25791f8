"""shared.db.insert_dicts stores exactly what SQLAlchemy's own executemany stores: same text, same SQLite
storage classes, for every column type the services' batch inserts use (dates, datetimes, booleans, bytes,
NULLs)."""
from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from sqlalchemy import Boolean, Column, Date, DateTime, Integer, LargeBinary, MetaData, String, Table

from shared.db import create_tables, insert_dicts, make_engine

metadata = MetaData()
sample = Table(
    "sample", metadata,
    Column("id", String(10), primary_key=True),
    Column("day", Date, nullable=True),
    Column("at", DateTime(timezone=True), nullable=True),
    Column("flag", Boolean, nullable=False, default=False),
    Column("blob", LargeBinary, nullable=True),
    Column("count", Integer, nullable=True),
)


async def test_insert_dicts_stores_what_sqlalchemy_stores(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    await create_tables(engine, metadata)
    at = dt.datetime(2025, 3, 3, 12, 30, 1, 123456, tzinfo=dt.timezone.utc)

    def row(prefix: str, n: int) -> dict:
        return {"id": f"{prefix}{n}", "day": dt.date(2025, 3, n + 1) if n else None, "at": at if n != 1 else None,
                "flag": n % 2 == 0, "blob": b"\x00\xff" if n else None, "count": n}

    try:
        async with engine.begin() as conn:
            await conn.execute(sample.insert(), [row("a", n) for n in range(3)])
            await insert_dicts(conn, sample, [row("b", n) for n in range(3)])
            await insert_dicts(conn, sample, [])
    finally:
        await engine.dispose()
    raw = sqlite3.connect(tmp_path / "x.db")
    stored = {r[0]: r[1:] for r in raw.execute(
        "SELECT id, day, typeof(day), at, typeof(at), flag, typeof(flag), blob, typeof(blob), count FROM sample")}
    for n in range(3):
        assert stored[f"a{n}"] == stored[f"b{n}"]
    assert stored["b0"][5] == "integer" and stored["b2"][0] == "2025-03-03"
