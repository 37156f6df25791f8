"""Budget years and payments (design.md section 10): the payments table, and pot books in format 2.

Format 2 books keep spent and minutes per calendar month as well (budget years start in January, school
years in August). A format 1 book is brought up to format 2 here from the ledger: the month totals of its
live (not voided) registrations, read from each registration's stored facts (date, minutes, cost).

Revision ID: 0003
Revises: 0002
"""
import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("payment_id", sa.String(64), primary_key=True),
        sa.Column("arrangement_id", sa.String(64), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
    )
    op.create_index("ix_payments_arrangement_id", "payments", ["arrangement_id"])
    conn = op.get_bind()
    months: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
    for arrangement_id, facts in conn.execute(sa.text("SELECT arrangement_id, facts FROM ledger WHERE NOT voided")):
        data = json.loads(facts)
        month = data["date"][:7]  # "YYYY-MM-DD" -> "YYYY-MM"
        spent, minutes = months.setdefault(arrangement_id, ({}, {}))
        spent[month] = spent.get(month, 0) + int(data["cost_cent_minutes"])
        minutes[month] = minutes.get(month, 0) + int(data["minutes"])
    for arrangement_id, book in conn.execute(sa.text("SELECT arrangement_id, book FROM pots")).all():
        data = json.loads(book)
        if data.get("format", 1) != 1:
            continue
        spent, minutes = months.get(arrangement_id, ({}, {}))
        data.update(format=2, spent_cent_minutes_by_month={k: v for k, v in sorted(spent.items()) if v},
                    minutes_by_month={k: v for k, v in sorted(minutes.items()) if v})
        conn.execute(sa.text("UPDATE pots SET book = :book WHERE arrangement_id = :a"),
                     {"book": json.dumps(data, sort_keys=True, separators=(",", ":")).encode(), "a": arrangement_id})


def downgrade() -> None:
    raise NotImplementedError("not undone: restore the database from a backup instead")
