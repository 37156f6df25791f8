"""Fixtures that run the real stack: the embedded Kafka-protocol broker (Tansu), the four services as
separate processes, real HTTP. Each stack gets its own ports and data directory.

`ZORGPOT_TEST_DB=postgresql` runs the same tests with every service on PostgreSQL instead of SQLite: one
throw-away server per session (tests/integration/postgres.py), four fresh databases per stack. That run
covers the modules in POSTGRES_MODULES (make test runs it after the SQLite run of everything).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from ops.stack import Stack, free_port, start_on_free_ports
from tests.integration.client import Api

TEST_DB = os.environ.get("ZORGPOT_TEST_DB", "sqlite")
if TEST_DB not in ("sqlite", "postgresql"):
    raise pytest.UsageError(f"ZORGPOT_TEST_DB must be sqlite or postgresql, not {TEST_DB!r}")
# The service tests that run on PostgreSQL too: every stream service's flow, faults and replay.
POSTGRES_MODULES = {"test_hours_flow.py", "test_faults.py", "test_budget.py", "test_settlement.py", "test_settlement_sums.py",
                    "test_replay.py", "test_scale_out.py", "test_shared_books.py", "test_payments.py", "test_kernel_faults.py",
                    "test_final_settlement.py", "test_boards.py", "test_capacity.py", "test_funders.py", "test_norms.py",
                    "test_reports.py", "test_webhooks.py"}
_postgres = None  # the session's PostgresServer when TEST_DB == "postgresql"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if TEST_DB == "postgresql" and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return collection_path.name not in POSTGRES_MODULES
    return None


def pytest_report_header(config: pytest.Config) -> str:
    return f"service databases: {TEST_DB} (ZORGPOT_TEST_DB)"


@pytest.fixture(scope="session", autouse=True)
def database_server() -> Iterator[object]:
    """The PostgreSQL server of a ZORGPOT_TEST_DB=postgresql session; fails (never skips) without one."""
    global _postgres
    if TEST_DB != "postgresql":
        yield None
        return
    from tests.integration.postgres import PostgresServer

    _postgres = PostgresServer(free_port()).start()
    try:
        yield _postgres
    finally:
        _postgres.stop()
        _postgres = None


def database_env() -> dict[str, str]:
    """ZORGPOT_*_DB for a new stack: fresh PostgreSQL databases, or nothing (SQLite files in its data dir)."""
    if TEST_DB != "postgresql":
        return {}
    assert _postgres is not None, "the database_server fixture starts PostgreSQL first"
    return _postgres.fresh_databases()


def start_stack(data_dir: Path) -> Stack:
    return start_on_free_ports(data_dir, "zp_test", env_extra=database_env())


@pytest.fixture(scope="session")
def shared_stack(tmp_path_factory: pytest.TempPathFactory, database_server: object) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("stack"))
    yield stack
    stack.stop_all()


@pytest.fixture()
def own_stack(tmp_path: Path, database_server: object) -> Iterator[Stack]:
    """A stack of the test's own, for tests that kill things."""
    stack = start_stack(tmp_path / "stack")
    yield stack
    stack.stop_all()


@pytest.fixture()
def api(shared_stack: Stack) -> Iterator[Api]:
    with Api(shared_stack) as client:
        yield client
