"""A failing batch is retried in place, never skipped (shared.streams.in_batches)."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from shared.streams import BATCH_FAILURES, EVENTS_PROCESSED, count, counted_on_commit, in_batches


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


async def test_a_batch_that_fails_and_is_retried_counts_its_events_once() -> None:
    """Counts made inside the batch's transaction are published only when it commits (shared.streams.count)."""
    ready = asyncio.Event()
    ready.set()
    runtime = SimpleNamespace(name="unit-test-count", books_ready=ready,
                              settings=SimpleNamespace(batch_max=1000, batch_window_ms=50))
    attempts = {"n": 0}

    async def handle(values: list[bytes]) -> None:
        with counted_on_commit():
            for _ in values:
                count(EVENTS_PROCESSED, "unit-test-count", "applied")
            attempts["n"] += 1
            if attempts["n"] < 3:
                raise RuntimeError("commit failed")

    metric = EVENTS_PROCESSED.labels("unit-test-count", "applied")
    before = metric._value.get()
    await in_batches(runtime, FakeStream([[b"a", b"b"]]), handle)
    assert attempts["n"] == 3
    assert metric._value.get() - before == 2
    count(EVENTS_PROCESSED, "unit-test-count", "applied", amount=5)  # outside a batch: at once
    assert metric._value.get() - before == 7
