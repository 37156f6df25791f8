"""Alembic environment of this service's database: see shared/migrations.py."""
from shared.migrations import run_migrations

run_migrations()
