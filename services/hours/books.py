"""The hours service's own database: one row per registration (its fate), plus outbox and registry copy."""
from __future__ import annotations

from sqlalchemy import Column, Date, Integer, LargeBinary, MetaData, String, Table, Text

metadata = MetaData()

registrations = Table(
    "registrations", metadata,
    Column("registration_id", String(64), primary_key=True),
    Column("school_id", String(64), nullable=False, index=True),
    Column("content_hash", String(64), nullable=False),
    Column("status", String(10), nullable=False),  # accepted | rejected | voided
    Column("reasons", Text, nullable=True),  # JSON list of strings for rejected
    Column("arrangement_id", String(64), nullable=True),
    Column("date", Date, nullable=True),
    Column("minutes", Integer, nullable=False),
    Column("hourly_rate_cents", Integer, nullable=True),
    Column("cost_cent_minutes", Integer, nullable=True),
    Column("void_reason", Text, nullable=True),
    Column("event", LargeBinary, nullable=True),  # the care.logged event as published, for audit
)
