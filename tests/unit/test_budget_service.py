"""Budget service layer on a real SQLite database, without Kafka: idempotent consumer, exact voids, refused
voids, one alert per crossing through the outbox, the sweep after a cap change, reconciliation."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from services.budget import books
from services.budget.service import BudgetService
from tests.unit.service_books import service_books
from shared.events import Attribution, CareLogged, CareVoided, parse_event
from shared.registry import RegistryCopy

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


@pytest.fixture()
async def service(tmp_path: Path):
    engine, outbox = await service_books(tmp_path, books.metadata, "budget")
    woken: list[int] = []
    svc = BudgetService(engine, registry(), outbox, lambda: woken.append(1), clock=lambda: TODAY)
    svc.woken = woken  # type: ignore[attr-defined]
    yield svc
    await engine.dispose()


async def alerts(svc: BudgetService) -> list[Any]:
    async with svc.engine.connect() as conn:
        rows = (await conn.execute(select(svc.outbox.c.topic, svc.outbox.c.key, svc.outbox.c.value)
                                   .order_by(svc.outbox.c.seq))).all()
    assert all(r.topic == "budget.alerts" and r.key == b"arr" for r in rows)
    return [parse_event(r.value) for r in rows]


async def test_redelivered_batch_changes_nothing(service: BudgetService) -> None:
    batch = [logged("a", 7), logged("b", 61, HOST, OTHER), voided("a", 7)]
    assert await service.handle(batch) == {"arr"}
    pot = await service.pot("arr")
    assert (pot["registrations"], pot["minutes"], pot["spent_cent_minutes"]) == (1, 61, 61 * 6500)
    assert await service.handle(batch + [logged("b", 61, HOST, OTHER)]) == set()  # all applied already
    assert await service.pot("arr") == pot
    assert pot["non_resident_share"] == 0.5 and pot["spent_cents"] == 6608  # 61 x 65 / 60 = 66.083.. -> 66.08


async def test_void_of_unknown_or_mismatching_registration_is_refused(service: BudgetService) -> None:
    await service.handle([logged("a", 30)])
    before = await service.pot("arr")
    assert await service.handle([voided("never-logged", 30), voided("a", 31)]) == set()
    assert await service.pot("arr") == before
    async with service.engine.connect() as conn:  # refused events are not recorded as applied: nothing to undo
        applied = set((await conn.execute(select(books.applied_events.c.event_id))).scalars())
    assert applied == {"logged:a"}


async def test_one_alert_per_crossing_and_rearm_after_a_void(service: BudgetService) -> None:
    # cap EUR 1,000 = 100,000 cents; 60 min = 6,500 cents.
    await service.handle([logged(f"r{i}", 60) for i in range(12)])  # 78,000: below 80%
    assert await alerts(service) == []
    await service.handle([logged("r12", 60)])  # 84,500: warning
    await service.handle([logged("r13", 60), logged("r14", 60), logged("r15", 60)])  # 104,000: exceeded once
    await service.handle([voided("r15", 60)])  # 97,500: 1.0 re-armed, 0.8 stays
    await service.handle([logged("r16", 60)])  # 104,000 again: exceeded again
    found = await alerts(service)
    assert [(a.level, a.threshold, a.spent_cents) for a in found] == [
        ("warning", 0.8, 84_500), ("exceeded", 1.0, 104_000), ("exceeded", 1.0, 104_000)]
    assert [a.event_id for a in found] == ["alert:arr:1", "alert:arr:2", "alert:arr:3"]
    assert service.woken  # the relay was told
    assert (await service.pot("arr"))["status"] == "exceeded"


async def test_sweep_alerts_after_a_lowered_cap_and_for_late_reference_data(service: BudgetService) -> None:
    service.registry = registry(with_arrangement=False)  # care arrives before the arrangement reached the copy
    await service.handle([logged("a", 60)])
    assert await alerts(service) == [] and await service.pots() == []
    assert await service.sweep_alerts() == set()  # still unknown: nothing to decide
    service.registry.apply("arrangement", "arr", arrangement_doc(cap=7_000), 10)
    assert await service.sweep_alerts() == {"arr"}  # 6,500 of 7,000: warning
    assert await service.sweep_alerts() == set()  # nothing changes any more: no write
    service.registry.apply("arrangement", "arr", arrangement_doc(cap=6_000), 11)
    await service.sweep_alerts()
    assert [(a.level, a.threshold) for a in await alerts(service)] == [("warning", 0.8), ("exceeded", 1.0)]


async def test_reconciliation_compares_the_books_with_the_ledger(service: BudgetService) -> None:
    await service.handle([logged("a", 7), logged("b", 13), voided("b", 13)])
    report = await service.reconciliation()
    assert report == {"pots": [{"arrangement_id": "arr", "school_id": "focus", "book_spent_cent_minutes": 7 * 6500,
                                "ledger_cent_minutes": 7 * 6500, "ledger_registrations": 1, "difference_cents": 0}],
                      "discrepancy_cents": 0}
    async with service.engine.begin() as conn:  # corrupt the ledger behind the books' back: it shows
        await conn.execute(update(books.ledger).where(books.ledger.c.registration_id == "b").values(voided=False))
    report = await service.reconciliation()
    assert report["pots"][0]["difference_cents"] == -1409 and report["discrepancy_cents"] == 1409  # 13 x 65 / 60


async def test_figures_carry_the_school_and_the_elapsed_time(service: BudgetService) -> None:
    await service.handle([logged("a", 600)])
    pot = await service.pot("arr")
    assert (pot["arrangement_id"], pot["school_id"], pot["school_name"], pot["today"]) == \
        ("arr", "focus", "Focus", TODAY.isoformat())
    assert pot["elapsed_fraction"] == pytest.approx(183 / 365)
    assert pot["forecast_cents"] == round(65_000 * 365 / 183)
    assert [p["arrangement_id"] for p in await service.pots(school_id="focus")] == ["arr"]
    assert await service.pots(school_id="other") == []
    assert await service.pot("nope") is None
