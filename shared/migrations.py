"""Schema migrations with Alembic: one migration history per service, run at start-up (SQLite and PostgreSQL).

Each service keeps its scripts in `services/<name>/migrations/` (env.py there calls `run_migrations`). A service
upgrades its own database to the newest revision before it consumes or serves anything; several workers of a
service starting at once against one PostgreSQL database take an advisory lock first, so one migrates and the
others find the work done. `python -m ops migrate <service>` runs the same upgrade by hand (the compose
deployment does it in each service's start command).

Books made before the project used Alembic (no `alembic_version` table) are taken up by each history's first
revision, which creates only what is missing and adds what those books lack.
"""
from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("zorgpot.migrations")
ROOT = Path(__file__).resolve().parent.parent
MIGRATION_LOCK = 727366  # PostgreSQL advisory lock key: one migrating worker at a time


def alembic_config(script_location: str | Path) -> Config:
    config = Config()
    location = Path(script_location)
    config.set_main_option("script_location", str(location if location.is_absolute() else ROOT / location))
    return config


def _upgrade(connection: Connection, config: Config, revision: str) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def migrate(engine: AsyncEngine, script_location: str | Path, revision: str = "head") -> None:
    """Upgrade the database behind `engine` to `revision` in one transaction."""
    config = alembic_config(script_location)
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        await conn.run_sync(_upgrade, config, revision)


def run_migrations() -> None:
    """The body of every service's env.py: run on the connection `migrate` passes in."""
    from alembic import context

    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through shared.migrations.migrate (or python -m ops migrate)")
    context.configure(connection=connection, render_as_batch=True, transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()


# --- helpers for the revisions ------------------------------------------------------------------------

def has_table(name: str) -> bool:
    from alembic import op

    return inspect(op.get_bind()).has_table(name)


def columns_of(name: str) -> set[str]:
    from alembic import op

    return {c["name"] for c in inspect(op.get_bind()).get_columns(name)}


def indexes_of(name: str) -> set[str]:
    from alembic import op

    return {i["name"] for i in inspect(op.get_bind()).get_indexes(name)}


def create_common_tables() -> None:
    """What every service's database has beside its own books: the outbox and relay state, the registry copy
    (as the last pre-Alembic version made them; first revision of every history)."""
    import sqlalchemy as sa
    from alembic import op

    if not has_table("outbox"):
        op.create_table(
            "outbox",
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("topic", sa.String(100), nullable=False),
            sa.Column("key", sa.LargeBinary, nullable=True),
            sa.Column("value", sa.LargeBinary, nullable=False),
            sa.Column("published", sa.Boolean, nullable=False),
        )
        op.create_index("ix_outbox_unpublished", "outbox", ["published", "seq"])
    if not has_table("relay_state"):
        op.create_table(
            "relay_state",
            sa.Column("name", sa.String(50), primary_key=True),
            sa.Column("epoch", sa.String(64), nullable=False),
        )


def create_registry_table() -> None:
    import sqlalchemy as sa
    from alembic import op

    if not has_table("registry_docs"):
        op.create_table(
            "registry_docs",
            sa.Column("kind", sa.String(20), primary_key=True),
            sa.Column("key", sa.String(200), primary_key=True),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("doc", sa.LargeBinary, nullable=False),
        )


def create_kernel_tables() -> None:
    """The stream kernel's tables (shared/kernel.py: kernel_tables), as its first version made them."""
    import sqlalchemy as sa
    from alembic import op

    if not has_table("applied_events"):
        op.create_table(
            "applied_events",
            sa.Column("event_id", sa.String(100), primary_key=True),
            sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        )
    elif "type" in columns_of("applied_events"):  # the budget books' own table before the kernel
        with op.batch_alter_table("applied_events") as batch:
            batch.drop_column("type")
    op.create_table(
        "consumer_positions",
        sa.Column("topic", sa.String(100), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("epoch", sa.String(64), nullable=False),
        sa.Column("next_offset", sa.Integer, nullable=False),
    )
    op.create_table(
        "parked_events",
        sa.Column("event_id", sa.String(100), primary_key=True),
        sa.Column("waits_for", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(100), nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_parked_events_waits_for", "parked_events", ["waits_for"])
    op.create_table(
        "deadletters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(100), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.Integer, nullable=False),
        sa.Column("epoch", sa.String(64), nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("value_sha256", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(100), nullable=True),
        sa.Column("subject", sa.String(200), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_deadletters_value_sha256", "deadletters", ["value_sha256"])
    op.create_index("ix_deadletters_subject", "deadletters", ["subject"])
