"""Settlement service layer on a real SQLite database made by its Alembic migrations, driven by the stream
kernel without Kafka (`StreamKernel.apply_events`): idempotent consumer, a void before its registration parked
until it arrives, close bookkeeping, the invariant view; and the webhook signature and backoff."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from services.gateway.webhooks import backoff_s, sign
from services.settlement import books
from services.settlement.domain import PeriodConflictError, SettlementError
from services.settlement.service import SettlementService, UnknownArrangement
from shared import topics
from shared.events import Attribution, CareLogged, CareVoided, Event, StatementIssued, parse_event
from shared.kernel import StreamKernel
from shared.registry import RegistryCopy
from shared.schemas import CloseRequest
from tests.unit.service_books import migrated_books, offline_kernel

D = dt.date
HOST, OTHER = "GM0984", "GM1507"
NOW = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)


def registry() -> RegistryCopy:
    copy = RegistryCopy()
    docs: list[tuple[str, str, dict[str, Any]]] = [
        ("municipality", HOST, {"name": "Venray"}),
        ("municipality", OTHER, {"name": "Horst aan de Maas"}),
        ("school", "focus", {"name": "Focus", "municipality": HOST}),
        ("group", "focus/g1", {"name": "g1"}),
        ("arrangement", "arr", {"school_id": "focus", "group_ids": ["g1"], "start": "2025-01-01",
                                "end": "2025-12-31", "rates": [{"from": "2025-01-01", "hourly_rate_cents": 6500}],
                                "cap_cents": 10**9, "settlement": {"key": "residence_hours"}}),
    ]
    for version, (kind, key, doc) in enumerate(docs, start=1):
        copy.apply(kind, key, doc, version)
    return copy


def logged(rid: str, day: dt.date, minutes: int, *homes: str) -> CareLogged:
    return CareLogged(event_id=f"logged:{rid}", registration_id=rid, school_id="focus", group_id="g1",
                      arrangement_id="arr", host_municipality=HOST, date=day, minutes=minutes, task_category=2,
                      funding=None, care_worker="cw", hourly_rate_cents=6500, cost_cent_minutes=minutes * 6500,
                      cost_cents=0, attributed_to="listed",
                      attributions=[Attribution(pupil_ref=f"p{i}", municipality=m) for i, m in enumerate(homes)],
                      accepted_at=NOW)


def voided(rid: str, day: dt.date, minutes: int) -> CareVoided:
    return CareVoided(event_id=f"voided:{rid}", registration_id=rid, school_id="focus", arrangement_id="arr",
                      date=day, minutes=minutes, cost_cent_minutes=minutes * 6500, reason="mistake", voided_at=NOW)


@dataclass
class Settlement:
    """The service and the kernel that feeds it care.logged."""

    service: SettlementService
    kernel: StreamKernel

    async def apply(self, events: list[Event]) -> None:
        await self.kernel.apply_events(topics.CARE_LOGGED, events)

    async def rows(self, table) -> list[Any]:  # noqa: ANN001
        async with self.service.engine.connect() as conn:
            return (await conn.execute(select(table))).all()


@pytest.fixture()
async def settlement(tmp_path: Path):
    engine = await migrated_books(tmp_path, "settlement")
    woken: list[int] = []
    svc = SettlementService(engine, registry(), None, lambda: woken.append(1))
    kernel = offline_kernel(svc, engine, books.metadata)
    svc.outbox = kernel.outbox  # one outbox: closes and the kernel's commits write the same table
    yield Settlement(svc, kernel)
    await engine.dispose()


def close(start: dt.date, end: dt.date) -> CloseRequest:
    return CloseRequest(arrangement_id="arr", period_start=start, period_end=end)


async def lines(svc: SettlementService) -> dict[str, Any]:
    async with svc.engine.connect() as conn:
        return {r.registration_id: r for r in (await conn.execute(select(books.care_lines))).all()}


async def test_redelivery_is_a_no_op_and_a_void_inside_the_same_batch_counts(settlement: Settlement) -> None:
    service = settlement.service
    batch = [logged("r1", D(2025, 1, 10), 60, HOST), logged("r2", D(2025, 1, 11), 30, HOST, OTHER),
             voided("r2", D(2025, 1, 11), 30)]
    await settlement.apply(batch)
    await settlement.apply(batch + [logged("r1", D(2025, 1, 10), 60, HOST)])  # redelivered, and twice in one batch
    found = await lines(service)
    assert set(found) == {"r1", "r2"}
    assert (found["r2"].voided, found["r2"].voided_since_close, found["r2"].known_since_close) == (True, 0, 0)
    report = (await service.invariant())[0]
    assert report["registrations"] == 2 and report["voided"] == 1 and report["net_cost_cents"] == 6500
    assert report["ok"] and report["unsettled_cents"] == 6500


async def test_a_void_before_its_registration_is_parked_until_it_arrives(settlement: Settlement) -> None:
    """The kernel parks the void (parked_events, the whole event) instead of the service's old early_voids
    ids, and applies it right after its registration."""
    service, tables = settlement.service, settlement.kernel.tables
    await settlement.apply([voided("r9", D(2025, 1, 10), 60)])
    assert await lines(service) == {}
    assert [(r.event_id, r.waits_for) for r in await settlement.rows(tables.parked)] == [("voided:r9", "r9")]
    assert await settlement.rows(tables.applied) == []
    await settlement.apply([logged("r9", D(2025, 1, 10), 60, HOST)])
    line = (await lines(service))["r9"]
    assert (line.voided, line.known_since_close, line.voided_since_close) == (True, 0, 0)
    assert await settlement.rows(tables.parked) == []
    assert {r.event_id for r in await settlement.rows(tables.applied)} == {"logged:r9", "voided:r9"}
    report = (await service.invariant())[0]
    assert report["ok"] and report["voided"] == 1 and report["net_cost_cents"] == 0  # the only line is voided


async def test_close_records_known_since_close_and_issues_each_statement_once(settlement: Settlement) -> None:
    service = settlement.service
    await settlement.apply([logged("a", D(2025, 1, 10), 60, HOST), logged("b", D(2025, 1, 12), 60, OTHER)])
    first = await service.close(close(D(2025, 1, 1), D(2025, 1, 31)))
    assert first.created and [(s["municipality"], s["total_cents"]) for s in first.statements] == \
        [(HOST, 6500), (OTHER, 6500)]
    again = await service.close(close(D(2025, 1, 1), D(2025, 1, 31)))
    assert not again.created and again.statements == first.statements
    with pytest.raises(PeriodConflictError):
        await service.close(close(D(2025, 1, 15), D(2025, 2, 28)))
    with pytest.raises(SettlementError):
        await service.close(close(D(2025, 3, 31), D(2025, 3, 1)))
    with pytest.raises(UnknownArrangement):
        await service.close(CloseRequest(arrangement_id="nope", period_start=D(2025, 1, 1), period_end=D(2025, 1, 2)))

    # Learned after close 1: a late registration for January and a void of "a".
    await settlement.apply([logged("late", D(2025, 1, 20), 30, OTHER), voided("a", D(2025, 1, 10), 60)])
    found = await lines(service)
    assert found["late"].known_since_close == 1 and found["a"].voided_since_close == 1
    second = await service.close(close(D(2025, 2, 1), D(2025, 2, 28)))
    assert {s["municipality"]: s["total_cents"] for s in second.statements} == {HOST: -6500, OTHER: 3250}

    outbox = await settlement.rows(settlement.kernel.outbox)
    events = [parse_event(row.value) for row in outbox]
    assert all(isinstance(e, StatementIssued) for e in events)
    assert [e.statement_id for e in events] == [s["statement_id"] for s in first.statements + second.statements]
    assert [row.key.decode() for row in outbox] == [e.municipality for e in events]  # keyed by municipality
    assert events[0].statement == await service.statement(events[0].statement_id)

    report = (await service.invariant("arr"))[0]
    assert report["ok"] and report["issued_cents"] == 13000 - 3250 == report["net_cost_cents"]
    assert report["difference_cents"] == 0 and report["closes"] == 2


async def test_invariant_notices_a_lost_statement(settlement: Settlement) -> None:
    service = settlement.service
    await settlement.apply([logged("a", D(2025, 1, 10), 60, HOST), logged("b", D(2025, 1, 12), 60, OTHER)])
    outcome = await service.close(close(D(2025, 1, 1), D(2025, 1, 31)))
    async with service.engine.begin() as conn:
        await conn.execute(books.statements.delete()
                           .where(books.statements.c.statement_id == outcome.statements[0]["statement_id"]))
    report = (await service.invariant())[0]
    assert not report["ok"] and report["difference_cents"] == -6500 and report["problems"]


def test_webhook_signature_is_hmac_sha256_of_the_raw_body_and_backoff_doubles() -> None:
    body = orjson.dumps({"statement_id": "x", "total_cents": 1})
    assert sign("s3cret-s3cret-s3cret", body) == \
        "sha256=" + hmac.new(b"s3cret-s3cret-s3cret", body, hashlib.sha256).hexdigest()
    assert [backoff_s(n, 1.0, 10.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
