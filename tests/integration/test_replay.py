"""Rebuilding a service's books from the fact topics (docs/operations.md, "Rebuild a service's database"):
stop the service, empty its database with `python -m ops replay-from-start <service>`, start it, and it
arrives at identical figures (its positions went with the database, so it reads from offset 0).

The embedded broker keeps its topics only while it runs, so this is done against a broker that still has
them (as Apache Kafka with retention.ms=-1 always does)."""
from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import time
from typing import Any, Callable, Iterator

import httpx
import pytest

from ops.stack import ROOT, Stack
from tests.integration.client import Api, Region
from tests.integration.conftest import start_stack
from tests.integration.service_db import query

pytestmark = pytest.mark.stack

REGISTRATIONS = 200
VOIDED = 10
DATE_DEPENDENT = ("today", "elapsed", "days_elapsed", "burn_ratio", "forecast", "installments", "next_installment",
                  "true_up", "weekly")  # figures that move with the calendar, not with the books


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, database_server: object) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("replay"))
    yield stack
    stack.stop_all()


def registrations(region: Region) -> list[dict[str, Any]]:
    return [region.registration(f"replay-{i}", day=region.start + dt.timedelta(days=(i * 7) % 330),
                                minutes=5 + (i * 53) % 700, group="g1" if i % 3 else "g2", task_category=1 + i % 11)
            for i in range(REGISTRATIONS)]


