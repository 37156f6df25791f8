"""Baseline: the budget schema as the last version before Alembic left it.

Creates only what is missing, so it takes up books made before the project used Alembic as well as an empty
database, and adds what older books lack.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from shared.migrations import create_common_tables, create_registry_table, has_table, indexes_of

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_common_tables()
    create_registry_table()
    if not has_table("applied_events"):
        op.create_table(
            "applied_events",
            sa.Column("event_id", sa.String(100), primary_key=True),
            sa.Column("type", sa.String(40), nullable=False),
            sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        )
    if not has_table('ledger'):
        op.create_table('ledger',
            sa.Column('registration_id', sa.String(length=64), nullable=False),
            sa.Column('arrangement_id', sa.String(length=64), nullable=False),
            sa.Column('cost_cent_minutes', sa.Integer(), nullable=False),
            sa.Column('voided', sa.Boolean(), nullable=False),
            sa.Column('facts', sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint('registration_id')
        )
        op.create_index(('ix_ledger_arrangement_id'), 'ledger', ['arrangement_id'], unique=False)
        op.create_index('ix_ledger_arrangement_live_cost', 'ledger', ['arrangement_id', 'voided', 'cost_cent_minutes'], unique=False)
    if not has_table('pots'):
        op.create_table('pots',
            sa.Column('arrangement_id', sa.String(length=64), nullable=False),
            sa.Column('school_id', sa.String(length=64), nullable=False),
            sa.Column('book', sa.LargeBinary(), nullable=False),
            sa.Column('alerts_emitted', sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint('arrangement_id')
        )
        op.create_index(('ix_pots_school_id'), 'pots', ['school_id'], unique=False)
    if "ix_ledger_arrangement_live_cost" not in indexes_of("ledger"):  # books older than the covering index
        op.create_index("ix_ledger_arrangement_live_cost", "ledger", ["arrangement_id", "voided", "cost_cent_minutes"])


def downgrade() -> None:
    raise NotImplementedError("the baseline is not undone: empty the database instead")
