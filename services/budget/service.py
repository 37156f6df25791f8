"""Budget service layer: applies a batch of care events to the pot books in one transaction.

Idempotent consumer: every applied event id is recorded in `applied_events` in the same transaction as its
effect, so a redelivered or re-published event changes nothing. Per registration the ledger keeps the
`LoggedFacts` (so a void reverses exactly what went in); per arrangement `pots` keeps the domain's `PotBook`.
Threshold crossings become `budget.alert` events in the outbox, written in that same transaction.

The figures themselves come from the pure domain (services/budget/domain.py); this layer only loads, stores
and publishes. Booking uses the host municipality carried by the care.logged event (fixed when the hours
service accepted the registration), so replaying the topic into an empty database gives the same books
whatever the registry says by then; the arrangement (cap, thresholds, dates) and the school name come from
the registry copy when figures or alerts are computed.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.budget import books
from services.budget.domain import (LoggedFacts, PotBook, apply_logged, apply_voided, crossed_alerts,
                                    pot_figures, reconciliation_cents, rearm_alerts, update_alerts)
from shared import topics
from shared.db import insert_dicts, readonly
from shared.events import BudgetAlert, CareLogged, CareVoided
from shared.outbox import OutgoingEvent, enqueue
from shared.registry import RegistryCopy
from shared.schemas import Arrangement
from shared.streams import EVENTS_PROCESSED, EVENTS_REJECTED, count, counted_on_commit
from shared.timeutil import today

log = logging.getLogger("zorgpot.budget")
SERVICE = "budget"


@dataclass
class Pot:
    """One pot as loaded inside a transaction."""

    arrangement_id: str
    school_id: str
    book: PotBook
    alerts_emitted: int = 0
    stored: bool = False  # a row exists (update) or not (insert)


def _dumps(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def _pot_from_row(row: Any) -> Pot:
    return Pot(row.arrangement_id, row.school_id, PotBook.from_dict(orjson.loads(row.book)), row.alerts_emitted,
               stored=True)


class BudgetService:
    def __init__(self, engine: AsyncEngine, registry: RegistryCopy, outbox, wake_relay,  # noqa: ANN001
                 clock: Callable[[], dt.date] = today) -> None:
        self.engine = engine
        self.read_engine = readonly(engine)
        self.registry = registry
        self.outbox = outbox
        self.wake_relay = wake_relay
        self.clock = clock

    # -- applying events ------------------------------------------------------------------------------
    async def handle(self, events: list[CareLogged | CareVoided]) -> set[str]:
        """Apply a batch in one transaction; returns the arrangement ids whose book changed."""
        if not events:
            return set()
        event_ids = {e.event_id for e in events}
        registration_ids = {e.registration_id for e in events}
        with counted_on_commit():
            async with self.engine.begin() as conn:
                applied = set((await conn.execute(select(books.applied_events.c.event_id)
                                                  .where(books.applied_events.c.event_id.in_(event_ids)))).scalars())
                ledger_rows = (await conn.execute(select(books.ledger.c.registration_id, books.ledger.c.voided,
                                                         books.ledger.c.facts)
                                                  .where(books.ledger.c.registration_id.in_(registration_ids)))).all()
                ledger: dict[str, tuple[LoggedFacts, bool]] = {
                    r.registration_id: (LoggedFacts.from_dict(orjson.loads(r.facts)), r.voided) for r in ledger_rows}
                pots = await self._load_pots(conn, {e.arrangement_id for e in events}, for_update=True)
                new_ledger: list[dict[str, Any]] = []
                voided_ids: list[str] = []
                applied_rows: list[dict[str, Any]] = []
                outgoing: list[OutgoingEvent] = []
                changed: set[str] = set()
                now = dt.datetime.now(dt.timezone.utc)
                for event in events:
                    if event.event_id in applied:
                        count(EVENTS_PROCESSED, SERVICE, "duplicate")
                        continue
                    pot = pots.get(event.arrangement_id)
                    if pot is None:
                        pot = pots[event.arrangement_id] = Pot(event.arrangement_id, event.school_id, PotBook())
                    if isinstance(event, CareLogged):
                        if not self._logged(event, pot, ledger, new_ledger):
                            continue
                        when = event.accepted_at
                    else:
                        if not self._voided(event, pot, ledger, voided_ids):
                            continue
                        when = event.voided_at
                    applied.add(event.event_id)
                    applied_rows.append({"event_id": event.event_id, "type": event.type, "applied_at": now})
                    changed.add(pot.arrangement_id)
                    outgoing.extend(self._alerts(pot, when))
                if new_ledger:
                    await insert_dicts(conn, books.ledger, new_ledger)
                if voided_ids:
                    await conn.execute(update(books.ledger).where(books.ledger.c.registration_id.in_(voided_ids))
                                       .values(voided=True))
                if applied_rows:
                    await insert_dicts(conn, books.applied_events, applied_rows)
                await self._store_pots(conn, [pots[a] for a in sorted(changed)])
                await enqueue(conn, self.outbox, outgoing)
        if outgoing:
            self.wake_relay()
        return changed

    def _logged(self, event: CareLogged, pot: Pot, ledger: dict, new_ledger: list) -> bool:  # noqa: ANN001
        if event.registration_id in ledger:  # event ids are deterministic: this is a re-publication
            count(EVENTS_PROCESSED, SERVICE, "duplicate")
            return False
        facts = LoggedFacts.from_event(event)
        apply_logged(pot.book, event, facts=facts)
        ledger[event.registration_id] = (facts, False)
        new_ledger.append({"registration_id": event.registration_id, "arrangement_id": event.arrangement_id,
                           "cost_cent_minutes": facts.cost_cent_minutes, "voided": False,
                           "facts": _dumps(facts.to_dict())})
        count(EVENTS_PROCESSED, SERVICE, event.type)
        return True

    def _voided(self, event: CareVoided, pot: Pot, ledger: dict, voided_ids: list) -> bool:  # noqa: ANN001
        entry = ledger.get(event.registration_id)
        if entry is None:
            # Voids follow their registration on the same partition, so this means the registration never
            # reached us. Counted and logged, not booked: there is nothing to reverse.
            log.error("void of unknown registration %s ignored", event.registration_id)
            count(EVENTS_REJECTED, SERVICE, "void_unknown")
            return False
        facts, already_voided = entry
        if already_voided:
            count(EVENTS_PROCESSED, SERVICE, "duplicate")
            return False
        try:
            apply_voided(pot.book, event, original=facts)
        except ValueError as exc:  # a void must take out exactly what went in
            log.error("void refused: %s", exc)
            count(EVENTS_REJECTED, SERVICE, "void_mismatch")
            return False
        ledger[event.registration_id] = (facts, True)
        voided_ids.append(event.registration_id)
        count(EVENTS_PROCESSED, SERVICE, event.type)
        return True

    def _alerts(self, pot: Pot, crossed_at: dt.datetime) -> list[OutgoingEvent]:
        """Re-arm and record crossings on the book; one budget.alert per crossing. Without the arrangement in
        the registry copy yet, nothing is decided here: `sweep_alerts` catches up."""
        arrangement = self.registry.arrangements.get(pot.arrangement_id)
        if arrangement is None:
            return []
        out = []
        for level, threshold in update_alerts(arrangement, pot.book):
            pot.alerts_emitted += 1
            alert = BudgetAlert(
                event_id=f"alert:{pot.arrangement_id}:{pot.alerts_emitted}", arrangement_id=pot.arrangement_id,
                school_id=pot.school_id, level=level, threshold=threshold, spent_cents=pot.book.spent_cents,
                cap_cents=arrangement.cap_cents, crossed_at=crossed_at)
            out.append(OutgoingEvent(topics.BUDGET_ALERTS, pot.arrangement_id.encode(), alert.to_bytes()))
            log.info("budget alert %s: %s at %.2f of the cap (%d of %d cents)", pot.arrangement_id, level,
                     threshold, alert.spent_cents, alert.cap_cents)
        return out

    async def sweep_alerts(self) -> set[str]:
        """Re-evaluate every pot's thresholds against the current arrangement: a changed cap or threshold
        list, or an arrangement that reached the registry copy after its first care event. Writes only when
        something changes (the check runs on a read-only snapshot first)."""
        async with self.read_engine.connect() as conn:
            snapshot = await self._load_pots(conn)
        stale = [aid for aid, pot in snapshot.items() if self._alerts_would_change(pot)]
        if not stale:
            return set()
        async with self.engine.begin() as conn:
            pots = await self._load_pots(conn, stale, for_update=True)
            now = dt.datetime.now(dt.timezone.utc)
            outgoing = [alert for pot in pots.values() for alert in self._alerts(pot, now)]
            await self._store_pots(conn, list(pots.values()))
            await enqueue(conn, self.outbox, outgoing)
        if outgoing:
            self.wake_relay()
        return set(pots)

    def _alerts_would_change(self, pot: Pot) -> bool:
        arrangement = self.registry.arrangements.get(pot.arrangement_id)
        if arrangement is None:
            return False
        trial = PotBook.from_dict(pot.book.to_dict())
        return bool(rearm_alerts(arrangement, trial)) or bool(crossed_alerts(arrangement, trial))

    # -- storage helpers ------------------------------------------------------------------------------
    async def _load_pots(self, conn: AsyncConnection, arrangement_ids: Iterable[str] | None = None,
                         for_update: bool = False) -> dict[str, Pot]:
        query = select(books.pots)
        if arrangement_ids is not None:
            query = query.where(books.pots.c.arrangement_id.in_(list(arrangement_ids)))
        if for_update:  # PostgreSQL row locks; SQLite's BEGIN IMMEDIATE already serialises writers
            query = query.with_for_update()
        return {row.arrangement_id: _pot_from_row(row) for row in (await conn.execute(query)).all()}

    async def _store_pots(self, conn: AsyncConnection, pots: list[Pot]) -> None:
        for pot in pots:
            values = {"book": _dumps(pot.book.to_dict()), "alerts_emitted": pot.alerts_emitted}
            if pot.stored:
                await conn.execute(update(books.pots).where(books.pots.c.arrangement_id == pot.arrangement_id)
                                   .values(**values))
            else:
                await conn.execute(books.pots.insert().values(arrangement_id=pot.arrangement_id,
                                                              school_id=pot.school_id, **values))
                pot.stored = True

    # -- reading --------------------------------------------------------------------------------------
    def figures(self, arrangement_id: str, arrangement: Arrangement, book: PotBook) -> dict[str, Any]:
        """The domain's pot figures plus who the pot belongs to."""
        school = self.registry.schools.get(arrangement.school_id)
        figures = pot_figures(arrangement, book, self.clock())
        if figures["host_municipality"] is None and school is not None:
            figures["host_municipality"] = school.municipality  # nothing booked yet: the school's host
        return {"arrangement_id": arrangement_id, "school_id": arrangement.school_id,
                "school_name": school.name if school else None, "group_ids": list(arrangement.group_ids),
                **figures}

    async def pots(self, school_id: str | None = None, arrangement_ids: Iterable[str] | None = None
                   ) -> list[dict[str, Any]]:
        """Figures of every arrangement in the registry copy (an arrangement without bookings shows an empty
        pot), optionally only one school's or only the given ones. Sorted by arrangement id."""
        wanted = sorted(aid for aid, arr in self.registry.arrangements.items()
                        if (school_id is None or arr.school_id == school_id)
                        and (arrangement_ids is None or aid in arrangement_ids))
        if not wanted:
            return []
        async with self.read_engine.connect() as conn:
            stored = await self._load_pots(conn, wanted)
        return [self.figures(aid, self.registry.arrangements[aid], stored[aid].book if aid in stored else PotBook())
                for aid in wanted]

    async def pot(self, arrangement_id: str) -> dict[str, Any] | None:
        found = await self.pots(arrangement_ids={arrangement_id})
        return found[0] if found else None

    async def reconciliation(self, arrangement_ids: Iterable[str] | None = None) -> dict[str, Any]:
        """Spent according to the pot books minus the cost of the live (accepted, not voided) registrations
        in the ledger, per pot. Two independent reads of the database: the books' JSON and a SQL sum."""
        ids = None if arrangement_ids is None else list(arrangement_ids)
        ledger = books.ledger
        query = (select(ledger.c.arrangement_id, func.count(), func.coalesce(func.sum(ledger.c.cost_cent_minutes), 0))
                 .where(ledger.c.voided.is_(False)).group_by(ledger.c.arrangement_id))
        if ids is not None:
            query = query.where(ledger.c.arrangement_id.in_(ids))
        async with self.read_engine.connect() as conn:
            pots = await self._load_pots(conn, ids)
            sums = {row[0]: (int(row[1]), int(row[2])) for row in (await conn.execute(query)).all()}
        known = {aid: arr.school_id for aid, arr in self.registry.arrangements.items() if ids is None or aid in ids}
        known.update({aid: pot.school_id for aid, pot in pots.items()})
        rows = []
        for aid in sorted(set(known) | set(sums)):  # every pot, booked or not, reads a figure
            book = pots[aid].book.spent_cent_minutes if aid in pots else 0
            count, live = sums.get(aid, (0, 0))
            school_id = known.get(aid, "unknown")
            rows.append({"arrangement_id": aid, "school_id": school_id, "book_spent_cent_minutes": book,
                         "ledger_cent_minutes": live, "ledger_registrations": count,
                         "difference_cents": reconciliation_cents(book, live)})
        # Absolute values: two pots off in opposite directions must not read as a total of 0.
        return {"pots": rows, "discrepancy_cents": sum(abs(r["difference_cents"]) for r in rows)}
