"""Statement webhooks give up after webhook_give_up_hours: when the failures began and when it gave up.

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
    # Plain ADD COLUMN (nullable, no default): SQLite and PostgreSQL both do it in place.
    op.add_column("deliveries", sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column("deliveries", sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("failed_at")
        batch.drop_column("failing_since")
