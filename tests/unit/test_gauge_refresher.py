"""services/budget/metrics.GaugeRefresher: gauges are refreshed beside the batch loop, requests made while a
refresh runs are coalesced into one, and the pots of a failed refresh are refreshed with the next request."""
from __future__ import annotations

import asyncio

from services.budget.metrics import GaugeRefresher


def test_requests_coalesce_and_a_failed_refresh_is_retried() -> None:
    async def scenario() -> list[set[str]]:
        calls: list[set[str]] = []
        release = asyncio.Event()

        async def refresh(arrangement_ids: set[str]) -> None:
            calls.append(set(arrangement_ids))
            if len(calls) == 1:
                await release.wait()  # the first refresh is slow
            if len(calls) == 3:
                raise RuntimeError("database briefly unavailable")

        refresher = GaugeRefresher(refresh)
        task = asyncio.create_task(refresher.run())
        try:
            refresher.request({"a"})
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            refresher.request({"b"})  # while the first refresh runs: both wait for one refresh
            refresher.request({"c"})
            release.set()
            for _ in range(10):
                await asyncio.sleep(0)
            refresher.request({"d"})  # this refresh fails ...
            for _ in range(10):
                await asyncio.sleep(0)
            refresher.request({"e"})  # ... and its pots come back with the next request
            for _ in range(10):
                await asyncio.sleep(0)
            return calls
        finally:
            task.cancel()

    assert asyncio.run(scenario()) == [{"a"}, {"b", "c"}, {"d"}, {"d", "e"}]
