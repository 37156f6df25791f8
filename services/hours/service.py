"""Hours service: its handlers for `hours.submitted` (registrations and void requests), and its reads.

The kernel (shared/kernel.py) applies a batch in one transaction: `begin_batch` loads the batch's known
registrations, the handlers judge each event in memory (domain.assess) and queue rows and follow-up events
(care.logged, care.voided, hours.rejected go to the outbox with the same commit), `end_batch` writes them.
The `registrations` table (primary key `registration_id`) keeps each registration's fate; a resent
registration with the same content is a duplicate and has no effect. A void that arrives before its
registration is parked by the kernel until the registration is applied.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.hours import books
from services.hours.domain import Accepted, assess
from shared import topics
from shared.db import insert_dicts, select_where_in
from shared.events import CareLogged, CareVoided, Event, HoursRejected, HoursSubmitted, VoidRequested
from shared.kernel import Park, Subscription, UnitOfWork
from shared.money import cent_minutes_to_cents
from shared.registry import RegistryCopy
from shared.stream_metrics import EVENTS_PROCESSED, EVENTS_REJECTED, count

log = logging.getLogger("zorgpot.hours")
SERVICE = "hours"
REGISTRY_WAIT_LOG_S = 10.0


def rejection_reason_label(reason: str) -> str:
    """A low-cardinality metric label for a rejection reason text."""
    for needle, label in (("not from this pot", "not_collective"),  # eligibility: double funding refused
                          ("is not routed", "unroutable_funding"), ("arrangement", "no_arrangement"),
                          ("not registered", "unknown_reference"), ("not enrolled", "not_enrolled"), ("nobody", "no_pupils"), ("belongs to group", "wrong_group"),
                          ("roster", "unknown_pupil"), ("residence", "no_residence")):
        if needle in reason:
            return label
    return "other"


@dataclass
class HoursBatch:
    """One batch's state: the registrations it touches as stored, and the writes it queues."""

    uow: UnitOfWork
    now: dt.datetime
    known: dict[str, dict[str, Any]]
    inserts: list[dict[str, Any]] = field(default_factory=list)
    voids: list[dict[str, Any]] = field(default_factory=list)


