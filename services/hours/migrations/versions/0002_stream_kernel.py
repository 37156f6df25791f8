"""The stream kernel's tables: positions recorded with the effects, applied event ids, parked events and dead
letters (shared/kernel.py).

Revision ID: 0002
Revises: 0001
"""
from shared.migrations import create_kernel_tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_kernel_tables()


def downgrade() -> None:
    raise NotImplementedError("not undone: restore the database from a backup instead")
