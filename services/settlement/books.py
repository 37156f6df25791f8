"""The settlement service's own database: the exact care lines it settles, the closes and the statements it
issued (immutable), plus outbox, registry copy and the stream kernel's tables (applied event ids, positions,
parked events, dead letters). The schema is made by the Alembic scripts in services/settlement/migrations/."""
from __future__ import annotations

from typing import Iterable, Sequence

from sqlalchemy import (Boolean, Column, Date, DateTime, Index, Integer, LargeBinary, MetaData, String, Table,
                        UniqueConstraint)

from services.settlement.domain import residences_of

metadata = MetaData()

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
    # The framework funder its funding law routes it to (settlement.frameworks); NULL: the municipalities.
    Column("funder", String(64), nullable=True),
)
Index("ix_care_lines_arrangement", care_lines.c.arrangement_id)

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
    Column("municipality", String(6), nullable=True),  # NULL on a statement to a funder other than a municipality
    Column("close_sequence", Integer, nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("total_cents", Integer, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("doc", LargeBinary, nullable=False),  # the statement exactly as issued (JSON)
    Column("funder", String(64), nullable=True),  # municipality code or funder id; NULL never after 0003
)
Index("ix_statements_funder", statements.c.funder, statements.c.arrangement_id)
Index("ix_statements_municipality", statements.c.municipality, statements.c.arrangement_id)
Index("ix_statements_arrangement", statements.c.arrangement_id, statements.c.close_sequence)


def residences_column(attributions: Iterable[Sequence[str]]) -> str:
    """care_lines.residences of a registration's (pupil_ref, municipality) attributions."""
    return " ".join(residences_of((ref, home) for ref, home in attributions))
