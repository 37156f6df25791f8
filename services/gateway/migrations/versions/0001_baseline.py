"""Baseline: the gateway schema as the last version before Alembic left it.

Creates only what is missing, so it takes up books made before the project used Alembic as well as an empty
database.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from shared.migrations import create_common_tables, has_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_common_tables()
    if not has_table('deliveries'):
        op.create_table('deliveries',
            sa.Column('statement_id', sa.String(length=200), nullable=False),
            sa.Column('municipality', sa.String(length=6), nullable=False),
            sa.Column('arrangement_id', sa.String(length=64), nullable=False),
            sa.Column('body', sa.LargeBinary(), nullable=False),
            sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
            sa.Column('attempts', sa.Integer(), nullable=False),
            sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
            sa.Column('last_error', sa.Text(), nullable=True),
            sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
            sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
            sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
            sa.Column('delivered_to', sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint('statement_id')
        )
        op.create_index(('ix_deliveries_municipality'), 'deliveries', ['municipality'], unique=False)
    if not has_table('registry_entities'):
        op.create_table('registry_entities',
            sa.Column('kind', sa.String(length=20), nullable=False),
            sa.Column('key', sa.String(length=200), nullable=False),
            sa.Column('school_id', sa.String(length=64), nullable=True),
            sa.Column('version', sa.Integer(), nullable=False),
            sa.Column('doc', sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint('kind', 'key')
        )
        op.create_index(('ix_registry_entities_school_id'), 'registry_entities', ['school_id'], unique=False)
    if not has_table('registry_meta'):
        op.create_table('registry_meta',
            sa.Column('id', sa.Integer(), nullable=False),
            sa.Column('version', sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint('id')
        )
    if not has_table('submissions'):
        op.create_table('submissions',
            sa.Column('registration_id', sa.String(length=64), nullable=False),
            sa.Column('school_id', sa.String(length=64), nullable=False),
            sa.Column('content_hash', sa.String(length=64), nullable=False),
            sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
            sa.Column('void_reason', sa.Text(), nullable=True),
            sa.Column('void_requested_at', sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint('registration_id')
        )
    if not has_table('tokens'):
        op.create_table('tokens',
            sa.Column('id', sa.String(length=32), nullable=False),
            sa.Column('token_hash', sa.String(length=64), nullable=False),
            sa.Column('role', sa.String(length=20), nullable=False),
            sa.Column('subject', sa.String(length=64), nullable=True),
            sa.Column('label', sa.String(length=200), nullable=True),
            sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
            sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint('id'),
            sa.UniqueConstraint('token_hash')
        )
    if not has_table('webhooks'):
        op.create_table('webhooks',
            sa.Column('municipality', sa.String(length=6), nullable=False),
            sa.Column('url', sa.Text(), nullable=False),
            sa.Column('secret', sa.Text(), nullable=False),
            sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
            sa.Column('active', sa.Boolean(), nullable=False),
            sa.PrimaryKeyConstraint('municipality')
        )


def downgrade() -> None:
    raise NotImplementedError("the baseline is not undone: empty the database instead")
