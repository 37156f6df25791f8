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

        refresher = GaugeRefresher(refresh, min_interval_s=0)
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


def test_refreshes_are_spaced_by_the_minimum_interval() -> None:
    async def scenario() -> list[set[str]]:
        calls: list[set[str]] = []

        async def refresh(arrangement_ids: set[str]) -> None:
            calls.append(set(arrangement_ids))

        refresher = GaugeRefresher(refresh, min_interval_s=1.0)
        task = asyncio.create_task(refresher.run())
        try:
            refresher.request({"a"})
            await asyncio.sleep(0.05)  # "a" is refreshed at once
            for pot in "bcde":  # batches right after it: held until the interval has passed, then together
                refresher.request({pot})
                await asyncio.sleep(0.01)
            assert calls == [{"a"}]
            await asyncio.sleep(1.3)
            return calls
        finally:
            task.cancel()

    assert asyncio.run(scenario()) == [{"a"}, {"b", "c", "d", "e"}]