class HoursService:
    name = SERVICE

    def __init__(self, engine: AsyncEngine, registry: RegistryCopy) -> None:
        self.engine = engine
        self.registry = registry
        self.subscriptions = [Subscription(
            topics.HOURS_SUBMITTED,
            handlers={HoursSubmitted: self._submitted, VoidRequested: self._void},
            provides={HoursSubmitted: lambda e: e.registration.registration_id})]

    # -- the kernel's hooks -----------------------------------------------------------------------------
    async def ready_for(self, events: list[Event]) -> None:
        """Judge registrations only against a registry copy at least as new as the gateway's when it took them."""
        needed = max(getattr(e, "registry_version", 0) for e in events)
        while not await self.registry.wait_for(needed, timeout=REGISTRY_WAIT_LOG_S):
            log.warning("waiting for registry version %d (have %d) before validating", needed, self.registry.version)

    async def begin_batch(self, uow: UnitOfWork, events: list[Event]) -> HoursBatch:
        ids = {e.registration.registration_id if isinstance(e, HoursSubmitted) else e.registration_id
               for e in events}
        r = books.registrations
        rows = await select_where_in(uow.conn, (r.c.registration_id, r.c.status, r.c.content_hash, r.c.event),
                                     r.c.registration_id, ids)
        return HoursBatch(uow, dt.datetime.now(dt.timezone.utc), {row.registration_id: dict(row._mapping) for row in rows})

    async def end_batch(self, uow: UnitOfWork, batch: HoursBatch) -> None:
        if batch.inserts:
            await insert_dicts(uow.conn, books.registrations, batch.inserts)
        if batch.voids:
            r = books.registrations
            await uow.conn.execute(update(r).where(r.c.registration_id == bindparam("rid"))
                                   .values(status="voided", void_reason=bindparam("why")), batch.voids)

    def after_commit(self, batch: HoursBatch) -> None:
        pass

    # -- handlers -------------------------------------------------------------------------------------
    def _submitted(self, batch: HoursBatch, event: HoursSubmitted) -> None:
        reg, known, now = event.registration, batch.known, batch.now
        digest = reg.content_hash()
        existing = known.get(reg.registration_id)
        if existing is not None:
            if existing["content_hash"] != digest:  # the gateway refuses these with 409; never expected here
                log.error("registration %s redelivered with different content; keeping the first", reg.registration_id)
                count(EVENTS_REJECTED, SERVICE, "conflict")
            count(EVENTS_PROCESSED, SERVICE, "duplicate")
            return
        outcome = assess(reg, self.registry)
        row = {"registration_id": reg.registration_id, "school_id": reg.school_id, "content_hash": digest,
               "minutes": reg.minutes, "date": reg.date, "reasons": None, "arrangement_id": None,
               "hourly_rate_cents": None, "cost_cent_minutes": None, "void_reason": None, "event": None}
        if isinstance(outcome, Accepted):
            logged = CareLogged(
                event_id=f"logged:{reg.registration_id}", registration_id=reg.registration_id,
                school_id=reg.school_id, group_id=reg.group_id, arrangement_id=outcome.arrangement_id,
                host_municipality=outcome.host_municipality, date=reg.date, minutes=reg.minutes,
                task_category=reg.task_category, funding=reg.funding, care_worker=reg.care_worker,
                hourly_rate_cents=outcome.hourly_rate_cents, cost_cent_minutes=outcome.cost_cent_minutes,
                cost_cents=outcome.cost_cents, attributed_to=outcome.attributed_to,
                attributions=list(outcome.attributions), funder=outcome.funder, accepted_at=now,
            )
            payload = logged.to_bytes()
            row.update(status="accepted", arrangement_id=outcome.arrangement_id,
                       hourly_rate_cents=outcome.hourly_rate_cents, cost_cent_minutes=outcome.cost_cent_minutes,
                       event=payload)
            batch.uow.emit(topics.CARE_LOGGED, reg.school_id.encode(), payload)
            count(EVENTS_PROCESSED, SERVICE, "accepted")
        else:
            row.update(status="rejected", reasons=orjson.dumps(list(outcome.reasons)).decode())
            rejected = HoursRejected(event_id=f"rejected:{reg.registration_id}", registration_id=reg.registration_id,
                                     school_id=reg.school_id, reasons=list(outcome.reasons), rejected_at=now)
            batch.uow.emit(topics.HOURS_REJECTED, reg.school_id.encode(), rejected.to_bytes())
            for reason in outcome.reasons:
                count(EVENTS_REJECTED, SERVICE, rejection_reason_label(reason))
        batch.inserts.append(row)
        known[reg.registration_id] = row

    def _void(self, batch: HoursBatch, event: VoidRequested) -> Park | None:
        existing = batch.known.get(event.registration_id)
        if existing is None:  # never expected (voids follow their registration on its partition): kept
            return Park(event.registration_id)
        if existing["status"] != "accepted":
            count(EVENTS_PROCESSED, SERVICE, "void_noop")
            return
        logged = CareLogged.model_validate_json(existing["event"])
        voided = CareVoided(
            event_id=f"voided:{event.registration_id}", registration_id=event.registration_id,
            school_id=logged.school_id, arrangement_id=logged.arrangement_id, date=logged.date,
            minutes=logged.minutes, cost_cent_minutes=logged.cost_cent_minutes, reason=event.reason,
            voided_at=batch.now,
        )
        existing["status"] = "voided"
        batch.voids.append({"rid": event.registration_id, "why": event.reason})
        batch.uow.emit(topics.CARE_LOGGED, logged.school_id.encode(), voided.to_bytes())
        count(EVENTS_PROCESSED, SERVICE, "voided")
        return None

    async def stats(self) -> dict[str, Any]:
        """Counts and exact cost by status: what the tests and the reconciliation compare against."""
        from sqlalchemy import func
        r = books.registrations
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(r.c.status, func.count(), func.coalesce(func.sum(r.c.cost_cent_minutes), 0),
                                              func.coalesce(func.sum(r.c.minutes), 0))
                                       .group_by(r.c.status))).all()
        return {row[0]: {"count": row[1], "cost_cent_minutes": int(row[2]), "minutes": int(row[3])} for row in rows}

    async def status_of(self, registration_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(books.registrations)
                                      .where(books.registrations.c.registration_id == registration_id))).first()
        if row is None:
            return None
        result: dict[str, Any] = {"registration_id": row.registration_id, "school_id": row.school_id,
                                  "status": row.status}
        if row.status == "rejected":
            result["reason"] = "; ".join(orjson.loads(row.reasons or "[]"))
            result["reasons"] = orjson.loads(row.reasons or "[]")
        if row.cost_cent_minutes is not None:
            result["cost_cents"] = cent_minutes_to_cents(row.cost_cent_minutes)
            result["arrangement_id"] = row.arrangement_id
        if row.status == "voided":
            result["reason"] = row.void_reason
        return result
