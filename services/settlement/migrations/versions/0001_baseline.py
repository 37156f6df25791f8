"""Baseline: the settlement schema as the last version before Alembic left it.

Creates only what is missing, so it takes up books made before the project used Alembic as well as an empty
database, and adds what older books lack.

Revision ID: 0001
Revises:
"""
import json

import sqlalchemy as sa
from alembic import op

from shared.migrations import columns_of, create_common_tables, create_registry_table, has_table

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
            sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        )
    if not has_table('arrangement_state'):
        op.create_table('arrangement_state',
            sa.Column('arrangement_id', sa.String(length=64), nullable=False),
            sa.Column('closes_made', sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint('arrangement_id')
        )
    if not has_table('care_lines'):
        op.create_table('care_lines',
            sa.Column('registration_id', sa.String(length=64), nullable=False),
            sa.Column('arrangement_id', sa.String(length=64), nullable=False),
            sa.Column('school_id', sa.String(length=64), nullable=False),
            sa.Column('date', sa.Date(), nullable=False),
            sa.Column('minutes', sa.Integer(), nullable=False),
            sa.Column('cost_cent_minutes', sa.Integer(), nullable=False),
            sa.Column('attributions', sa.LargeBinary(), nullable=False),
            sa.Column('residences', sa.String(length=1000), nullable=True),
            sa.Column('attributed_to', sa.String(length=10), nullable=False),
            sa.Column('known_since_close', sa.Integer(), nullable=False),
            sa.Column('voided', sa.Boolean(), nullable=False),
            sa.Column('voided_since_close', sa.Integer(), nullable=True),
            sa.PrimaryKeyConstraint('registration_id')
        )
        op.create_index('ix_care_lines_arrangement', 'care_lines', ['arrangement_id'], unique=False)
    if not has_table('closes'):
        op.create_table('closes',
            sa.Column('arrangement_id', sa.String(length=64), nullable=False),
            sa.Column('sequence', sa.Integer(), nullable=False),
            sa.Column('period_start', sa.Date(), nullable=False),
            sa.Column('period_end', sa.Date(), nullable=False),
            sa.Column('record', sa.LargeBinary(), nullable=False),
            sa.Column('closed_at', sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint('arrangement_id', 'sequence'),
            sa.UniqueConstraint('arrangement_id', 'period_start', 'period_end', name='uq_close_period')
        )
    if not has_table('early_voids'):
        op.create_table('early_voids',
            sa.Column('registration_id', sa.String(length=64), nullable=False),
            sa.Column('event_id', sa.String(length=100), nullable=False),
            sa.PrimaryKeyConstraint('registration_id')
        )
    if not has_table('statements'):
        op.create_table('statements',
            sa.Column('statement_id', sa.String(length=200), nullable=False),
            sa.Column('arrangement_id', sa.String(length=64), nullable=False),
            sa.Column('municipality', sa.String(length=6), nullable=False),
            sa.Column('close_sequence', sa.Integer(), nullable=False),
            sa.Column('period_start', sa.Date(), nullable=False),
            sa.Column('period_end', sa.Date(), nullable=False),
            sa.Column('total_cents', sa.Integer(), nullable=False),
            sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
            sa.Column('doc', sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint('statement_id')
        )
        op.create_index('ix_statements_arrangement', 'statements', ['arrangement_id', 'close_sequence'], unique=False)
        op.create_index('ix_statements_municipality', 'statements', ['municipality', 'arrangement_id'], unique=False)
    if "residences" not in columns_of("care_lines"):  # books older than the residences column
        op.add_column("care_lines", sa.Column("residences", sa.String(length=1000), nullable=True))
    fill_residences()


def downgrade() -> None:
    raise NotImplementedError("the baseline is not undone: empty the database instead")


def fill_residences() -> None:
    """care_lines.residences of lines written before the column existed: the sorted residences of the line's
    attributed pupils, space-separated (services/settlement/books.residences_column, frozen here)."""
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT registration_id, attributions FROM care_lines WHERE residences IS NULL")).all()
    for rid, doc in rows:
        homes = " ".join(sorted(home for _ref, home in json.loads(doc)))
        conn.execute(sa.text("UPDATE care_lines SET residences = :homes WHERE registration_id = :rid"),
                     {"homes": homes, "rid": rid})
