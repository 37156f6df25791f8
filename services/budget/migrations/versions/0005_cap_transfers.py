"""Cap transfers between a school board's pots (cap.transferred, from the gateway): each pot's effective cap is
its arrangement's cap plus the transfers in minus the transfers out (design.md section 11).

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
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
    )
    op.create_index("ix_transfers_from_arrangement", "transfers", ["from_arrangement"])
    op.create_index("ix_transfers_to_arrangement", "transfers", ["to_arrangement"])


def downgrade() -> None:
    op.drop_table("transfers")