def voided(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items[::REGISTRATIONS // VOIDED]


def live_minutes(region: Region) -> int:
    items = registrations(region)
    return sum(i["minutes"] for i in items) - sum(i["minutes"] for i in voided(items))


@pytest.fixture(scope="module")
def region(stack: Stack) -> Region:
    """One pot with care over many days and categories, pupils at home and elsewhere, and some voids."""
    with Api(stack) as api:
        region = Region(api).build(pupils_per_group=5)
        items = registrations(region)
        reply = api.post_retrying("/hours/batch", json=items)
        assert reply.status_code == 200 and reply.json()["accepted"] == REGISTRATIONS, reply.text
        for item in voided(items):
            assert api.wait_status(item["registration_id"], {"accepted"})["status"] == "accepted"
            assert api.post(f"/hours/{item['registration_id']}/void", json={"reason": "entered twice"}).status_code == 202
        wait_until(lambda: api.hours_stats().get("voided", {}).get("count") == VOIDED, "the voids to be applied")
        wait_until(lambda: pot(stack, region.arrangement_id)["minutes"] == live_minutes(region),
                   "the budget service to book every live registration")
        return region


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass  # the service is (re)starting
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def pot(stack: Stack, arrangement_id: str) -> dict[str, Any]:
    reply = httpx.get(f"{stack.service_url('budget')}/internal/pots/{arrangement_id}", timeout=10)
    reply.raise_for_status()
    return reply.json()


def book_figures(stack: Stack, arrangement_id: str) -> dict[str, Any]:
    return {k: v for k, v in pot(stack, arrangement_id).items() if not k.startswith(DATE_DEPENDENT)}


def reconciliation(stack: Stack, arrangement_id: str) -> dict[str, Any]:
    rows = httpx.get(f"{stack.service_url('budget')}/internal/reconciliation", timeout=10).json()["pots"]
    return next(r for r in rows if r["arrangement_id"] == arrangement_id)


def counter(stack: Stack, service: str, kind: str) -> int:
    text = httpx.get(f"{stack.service_url(service)}/metrics", timeout=10).text
    found = re.search(rf'^zorgpot_events_processed_total\{{service="{service}",type="{kind}"\}} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def rebuild(stack: Stack, service: str) -> None:
    """The operator's procedure: stop, empty the database (the command), start."""
    stack.stop(service)
    done = subprocess.run([sys.executable, "-m", "ops", "replay-from-start", service], cwd=ROOT,
                          env=dict(stack.env, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "database emptied" in done.stdout, done.stdout
    assert query(stack, service, "select count(*) from information_schema.tables where table_name = 'outbox'"
                 if stack.env_extra.get(f"ZORGPOT_{service.upper()}_DB") else
                 "select count(*) from sqlite_master where name = 'outbox'") == [(0,)], "the books are really gone"
    stack.start(service)
    stack.wait_ready(120)


def test_budget_rebuilds_identical_pot_figures_from_care_logged(stack: Stack, region: Region,
                                                                database_server: object) -> None:
    before = book_figures(stack, region.arrangement_id)
    assert before["minutes"] == live_minutes(region) and before["registrations"] == REGISTRATIONS - VOIDED
    assert reconciliation(stack, region.arrangement_id)["difference_cents"] == 0

    rebuild(stack, "budget")
    wait_until(lambda: book_figures(stack, region.arrangement_id) == before, "identical pot figures after replay")
    after = reconciliation(stack, region.arrangement_id)
    assert after["difference_cents"] == 0 and after["ledger_registrations"] == REGISTRATIONS - VOIDED
    # Really rebuilt from the topic, not kept: the new database's ledger has every registration again.
    ours = query(stack, "budget", "select count(*) from ledger where arrangement_id = :a", a=region.arrangement_id)
    assert ours == [(REGISTRATIONS,)]


def test_hours_rebuilds_identical_verdicts_and_downstream_ignores_the_regenerated_events(
        stack: Stack, region: Region, database_server: object) -> None:
    with Api(stack) as api:
        stats_before = api.hours_stats()
        statuses_before = {f"replay-{i}": api.wait_status(f"replay-{i}", {"accepted", "voided"})
                           for i in range(0, REGISTRATIONS, 7)}
        pot_before = book_figures(stack, region.arrangement_id)
        duplicates_before = counter(stack, "budget", "duplicate")

        rebuild(stack, "hours")
        wait_until(lambda: api.hours_stats() == stats_before, "identical hours verdicts after replay")
        for rid, status in statuses_before.items():
            assert api.wait_status(rid, {status["status"]}) == status
        # The regenerated care.logged / care.voided events carry the same event ids: the budget service
        # sees every one of them as a duplicate and its books do not move.
        wait_until(lambda: counter(stack, "budget", "duplicate") >= duplicates_before + REGISTRATIONS + VOIDED,
                   "the budget service to receive the regenerated care events")
        assert book_figures(stack, region.arrangement_id) == pot_before
        assert reconciliation(stack, region.arrangement_id)["difference_cents"] == 0


def test_settlement_with_closes_and_gateway_are_not_rebuilt_from_topics(stack: Stack, region: Region) -> None:
    env = dict(stack.env, PYTHONPATH=str(ROOT))
    gateway = subprocess.run([sys.executable, "-m", "ops", "replay-from-start", "gateway"], cwd=ROOT, env=env,
                             capture_output=True, text=True)
    assert gateway.returncode != 0 and "invalid choice" in gateway.stderr, gateway.stderr
    # A running worker is never emptied under its feet.
    running = subprocess.run([sys.executable, "-m", "ops", "replay-from-start", "budget"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert running.returncode == 1 and "stop every budget worker first" in running.stderr, running.stderr
    # Settlement's closes live only in its database: emptying it would settle closed periods again.
    with Api(stack) as api:
        reply = api.post("/settlements/close", json={"arrangement_id": region.arrangement_id,
                                                      "period_start": region.start.isoformat(),
                                                      "period_end": (region.start + dt.timedelta(days=30)).isoformat()})
        assert reply.status_code in (200, 201), reply.text
    stack.stop("settlement")
    try:
        settlement = subprocess.run([sys.executable, "-m", "ops", "replay-from-start", "settlement"], cwd=ROOT,
                                    env=env, capture_output=True, text=True, timeout=60)
        assert settlement.returncode == 1 and "restore its database from a backup" in settlement.stderr, \
            settlement.stderr
        assert query(stack, "settlement", "select count(*) from closes") == [(1,)]
    finally:
        stack.start("settlement")
        stack.wait_ready(120)
