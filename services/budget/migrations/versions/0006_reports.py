"""Accountability reports (design.md section 12): one immutable document per report_id.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("report_id", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("arrangement_ids", sa.LargeBinary(), nullable=False),
        sa.Column("issued_on", sa.Date(), nullable=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("not undone: restore the database from a backup instead")
