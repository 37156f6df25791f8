"""Counters of the stream services' pipeline health, and counting that waits for the commit.

`count()` inside `counted_on_commit()` publishes only if the block ends without an error: a batch that is
rolled back and applied again counts its events once.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Iterator

from prometheus_client import Counter, Gauge

EVENTS_PROCESSED = Counter("zorgpot_events_processed_total", "Events a service consumed and applied",
                           ["service", "type"])
EVENTS_REJECTED = Counter("zorgpot_events_rejected_total", "Events a service refused, by reason",
                          ["service", "reason"])
BATCH_FAILURES = Counter("zorgpot_batch_failures_total",
                         "Batch transactions that failed and were retried (a growing count blocks a partition)",
                         ["service"])
DEADLETTERS = Counter("zorgpot_deadletters_total",
                      "Records a service could not read or apply after retries: sent to zorgpot.deadletter, "
                      "listed by GET /api/v1/deadletters", ["service", "topic"])
FENCED = Counter("zorgpot_fenced_batches_total",
                 "Batches whose commit found the partition's recorded position moved by another worker: "
                 "rolled back, nothing applied", ["service"])
REGISTRY_GAPS = Counter("zorgpot_registry_gaps_total",
                        "Times a service's registry follower was offered a version beyond the next one and read "
                        "registry.changes again from its start (expected after a broker that forgot everything)")
PARKED = Gauge("zorgpot_parked_events", "Events kept until what they refer to arrives (a void before its "
               "registration)", ["service"])

_PENDING_COUNTS: ContextVar[dict | None] = ContextVar("zorgpot_pending_counts", default=None)


def count(metric: Counter, *labels: str, amount: int = 1) -> None:
    """Increment `metric` by `amount`: at once, or inside `counted_on_commit()` when that block succeeds."""
    pending = _PENDING_COUNTS.get()
    if pending is None:
        metric.labels(*labels).inc(amount)
    else:
        pending[(metric, labels)] = pending.get((metric, labels), 0) + amount


@contextlib.contextmanager
def counted_on_commit() -> Iterator[None]:
    """Wrap a transaction: what it `count`s is published only if the block ends without an error."""
    pending: dict = {}
    token = _PENDING_COUNTS.set(pending)
    try:
        yield
    finally:
        _PENDING_COUNTS.reset(token)
    for (metric, labels), amount in pending.items():
        metric.labels(*labels).inc(amount)
