"""Hours service layer: applies a batch of submissions and void requests in one transaction.

Idempotent consumer: a registration id already in `registrations` is a duplicate and has no effect, so a
redelivered or re-published event changes nothing. The follow-up events (care.logged, care.voided,
hours.rejected) go to the outbox in the same transaction.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.hours import books
from services.hours.domain import Accepted, assess
from shared import topics
from shared.db import insert_dicts
from shared.events import CareLogged, CareVoided, HoursRejected, HoursSubmitted, VoidRequested
from shared.money import cent_minutes_to_cents
from shared.outbox import OutgoingEvent, enqueue
from shared.registry import RegistryCopy
from shared.streams import EVENTS_PROCESSED, EVENTS_REJECTED, count, counted_on_commit

log = logging.getLogger("zorgpot.hours")
SERVICE = "hours"


def rejection_reason_label(reason: str) -> str:
    """A low-cardinality metric label for a rejection reason text."""
    for needle, label in (("arrangement", "no_arrangement"), ("not registered", "unknown_reference"),
                          ("not enrolled", "not_enrolled"), ("nobody", "no_pupils"), ("belongs to group", "wrong_group"),
                          ("roster", "unknown_pupil"), ("residence", "no_residence")):
        if needle in reason:
            return label
    return "other"


class HoursService:
    def __init__(self, engine: AsyncEngine, registry: RegistryCopy, outbox, wake_relay) -> None:  # noqa: ANN001
        self.engine = engine
        self.registry = registry
        self.outbox = outbox
        self.wake_relay = wake_relay

    async def handle(self, events: list[HoursSubmitted | VoidRequested]) -> None:
        if not events:
            return
        needed = max(e.registry_version for e in events)
        while not await self.registry.wait_for(needed, timeout=10.0):
            log.warning("waiting for registry version %d (have %d) before validating", needed, self.registry.version)
        now = dt.datetime.now(dt.timezone.utc)
        ids = {e.registration.registration_id if isinstance(e, HoursSubmitted) else e.registration_id
               for e in events}
        with counted_on_commit():
            async with self.engine.begin() as conn:
                rows = (await conn.execute(select(books.registrations.c.registration_id, books.registrations.c.status,
                                                  books.registrations.c.content_hash, books.registrations.c.event)
                                           .where(books.registrations.c.registration_id.in_(ids)))).all()
                known: dict[str, dict[str, Any]] = {r.registration_id: dict(r._mapping) for r in rows}
                inserts: list[dict[str, Any]] = []
                voids: list[dict[str, Any]] = []
                outgoing: list[OutgoingEvent] = []
                for event in events:
                    if isinstance(event, HoursSubmitted):
                        self._submitted(event, known, inserts, outgoing, now)
                    else:
                        self._void(event, known, voids, outgoing, now)
                if inserts:
                    await insert_dicts(conn, books.registrations, inserts)
                for v in voids:
                    await conn.execute(update(books.registrations)
                                       .where(books.registrations.c.registration_id == v["registration_id"])
                                       .values(status="voided", void_reason=v["void_reason"]))
                await enqueue(conn, self.outbox, outgoing)
        self.wake_relay()

    def _submitted(self, event: HoursSubmitted, known: dict, inserts: list, outgoing: list,  # noqa: ANN001
                   now: dt.datetime) -> None:
        reg = event.registration
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
                attributions=list(outcome.attributions), accepted_at=now,
            )
            payload = logged.to_bytes()
            row.update(status="accepted", arrangement_id=outcome.arrangement_id,
                       hourly_rate_cents=outcome.hourly_rate_cents, cost_cent_minutes=outcome.cost_cent_minutes,
                       event=payload)
            outgoing.append(OutgoingEvent(topics.CARE_LOGGED, reg.school_id.encode(), payload))
            count(EVENTS_PROCESSED, SERVICE, "accepted")
        else:
            row.update(status="rejected", reasons=orjson.dumps(list(outcome.reasons)).decode())
            rejected = HoursRejected(event_id=f"rejected:{reg.registration_id}", registration_id=reg.registration_id,
                                     school_id=reg.school_id, reasons=list(outcome.reasons), rejected_at=now)
            outgoing.append(OutgoingEvent(topics.HOURS_REJECTED, reg.school_id.encode(), rejected.to_bytes()))
            for reason in outcome.reasons:
                count(EVENTS_REJECTED, SERVICE, rejection_reason_label(reason))
        inserts.append(row)
        known[reg.registration_id] = row

    def _void(self, event: VoidRequested, known: dict, voids: list, outgoing: list,  # noqa: ANN001
              now: dt.datetime) -> None:
        existing = known.get(event.registration_id)
        if existing is None:
            # Voids share the registration's partition and follow it, so this means the registration itself
            # never reached us: nothing to void. Counted, not silently dropped.
            log.error("void for unknown registration %s ignored", event.registration_id)
            count(EVENTS_REJECTED, SERVICE, "void_unknown")
            return
        if existing["status"] != "accepted":
            count(EVENTS_PROCESSED, SERVICE, "void_noop")
            return
        logged = CareLogged.model_validate_json(existing["event"])
        voided = CareVoided(
            event_id=f"voided:{event.registration_id}", registration_id=event.registration_id,
            school_id=logged.school_id, arrangement_id=logged.arrangement_id, date=logged.date,
            minutes=logged.minutes, cost_cent_minutes=logged.cost_cent_minutes, reason=event.reason, voided_at=now,
        )
        existing["status"] = "voided"
        voids.append({"registration_id": event.registration_id, "void_reason": event.reason})
        outgoing.append(OutgoingEvent(topics.CARE_LOGGED, logged.school_id.encode(), voided.to_bytes()))
        count(EVENTS_PROCESSED, SERVICE, "voided")

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
