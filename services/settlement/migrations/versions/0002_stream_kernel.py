"""The stream kernel's tables: positions recorded with the effects, applied event ids, parked events and dead
letters (shared/kernel.py).

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

from shared.migrations import create_kernel_tables, has_table

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_kernel_tables()
    # Voids that arrived before their registration are parked by the kernel now (parked_events). The old
    # table kept only ids, not the events, so rows in it cannot be carried over: it is dropped when empty
    # (never expected to hold any: a void follows its registration on the same partition) and otherwise kept
    # for an operator to look at.
    if has_table("early_voids") and op.get_bind().execute(sa.text("SELECT COUNT(*) FROM early_voids")).scalar() == 0:
        op.drop_table("early_voids")


def downgrade() -> None:
    raise NotImplementedError("not undone: restore the database from a backup instead")
