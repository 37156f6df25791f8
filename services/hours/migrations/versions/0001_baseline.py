"""Baseline: the hours schema as the last version before Alembic left it.

Creates only what is missing, so it takes up books made before the project used Alembic as well as an empty
database.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from shared.migrations import create_common_tables, create_registry_table, has_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_common_tables()
    create_registry_table()
    if not has_table('registrations'):
        op.create_table('registrations',
            sa.Column('registration_id', sa.String(length=64), nullable=False),
            sa.Column('school_id', sa.String(length=64), nullable=False),
            sa.Column('content_hash', sa.String(length=64), nullable=False),
            sa.Column('status', sa.String(length=10), nullable=False),
            sa.Column('reasons', sa.Text(), nullable=True),
            sa.Column('arrangement_id', sa.String(length=64), nullable=True),
            sa.Column('date', sa.Date(), nullable=True),
            sa.Column('minutes', sa.Integer(), nullable=False),
            sa.Column('hourly_rate_cents', sa.Integer(), nullable=True),
            sa.Column('cost_cent_minutes', sa.Integer(), nullable=True),
            sa.Column('void_reason', sa.Text(), nullable=True),
            sa.Column('event', sa.LargeBinary(), nullable=True),
            sa.PrimaryKeyConstraint('registration_id')
        )
        op.create_index(('ix_registrations_school_id'), 'registrations', ['school_id'], unique=False)


def downgrade() -> None:
    raise NotImplementedError("the baseline is not undone: empty the database instead")
