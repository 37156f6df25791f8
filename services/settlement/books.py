"""The settlement service's own database: the exact care lines it settles, the closes and the statements it
issued (immutable), the event ids it applied (idempotent consumer), plus outbox and registry copy."""
from __future__ import annotations

from typing import Iterable, Sequence

import orjson
from sqlalchemy import (Boolean, Column, Date, DateTime, Index, Integer, LargeBinary, MetaData, String, Table,
                        UniqueConstraint, bindparam, inspect, select, update)
from sqlalchemy.ext.asyncio import AsyncEngine

from services.settlement.domain import residences_of

metadata = MetaData()

# Every care.logged / care.voided event applied, by its deterministic event id: a redelivery is a no-op.
applied_events = Table(
    "applied_events", metadata,
    Column("event_id", String(100), primary_key=True),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

# One row per accepted registration: domain.CareLine, persisted. `known_since_close` / `voided_since_close`
# are the number of closes of the arrangement made when the fact was first applied (design.md section 5).
care_lines = Table(
    "care_lines", metadata,
    Column("registration_id", String(64), primary_key=True),
    Column("arrangement_id", String(64), nullable=False),
    Column("school_id", String(64), nullable=False),
    Column("date", Date, nullable=False),
    Column("minutes", Integer, nullable=False),
    Column("cost_cent_minutes", Integer, nullable=False),
    Column("attributions", LargeBinary, nullable=False),  # JSON [[pupil_ref, municipality], ...]
    # The attributed pupils' residences, sorted, space-separated ("GM0984 GM0984 GM1507"): what a close
    # groups new care by (queries.care_summaries). Nullable only for books made before it existed; `upgrade`
    # fills it in at start-up.
    Column("residences", String(1000), nullable=True),
    Column("attributed_to", String(10), nullable=False),
    Column("known_since_close", Integer, nullable=False),
    Column("voided", Boolean, nullable=False, default=False),
    Column("voided_since_close", Integer, nullable=True),
)
Index("ix_care_lines_arrangement", care_lines.c.arrangement_id)

# A void that arrived before its registration (never expected: both share a partition, the void second).
# Kept, not dropped, and applied when the registration arrives.
early_voids = Table(
    "early_voids", metadata,
    Column("registration_id", String(64), primary_key=True),
    Column("event_id", String(100), nullable=False),
)

# One row per arrangement that has care or closes. Both the consumer and a close lock this row first
# (SELECT ... FOR UPDATE on PostgreSQL; SQLite serialises writers anyway), so `known_since_close` is always
# the count of closes committed before or after the line, never a count a concurrent close is changing.
arrangement_state = Table(
    "arrangement_state", metadata,
    Column("arrangement_id", String(64), primary_key=True),
    Column("closes_made", Integer, nullable=False),
)

closes = Table(
    "closes", metadata,
    Column("arrangement_id", String(64), primary_key=True),
    Column("sequence", Integer, primary_key=True),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("record", LargeBinary, nullable=False),  # domain.Close.to_dict() as JSON
    Column("closed_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("arrangement_id", "period_start", "period_end", name="uq_close_period"),
)

statements = Table(
    "statements", metadata,
    Column("statement_id", String(200), primary_key=True),
    Column("arrangement_id", String(64), nullable=False),
    Column("municipality", String(6), nullable=False),
    Column("close_sequence", Integer, nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("total_cents", Integer, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("doc", LargeBinary, nullable=False),  # the statement exactly as issued (JSON)
)
Index("ix_statements_municipality", statements.c.municipality, statements.c.arrangement_id)
Index("ix_statements_arrangement", statements.c.arrangement_id, statements.c.close_sequence)


def residences_column(attributions: Iterable[Sequence[str]]) -> str:
    """care_lines.residences of a registration's (pupil_ref, municipality) attributions."""
    return " ".join(residences_of((ref, home) for ref, home in attributions))


async def upgrade(engine: AsyncEngine) -> None:
    """Bring books made by an earlier version up to this schema (runs after create_tables, idempotent)."""
    async with engine.begin() as conn:
        columns = await conn.run_sync(lambda sync: {c["name"] for c in inspect(sync).get_columns("care_lines")})
        if "residences" not in columns:
            await conn.exec_driver_sql("ALTER TABLE care_lines ADD COLUMN residences VARCHAR(1000)")
        rows = (await conn.execute(select(care_lines.c.registration_id, care_lines.c.attributions)
                                   .where(care_lines.c.residences.is_(None)))).all()
        if rows:
            await conn.execute(
                update(care_lines).where(care_lines.c.registration_id == bindparam("rid"))
                .values(residences=bindparam("homes")),
                [{"rid": rid, "homes": residences_column(orjson.loads(doc))} for rid, doc in rows])
