"""Scale-out: two workers of the hours service share its partitions and its database; nothing is lost or
counted twice, also when one of them stops (docs/operations.md, "Scale out")."""
from __future__ import annotations

import datetime as dt
import re
import signal
import time
from typing import Any

import httpx
import pytest

from ops.stack import Stack
from shared import topics
from shared.money import cent_minutes_to_cents
from shared.topics import PARTITIONS
from tests.integration.client import Api, Region

pytestmark = pytest.mark.stack

SCHOOLS = 12  # keys spread over the six partitions, so both workers get schools to handle


def health(stack: Stack, worker: str) -> dict[str, Any]:
    try:
        return httpx.get(f"{stack.worker_url(worker)}/internal/health", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return {"ready": False, "assigned": []}


def submitted_partitions(stack: Stack, worker: str) -> set[int]:
    prefix = f"{topics.HOURS_SUBMITTED}:"
    return {int(tp[len(prefix):]) for tp in health(stack, worker)["assigned"] if tp.startswith(prefix)}


def wait_for_split(stack: Stack, workers: list[str], timeout: float = 120) -> dict[str, set[int]]:
    """Until every partition of hours.submitted is assigned to exactly one of `workers`, each having some."""
    deadline = time.monotonic() + timeout
    while True:
        owned = {w: submitted_partitions(stack, w) for w in workers}
        union = set().union(*owned.values())
        disjoint = sum(len(p) for p in owned.values()) == len(union)
        if union == set(range(PARTITIONS)) and disjoint and all(owned.values()) \
                and all(health(stack, w)["ready"] for w in workers):
            return owned
        if time.monotonic() > deadline:
            raise AssertionError(f"partitions never split over {workers}: {owned}")
        time.sleep(0.5)


def accepted_counter(stack: Stack, worker: str) -> int:
    text = httpx.get(f"{stack.worker_url(worker)}/metrics", timeout=10).text
    found = re.search(r'^zorgpot_events_processed_total\{service="hours",type="accepted"\} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def send(api: Api, regions: list[Region], prefix: str, per_school: int) -> list[tuple[Region, dict]]:
    sent = []
    for region in regions:
        items = [region.registration(f"{prefix}-{region.school_id}-{i}",
                                     day=region.start + dt.timedelta(days=i % 250), minutes=1 + (i * 37) % 600,
                                     group="g1" if i % 2 else "g2")
                 for i in range(per_school)]
        reply = api.post_retrying("/hours/batch", json=items)
        assert reply.status_code == 200 and reply.json()["accepted"] == per_school, reply.text
        sent.extend((region, item) for item in items)
    return sent


def wait_accepted(api: Api, count: int, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats = api.hours_stats()
        if stats.get("accepted", {}).get("count", 0) >= count or time.monotonic() > deadline:
            return stats
        time.sleep(0.5)


def pot(stack: Stack, arrangement_id: str) -> dict[str, Any]:
    return httpx.get(f"{stack.service_url('budget')}/internal/pots/{arrangement_id}", timeout=10).json()


def wait_pots_exact(stack: Stack, sent: list[tuple[Region, dict]], timeout: float = 120) -> None:
    expected: dict[str, tuple[int, int]] = {}
    for region, item in sent:
        cost, minutes = expected.get(region.arrangement_id, (0, 0))
        expected[region.arrangement_id] = (cost + item["minutes"] * region.rate_cents, minutes + item["minutes"])
    deadline = time.monotonic() + timeout
    while True:
        seen = {aid: (pot(stack, aid)["spent_cents"], pot(stack, aid)["minutes"]) for aid in expected}
        wanted = {aid: (cent_minutes_to_cents(cost), minutes) for aid, (cost, minutes) in expected.items()}
        if seen == wanted:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"pots differ from the registrations sent: {seen} != {wanted}")
        time.sleep(0.5)


def test_two_hours_workers_split_the_partitions_and_totals_stay_exact(own_stack: Stack) -> None:
    with Api(own_stack) as api:
        regions = [Region(api).build(pupils_per_group=2) for _ in range(SCHOOLS)]
        extra = own_stack.start_extra_worker("hours", 1)
        owned = wait_for_split(own_stack, ["hours", extra])
        assert owned["hours"].isdisjoint(owned[extra])

        first = send(api, regions, "two", per_school=60)
        stats = wait_accepted(api, len(first))
        assert stats == {"accepted": {"count": len(first), "minutes": sum(i["minutes"] for _, i in first),
                                      "cost_cent_minutes": sum(i["minutes"] * r.rate_cents for r, i in first)}}
        # Both workers did part of the work, and together each registration exactly once.
        by_worker = {w: accepted_counter(own_stack, w) for w in ("hours", extra)}
        assert all(by_worker.values()), by_worker
        assert sum(by_worker.values()) == len(first), by_worker

        # One worker stops: the other takes over every partition and nothing is lost or doubled.
        own_stack.kill(extra, signal.SIGTERM)
        assert wait_for_split(own_stack, ["hours"])["hours"] == set(range(PARTITIONS))
        second = send(api, regions, "one", per_school=25)
        everything = first + second
        stats = wait_accepted(api, len(everything))
        assert stats["accepted"]["count"] == len(everything), stats
        assert stats["accepted"]["cost_cent_minutes"] == sum(i["minutes"] * r.rate_cents for r, i in everything)
        assert set(stats) == {"accepted"}, stats
        wait_pots_exact(own_stack, everything)
