"""The gateway's own database: tokens (hashed), the reference data it is the source of, the idempotency
ledger of received registrations, and the outbox to Kafka."""
from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Date, DateTime, Integer, LargeBinary, MetaData, String, Table, Text

from shared.outbox import outbox_tables

metadata = MetaData()

tokens = Table(
    "tokens", metadata,
    Column("id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("subject", String(64), nullable=True),
    Column("label", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

registry_entities = Table(
    "registry_entities", metadata,
    Column("kind", String(20), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("school_id", String(64), nullable=True, index=True),
    Column("version", Integer, nullable=False),
    Column("doc", LargeBinary, nullable=False),
)

registry_meta = Table(
    "registry_meta", metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

submissions = Table(
    "submissions", metadata,
    Column("registration_id", String(64), primary_key=True),
    Column("school_id", String(64), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("void_reason", Text, nullable=True),
    Column("void_requested_at", DateTime(timezone=True), nullable=True),
)

webhooks = Table(
    "webhooks", metadata,
    Column("municipality", String(6), primary_key=True),
    Column("url", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
)

# One row per issued statement (from settlement.statements) to POST to its municipality's webhook; kept
# after delivery as the delivery record the coordinator sees.
deliveries = Table(
    "deliveries", metadata,
    Column("statement_id", String(200), primary_key=True),
    Column("municipality", String(6), nullable=False, index=True),
    Column("arrangement_id", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),  # the exact bytes POSTed (and signed) on every attempt
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("claimed_until", DateTime(timezone=True), nullable=True),  # lease: one gateway instance sends it
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("delivered_to", Text, nullable=True),
    # Give-up (webhook_give_up_hours): when the current run of failures began, and when it was given up.
    Column("failing_since", DateTime(timezone=True), nullable=True),
    Column("failed_at", DateTime(timezone=True), nullable=True),
)

# Payments actually made to a pot's payee (design.md section 10): the gateway is their source; each is
# published as payment.recorded on arrangement.payments with the same transaction (outbox).
payments = Table(
    "payments", metadata,
    Column("payment_id", String(64), primary_key=True),
    Column("arrangement_id", String(64), nullable=False, index=True),
    Column("date", Date, nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("reference", String(200), nullable=True),
    Column("content_hash", String(64), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

# Cap moved between two pots of a school board (drawing rights, design.md section 11): the gateway is the source;
# each is published as cap.transferred on board.transfers in the same transaction (outbox).
transfers = Table(
    "transfers", metadata,
    Column("transfer_id", String(64), primary_key=True),
    Column("board_id", String(64), nullable=False, index=True),
    Column("from_arrangement", String(64), nullable=False),
    Column("to_arrangement", String(64), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("date", Date, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

outbox, relay_state = outbox_tables(metadata)
