"""A failing batch is retried in place, never skipped (shared.streams.in_batches)."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from shared.streams import BATCH_FAILURES, in_batches


class FakeStream:
    def __init__(self, batches: list[list[bytes]]):
        self.batches = batches

    async def take(self, size: int, within: float):  # noqa: ARG002 - Faust's signature
        for batch in self.batches:
            yield batch


async def test_failing_batch_is_retried_until_it_applies_and_order_is_kept() -> None:
    ready = asyncio.Event()
    ready.set()
    runtime = SimpleNamespace(name="unit-test", books_ready=ready,
                              settings=SimpleNamespace(batch_max=1000, batch_window_ms=50))
    applied: list[list[bytes]] = []
    failures_left = {"n": 2}

    async def handle(values: list[bytes]) -> None:
        if values == [b"b"] and failures_left["n"]:
            failures_left["n"] -= 1
            raise RuntimeError("database is locked")
        applied.append(values)

    before = BATCH_FAILURES.labels("unit-test")._value.get()
    await in_batches(runtime, FakeStream([[b"a"], [b"b"], [b"c"]]), handle)
    assert applied == [[b"a"], [b"b"], [b"c"]]
    assert BATCH_FAILURES.labels("unit-test")._value.get() - before == 2
