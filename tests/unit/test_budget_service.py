"""Budget service layer on a real SQLite database made by its Alembic migrations, driven by the stream kernel
without Kafka (`StreamKernel.apply_events`): idempotent consumer, exact voids, a void before its registration
parked until it arrives, a mismatching void refused, one alert per crossing through the outbox, the sweep after a
cap change, reconciliation."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from services.budget import books
from services.budget.service import BudgetBatch, BudgetService
from shared import topics
from shared.events import Attribution, CareLogged, CareVoided, Event, parse_event
from shared.kernel import StreamKernel
from shared.registry import RegistryCopy
from tests.unit.service_books import migrated_books, offline_kernel

HOST, OTHER = "GM0984", "GM1507"
NOW = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
TODAY = dt.date(2025, 7, 2)  # 183 of the 365 days of 2025 passed


def arrangement_doc(cap: int = 100_000, thresholds: list[float] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"school_id": "focus", "group_ids": ["g1"], "start": "2025-01-01", "end": "2025-12-31",
                           "rates": [{"from": "2025-01-01", "hourly_rate_cents": 6500}], "cap_cents": cap,
                           "individual_rate_cents": 9664, "settlement": {"key": "residence_hours"}}
    if thresholds is not None:
        doc["alert_thresholds"] = thresholds
    return doc


def registry(with_arrangement: bool = True) -> RegistryCopy:
    copy = RegistryCopy()
    docs = [("municipality", HOST, {"name": "Venray"}), ("school", "focus", {"name": "Focus", "municipality": HOST}),
            ("group", "focus/g1", {"name": "g1"})]
    if with_arrangement:
        docs.append(("arrangement", "arr", arrangement_doc()))
    for version, (kind, key, doc) in enumerate(docs, start=1):
        copy.apply(kind, key, doc, version)
    return copy


def logged(rid: str, minutes: int, *homes: str, day: dt.date = dt.date(2025, 3, 3)) -> CareLogged:
    return CareLogged(event_id=f"logged:{rid}", registration_id=rid, school_id="focus", group_id="g1",
                      arrangement_id="arr", host_municipality=HOST, date=day, minutes=minutes, task_category=2,
                      funding=None, care_worker="cw", hourly_rate_cents=6500, cost_cent_minutes=minutes * 6500,
                      cost_cents=0, attributed_to="listed",
                      attributions=[Attribution(pupil_ref=f"p{i}", municipality=m) for i, m in enumerate(homes or (HOST,))],
                      accepted_at=NOW)


def voided(rid: str, minutes: int) -> CareVoided:
    return CareVoided(event_id=f"voided:{rid}", registration_id=rid, school_id="focus", arrangement_id="arr",
                      date=dt.date(2025, 3, 3), minutes=minutes, cost_cent_minutes=minutes * 6500, reason="mistake",
                      voided_at=NOW)


@dataclass
class Budget:
    """The service, the kernel that feeds it, and the relay wake-ups it asked for."""

    service: BudgetService
    kernel: StreamKernel
    woken: list[int]

    async def apply(self, events: list[Event]) -> set[str]:
        """Apply one batch of care.logged events; the arrangements whose pot changed."""
        state: BudgetBatch | None = await self.kernel.apply_events(topics.CARE_LOGGED, events)
        return state.changed if state else set()

    async def pot(self, arrangement_id: str) -> dict[str, Any] | None:
        return await self.service.pot(arrangement_id)

    async def rows(self, table) -> list[Any]:  # noqa: ANN001
        async with self.service.engine.connect() as conn:
            return (await conn.execute(select(table))).all()


@pytest.fixture()
async def budget(tmp_path: Path):
    engine = await migrated_books(tmp_path, "budget")
    woken: list[int] = []
    svc = BudgetService(engine, registry(), None, lambda: woken.append(1), clock=lambda: TODAY)
    kernel = offline_kernel(svc, engine, books.metadata)
    svc.outbox = kernel.outbox  # one outbox: the kernel's commits and the alert sweep write the same table
    kernel.wake_relay = lambda: woken.append(1)
    yield Budget(svc, kernel, woken)
    await engine.dispose()


async def alerts(b: Budget) -> list[Any]:
    outbox = b.kernel.outbox
    async with b.service.engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.topic, outbox.c.key, outbox.c.value)
                                   .order_by(outbox.c.seq))).all()
    assert all(r.topic == "budget.alerts" and r.key == b"arr" for r in rows)
    return [parse_event(r.value) for r in rows]


async def test_redelivered_batch_changes_nothing(budget: Budget) -> None:
    batch = [logged("a", 7), logged("b", 61, HOST, OTHER), voided("a", 7)]
    assert await budget.apply(batch) == {"arr"}
    pot = await budget.pot("arr")
    assert (pot["registrations"], pot["minutes"], pot["spent_cent_minutes"]) == (1, 61, 61 * 6500)
    assert await budget.apply(batch + [logged("b", 61, HOST, OTHER)]) == set()  # all applied already
    assert await budget.pot("arr") == pot
    assert pot["non_resident_share"] == 0.5 and pot["spent_cents"] == 6608  # 61 x 65 / 60 = 66.083.. -> 66.08
    applied = {r.event_id for r in await budget.rows(budget.kernel.tables.applied)}
    assert applied == {"logged:a", "logged:b", "voided:a"}  # the kernel's table: each event id once


async def test_mismatching_void_is_dead_lettered_not_booked(budget: Budget) -> None:
    """A void that does not take out exactly what went in (31 minutes against the 30 booked) changes nothing
    and is not recorded as applied: the kernel dead-letters it (visible to the coordinator, retryable), where it
    used to be logged and dropped."""
    from aiokafka import TopicPartition

    from shared.kernel import Record

    await budget.apply([logged("a", 30)])
    before = await budget.pot("arr")
    tp = TopicPartition(topics.CARE_LOGGED, 0)
    budget.kernel.epoch = "e1"
    await budget.kernel.load_positions([tp])
    await budget.kernel.apply_records([Record(tp.topic, 0, 0, b"focus", voided("a", 31).to_bytes())])
    assert await budget.pot("arr") == before
    assert [(r.registration_id, r.voided) for r in await budget.rows(books.ledger)] == [("a", False)]
    applied = {r.event_id for r in await budget.rows(budget.kernel.tables.applied)}
    assert applied == {"logged:a"}
    dead = await budget.rows(budget.kernel.tables.deadletters)
    assert [(d.event_id, d.subject, d.status) for d in dead] == [("voided:a", "a", "open")]
    assert "ValueError" in dead[0].reason
    assert budget.kernel.positions[tp].read_from == 1  # the stream goes on past it


async def test_void_before_its_registration_is_parked_then_applied_right_after_it(budget: Budget) -> None:
    """Until the kernel, a void of an unknown registration was refused for good; now it waits in
    parked_events and is applied in the batch that brings its registration."""
    await budget.apply([logged("a", 30)])
    before = await budget.pot("arr")
    assert await budget.apply([voided("b", 61)]) == set()
    assert await budget.pot("arr") == before  # 30 x 6,500 = 195,000 cent-minutes, b not in it
    parked = await budget.rows(budget.kernel.tables.parked)
    assert [(r.event_id, r.waits_for, r.topic) for r in parked] == [("voided:b", "b", topics.CARE_LOGGED)]
    assert parse_event(parked[0].value) == voided("b", 61)  # the event itself is kept, not just its id
    applied = {r.event_id for r in await budget.rows(budget.kernel.tables.applied)}
    assert applied == {"logged:a"}  # parked is not applied: a redelivery would be parked again, not skipped

    assert await budget.apply([logged("b", 61, HOST, OTHER)]) == {"arr"}
    pot = await budget.pot("arr")
    # b went in (61 x 6,500 = 396,500) and out again: only a's 195,000 cent-minutes = 3,250 cents remain.
    assert (pot["registrations"], pot["minutes"], pot["spent_cent_minutes"], pot["spent_cents"]) == \
        (1, 30, 195_000, 3250)
    assert sorted((r.registration_id, r.voided) for r in await budget.rows(books.ledger)) == \
        [("a", False), ("b", True)]
    assert await budget.rows(budget.kernel.tables.parked) == []
    applied = {r.event_id for r in await budget.rows(budget.kernel.tables.applied)}
    assert applied == {"logged:a", "logged:b", "voided:b"}
    assert await budget.apply([voided("b", 61), logged("b", 61, HOST, OTHER)]) == set()  # both applied once


async def test_one_alert_per_crossing_and_rearm_after_a_void(budget: Budget) -> None:
    # cap EUR 1,000 = 100,000 cents; 60 min = 6,500 cents.
    await budget.apply([logged(f"r{i}", 60) for i in range(12)])  # 78,000: below 80%
    assert await alerts(budget) == []
    assert budget.woken == []  # nothing in the outbox: the relay was not woken
    await budget.apply([logged("r12", 60)])  # 84,500: warning
    await budget.apply([logged("r13", 60), logged("r14", 60), logged("r15", 60)])  # 104,000: exceeded once
    await budget.apply([voided("r15", 60)])  # 97,500: 1.0 re-armed, 0.8 stays
    await budget.apply([logged("r16", 60)])  # 104,000 again: exceeded again
    found = await alerts(budget)
    assert [(a.level, a.threshold, a.spent_cents) for a in found] == [
        ("warning", 0.8, 84_500), ("exceeded", 1.0, 104_000), ("exceeded", 1.0, 104_000)]
    assert [a.event_id for a in found] == ["alert:arr:1", "alert:arr:2", "alert:arr:3"]
    assert budget.woken  # the relay was told
    assert (await budget.pot("arr"))["status"] == "exceeded"


async def test_sweep_alerts_after_a_lowered_cap_and_for_late_reference_data(budget: Budget) -> None:
    service = budget.service
    service.registry = registry(with_arrangement=False)  # care arrives before the arrangement reached the copy
    await budget.apply([logged("a", 60)])
    assert await alerts(budget) == [] and await service.pots() == []
    assert await service.sweep_alerts() == set()  # still unknown: nothing to decide
    service.registry.apply("arrangement", "arr", arrangement_doc(cap=7_000), 10)
    assert await service.sweep_alerts() == {"arr"}  # 6,500 of 7,000: warning
    assert await service.sweep_alerts() == set()  # nothing changes any more: no write
    service.registry.apply("arrangement", "arr", arrangement_doc(cap=6_000), 11)
    await service.sweep_alerts()
    assert [(a.level, a.threshold) for a in await alerts(budget)] == [("warning", 0.8), ("exceeded", 1.0)]


async def test_reconciliation_compares_the_books_with_the_ledger(budget: Budget) -> None:
    service = budget.service
    await budget.apply([logged("a", 7), logged("b", 13), voided("b", 13)])
    report = await service.reconciliation()
    assert report == {"pots": [{"arrangement_id": "arr", "school_id": "focus", "book_spent_cent_minutes": 7 * 6500,
                                "ledger_cent_minutes": 7 * 6500, "ledger_registrations": 1, "difference_cents": 0}],
                      "discrepancy_cents": 0}
    async with service.engine.begin() as conn:  # corrupt the ledger behind the books' back: it shows
        await conn.execute(update(books.ledger).where(books.ledger.c.registration_id == "b").values(voided=False))
    report = await service.reconciliation()
    assert report["pots"][0]["difference_cents"] == -1409 and report["discrepancy_cents"] == 1409  # 13 x 65 / 60


async def test_figures_carry_the_school_and_the_elapsed_time(budget: Budget) -> None:
    service = budget.service
    await budget.apply([logged("a", 600)])
    pot = await service.pot("arr")
    assert (pot["arrangement_id"], pot["school_id"], pot["school_name"], pot["today"]) == \
        ("arr", "focus", "Focus", TODAY.isoformat())
    assert pot["elapsed_fraction"] == pytest.approx(183 / 365)
    assert pot["forecast_cents"] == round(65_000 * 365 / 183)
    assert [p["arrangement_id"] for p in await service.pots(school_id="focus")] == ["arr"]
    assert await service.pots(school_id="other") == []
    assert await service.pot("nope") is None
