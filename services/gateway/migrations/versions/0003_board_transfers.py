"""Cap transfers between a school board's pots (drawing rights, design.md section 11).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transfers",
        sa.Column("transfer_id", sa.String(64), primary_key=True),
        sa.Column("board_id", sa.String(64), nullable=False),
        sa.Column("from_arrangement", sa.String(64), nullable=False),
        sa.Column("to_arrangement", sa.String(64), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_transfers_board_id", "transfers", ["board_id"])


def downgrade() -> None:
    op.drop_table("transfers")
