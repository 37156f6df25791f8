"""Funders other than municipalities (design.md section 9): a care line records the framework funder its
funding law routes it to, and a statement is addressed to a funder (a municipality's statement keeps its
`municipality`, a funder's has none).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

from shared.migrations import columns_of, indexes_of

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "funder" not in columns_of("care_lines"):
        op.add_column("care_lines", sa.Column("funder", sa.String(64), nullable=True))
    if "funder" not in columns_of("statements"):
        # batch mode: SQLite changes a column's nullability by copying the table.
        with op.batch_alter_table("statements") as batch:
            batch.add_column(sa.Column("funder", sa.String(64), nullable=True))
            batch.alter_column("municipality", existing_type=sa.String(6), nullable=True)
        op.execute("UPDATE statements SET funder = municipality WHERE funder IS NULL")
    if "ix_statements_funder" not in indexes_of("statements"):
        op.create_index("ix_statements_funder", "statements", ["funder", "arrangement_id"])


def downgrade() -> None:
    raise NotImplementedError("not undone: restore the database from a backup instead")
