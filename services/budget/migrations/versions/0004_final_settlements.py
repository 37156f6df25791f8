"""Final settlements (design.md section 10): one immutable document per arrangement and version.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "final_settlements",
        sa.Column("final_settlement_id", sa.String(200), primary_key=True),
        sa.Column("arrangement_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("school_id", sa.String(64), nullable=False),
        sa.Column("issued_on", sa.Date(), nullable=False),
        sa.Column("supersedes", sa.String(200), nullable=True),
        sa.Column("delivered_cents", sa.BigInteger(), nullable=False),
        sa.Column("balance_cents", sa.BigInteger(), nullable=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("arrangement_id", "version", name="uq_final_settlements_version"),
    )
    op.create_index("ix_final_settlements_arrangement_id", "final_settlements", ["arrangement_id"])


def downgrade() -> None:
    raise NotImplementedError("not undone: restore the database from a backup instead")
