"""Fixtures that run the real stack: the embedded Kafka-protocol broker (Tansu), the four services as
separate processes, real HTTP. Each stack gets its own ports and data directory."""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Iterator

import pytest

from ops.stack import Stack, free_port
from tests.integration.client import Api


def _ports() -> tuple[int, int]:
    # The gateway port and the next three (services' internal views) must all be free.
    while True:
        gateway = free_port()
        if gateway < 60000 and all(free_port() != gateway + i for i in range(1, 4)):
            return gateway, free_port()


def start_stack(data_dir: Path) -> Stack:
    gateway_port, broker_port = _ports()
    stack = Stack(data_dir, gateway_port, broker_port, coordinator_token=f"zp_test_{secrets.token_hex(8)}")
    try:
        stack.start_all(timeout=120)
    except Exception:
        stack.stop_all()
        raise
    return stack


@pytest.fixture(scope="session")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("stack"))
    yield stack
    stack.stop_all()


@pytest.fixture()
def own_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of the test's own, for tests that kill things."""
    stack = start_stack(tmp_path / "stack")
    yield stack
    stack.stop_all()


@pytest.fixture()
def api(shared_stack: Stack) -> Iterator[Api]:
    with Api(shared_stack) as client:
        yield client
