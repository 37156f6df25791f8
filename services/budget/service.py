"""Budget service: its handlers for `care.logged` (accepted care and voids), its alert sweep and its reads.

The kernel (shared/kernel.py) applies a batch in one transaction, with the event ids and the consumer position:
`begin_batch` loads the batch's ledger entries and pots, the handlers book each event on the pot in memory
(the pure domain, services/budget/domain.py), `end_batch` writes the ledger rows and pots. Per registration
the ledger keeps the `LoggedFacts` (so a void reverses exactly what went in); per arrangement `pots` keeps
the domain's `PotBook`. Threshold crossings become `budget.alert` events in the outbox, in that same commit.
A void that arrives before its registration is parked by the kernel until the registration is applied.

Booking uses the host municipality carried by the care.logged event (fixed when the hours service accepted
the registration), so replaying the topic into an empty database gives the same books whatever the registry
says by then; the arrangement (cap, thresholds, dates) and the school name come from the registry copy when
figures or alerts are computed.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.budget import books, capacity
from services.budget.domain import (LoggedFacts, Payment, PotBook, apply_logged, apply_voided, crossed_alerts,
                                    pot_figures, reconciliation_cents, rearm_alerts, update_alerts)
from services.budget.final_settlement import check_may_issue, decide, final_settlement_document
from services.budget import report as reports
from shared import topics
from shared.db import insert_dicts, readonly, select_where_in
from shared.drawing_rights import CapTransfer, effective_arrangement, transfer_history
from shared.events import (BudgetAlert, CapTransferred, CareLogged, CareVoided, Event, FinalSettlementIssued,
                           PaymentRecorded)
from shared.kernel import Park, Subscription, UnitOfWork
from shared.money import round_half_up
from shared.outbox import OutgoingEvent, enqueue
from shared.registry import RegistryCopy
from shared.schemas import Arrangement, Calendar
from shared.stream_metrics import EVENTS_PROCESSED, count
from shared.timeutil import today

log = logging.getLogger("zorgpot.budget")
SERVICE = "budget"
REGISTRY_WAIT_S = 5.0  # how long an issue waits for the registry version the gateway had


class UnknownArrangement(LookupError):
    """The registry copy does not have the arrangement (HTTP 404)."""


class RegistryBehind(RuntimeError):
    """The registry copy has not caught up with the version the gateway had (HTTP 503, retry)."""


@dataclass
class Pot:
    """One pot as loaded inside a transaction."""

    arrangement_id: str
    school_id: str
    book: PotBook
    alerts_emitted: int = 0
    stored: bool = False  # a row exists (update) or not (insert)
    transfers: list[CapTransfer] = field(default_factory=list)  # cap moved in or out (drawing rights)


@dataclass
class BudgetBatch:
    """One batch's state: its ledger entries and pots as stored, and the writes it queues."""

    uow: UnitOfWork
    ledger: dict[str, tuple[LoggedFacts, bool]]
    pots: dict[str, Pot]
    new_ledger: list[dict[str, Any]] = field(default_factory=list)
    voided_ids: list[str] = field(default_factory=list)
    new_payments: list[dict[str, Any]] = field(default_factory=list)
    paid: set[str] = field(default_factory=set)  # arrangements with a new payment (figures, not the book)
    new_transfers: list[dict[str, Any]] = field(default_factory=list)
    moved: dict[str, list[CapTransfer]] = field(default_factory=dict)  # transfers of pots without a row yet
    transferred: set[str] = field(default_factory=set)  # arrangements whose cap a transfer moved
    changed: set[str] = field(default_factory=set)


def _dumps(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def _pot_from_row(row: Any) -> Pot:
    return Pot(row.arrangement_id, row.school_id, PotBook.from_dict(orjson.loads(row.book)), row.alerts_emitted,
               stored=True)


class BudgetService:
    name = SERVICE

    def __init__(self, engine: AsyncEngine, registry: RegistryCopy, outbox, wake_relay,  # noqa: ANN001
                 clock: Callable[[], dt.date] = today, on_changed: Callable[[set[str]], None] = lambda _: None
                 ) -> None:
        self.engine = engine
        self.read_engine = readonly(engine)
        self.registry = registry
        self.outbox = outbox
        self.wake_relay = wake_relay
        self.clock = clock
        self.on_changed = on_changed
        self.subscriptions = [
            Subscription(topics.CARE_LOGGED, handlers={CareLogged: self._logged, CareVoided: self._voided},
                         provides={CareLogged: lambda e: e.registration_id}),
            Subscription(topics.PAYMENTS, handlers={PaymentRecorded: self._payment}),
            Subscription(topics.BOARD_TRANSFERS, handlers={CapTransferred: self._transfer}),
        ]

    # -- the kernel's hooks -----------------------------------------------------------------------------
    async def ready_for(self, events: list[Event]) -> None:
        pass

    async def begin_batch(self, uow: UnitOfWork, events: list[CareLogged | CareVoided | PaymentRecorded]
                          ) -> BudgetBatch:
        registration_ids = {e.registration_id for e in events if isinstance(e, (CareLogged, CareVoided))}
        lg = books.ledger
        rows = await select_where_in(uow.conn, (lg.c.registration_id, lg.c.voided, lg.c.facts), lg.c.registration_id,
                                     registration_ids)
        ledger = {r.registration_id: (LoggedFacts.from_dict(orjson.loads(r.facts)), bool(r.voided)) for r in rows}
        touched = {aid for e in events for aid in ((e.from_arrangement, e.to_arrangement)
                                                     if isinstance(e, CapTransferred) else (e.arrangement_id,))}
        pots = await self._load_pots(uow.conn, touched, for_update=True)
        return BudgetBatch(uow, ledger, pots, moved=await self._transfers(uow.conn, sorted(touched - set(pots))))

    async def end_batch(self, uow: UnitOfWork, batch: BudgetBatch) -> None:
        if batch.new_ledger:
            await insert_dicts(uow.conn, books.ledger, batch.new_ledger)
        if batch.voided_ids:
            await uow.conn.execute(update(books.ledger).where(books.ledger.c.registration_id.in_(batch.voided_ids))
                                   .values(voided=True))
        if batch.new_payments:
            await insert_dicts(uow.conn, books.payments, batch.new_payments)
        if batch.new_transfers:
            await insert_dicts(uow.conn, books.transfers, batch.new_transfers)
        await self._store_pots(uow.conn, [batch.pots[a] for a in sorted(batch.changed)])

    def after_commit(self, batch: BudgetBatch) -> None:
        if batch.changed or batch.paid or batch.transferred:
            self.on_changed(batch.changed | batch.paid | batch.transferred)

    def _pot(self, batch: BudgetBatch, event: CareLogged | CareVoided) -> Pot:
        pot = batch.pots.get(event.arrangement_id)
        if pot is None:
            pot = batch.pots[event.arrangement_id] = Pot(event.arrangement_id, event.school_id, PotBook(),
                                                         transfers=list(batch.moved.get(event.arrangement_id, ())))
        return pot

    # -- handlers -------------------------------------------------------------------------------------
    def _logged(self, batch: BudgetBatch, event: CareLogged) -> None:
        if event.registration_id in batch.ledger:  # event ids are deterministic: this is a re-publication
            count(EVENTS_PROCESSED, SERVICE, "duplicate")
            return
        pot = self._pot(batch, event)
        facts = LoggedFacts.from_event(event)
        apply_logged(pot.book, event, facts=facts)
        batch.ledger[event.registration_id] = (facts, False)
        batch.new_ledger.append({"registration_id": event.registration_id, "arrangement_id": event.arrangement_id,
                                 "cost_cent_minutes": facts.cost_cent_minutes, "voided": False,
                                 "facts": _dumps(facts.to_dict())})
        count(EVENTS_PROCESSED, SERVICE, event.type)
        self._booked(batch, pot, event.accepted_at)

    def _voided(self, batch: BudgetBatch, event: CareVoided) -> Park | None:
        entry = batch.ledger.get(event.registration_id)
        if entry is None:  # never expected (a void follows its registration on its partition): kept
            return Park(event.registration_id)
        facts, already_voided = entry
        if already_voided:
            count(EVENTS_PROCESSED, SERVICE, "duplicate")
            return None
        pot = self._pot(batch, event)
        # A void must take out exactly what went in: a mismatch raises ValueError, and the kernel dead-letters
        # the void (visible, retryable) rather than booking it or dropping it.
        apply_voided(pot.book, event, original=facts)
        batch.ledger[event.registration_id] = (facts, True)
        batch.voided_ids.append(event.registration_id)
        count(EVENTS_PROCESSED, SERVICE, event.type)
        self._booked(batch, pot, event.voided_at)
        return None

    def _payment(self, batch: BudgetBatch, event: PaymentRecorded) -> None:
        """A payment made to the pot's payee: kept for the paid and true-up figures (the gateway refuses a
        reused payment id with other content, and the kernel drops a repeated event id)."""
        batch.new_payments.append({"payment_id": event.payment_id, "arrangement_id": event.arrangement_id,
                                   "date": event.date, "amount_cents": event.amount_cents})
        batch.paid.add(event.arrangement_id)
        count(EVENTS_PROCESSED, SERVICE, event.type)

    def _transfer(self, batch: BudgetBatch, event: CapTransferred) -> None:
        """Cap moved between two pots of a board (the gateway checked it against the board's cap and the
        source's spent; the kernel drops a repeated event id). Kept for the effective cap; a pot with care booked
        has its thresholds checked against its new cap at once (a lowered cap may cross one, a raised one
        re-arms)."""
        transfer = CapTransfer(event.transfer_id, event.board_id, event.from_arrangement, event.to_arrangement,
                               event.amount_cents, event.date)
        batch.new_transfers.append({"transfer_id": event.transfer_id, "board_id": event.board_id,
                                    "from_arrangement": event.from_arrangement, "to_arrangement": event.to_arrangement,
                                    "amount_cents": event.amount_cents, "date": event.date})
        for arrangement_id in (event.from_arrangement, event.to_arrangement):
            batch.transferred.add(arrangement_id)
            pot = batch.pots.get(arrangement_id)
            if pot is None:  # nothing booked yet, no threshold to cross: kept for a pot made later in the batch
                batch.moved.setdefault(arrangement_id, []).append(transfer)
            else:
                pot.transfers.append(transfer)
                self._booked(batch, pot, event.recorded_at)
        count(EVENTS_PROCESSED, SERVICE, event.type)

    def _arrangement(self, pot: Pot) -> Arrangement | None:
        """The pot's arrangement from the registry copy with its effective cap (arrangement cap + transfers in -
        transfers out); None while the copy does not have it."""
        arrangement = self.registry.arrangements.get(pot.arrangement_id)
        return None if arrangement is None else effective_arrangement(pot.arrangement_id, arrangement, pot.transfers)

    def _booked(self, batch: BudgetBatch, pot: Pot, when: dt.datetime) -> None:
        batch.changed.add(pot.arrangement_id)
        for alert in self._alerts(pot, when):
            batch.uow.emit(alert.topic, alert.key, alert.value)

    def _alerts(self, pot: Pot, crossed_at: dt.datetime) -> list[OutgoingEvent]:
        """Re-arm and record crossings on the book; one budget.alert per crossing. Without the arrangement in
        the registry copy yet, nothing is decided here: `sweep_alerts` catches up."""
        arrangement = self._arrangement(pot)  # with its effective cap (board transfers)
        if arrangement is None:
            return []
        out = self._non_resident_alert(pot, arrangement, crossed_at)
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

    def _calendar(self, arrangement: Arrangement) -> Calendar | None:
        return self.registry.calendars.get(arrangement.calendar_id) if arrangement.calendar_id else None

    def _kind_alert(self, pot: Pot, arrangement: Arrangement, event_id: str, threshold: float,
                    crossed_at: dt.datetime, **fields: Any) -> OutgoingEvent:
        """A capacity_gap or non_resident_share alert (design.md section 11). Their event ids name what they are
        about rather than counting with the threshold alerts, so a replay that meets them in another order
        reproduces the same ids; `alerts_emitted` stays the threshold alerts' counter."""
        alert = BudgetAlert(event_id=event_id, arrangement_id=pot.arrangement_id, school_id=pot.school_id,
                            level="warning", threshold=threshold, spent_cents=pot.book.spent_cents,
                            cap_cents=arrangement.cap_cents, crossed_at=crossed_at, **fields)
        log.info("budget alert %s: %s %s", pot.arrangement_id, alert.kind,
                 {k: v for k, v in fields.items() if k != "kind"})
        return OutgoingEvent(topics.BUDGET_ALERTS, pot.arrangement_id.encode(), alert.to_bytes())

    def _non_resident_alert(self, pot: Pot, arrangement: Arrangement, crossed_at: dt.datetime) -> list[OutgoingEvent]:
        """One alert when the non-resident pupil share reaches the arrangement's non_resident_alert_share
        (re-armed once it is below again); recorded on the book in the same transaction."""
        share = capacity.update_non_resident_alert(arrangement, pot.book)
        if share is None:
            return []
        figures = capacity.pupil_figures(pot.book)
        return [self._kind_alert(
            pot, arrangement, f"alert:{pot.arrangement_id}:non_resident_share:{pot.book.non_resident_alerts}",
            float(arrangement.non_resident_alert_share or 0), crossed_at, kind="non_resident_share",
            share=float(share), pupils=figures["pupils_with_care"], non_resident_pupils=figures["non_resident_pupils"])]

    def _capacity_alerts(self, pot: Pot, crossed_at: dt.datetime) -> list[OutgoingEvent]:
        """One capacity_gap alert per group and completed school week below the ratio of its plan, recorded on
        the book. Time decides when a week is completed, so the sweep (not an event) finds them."""
        arrangement = self.registry.arrangements.get(pot.arrangement_id)
        if arrangement is None or not arrangement.plan:
            return []
        gaps = capacity.capacity_gaps(arrangement, self._calendar(arrangement), pot.book, self.clock())
        capacity.record_capacity_gaps(pot.book, gaps)
        return [self._kind_alert(
            pot, arrangement, f"alert:{pot.arrangement_id}:capacity_gap:{gap.group_id}:{gap.week}",
            arrangement.capacity_alert_ratio, crossed_at, kind="capacity_gap", group_id=gap.group_id, week=gap.week,
            week_start=gap.week_start, planned_minutes=round_half_up(gap.planned_minutes),
            delivered_minutes=gap.delivered_minutes) for gap in gaps]

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
            outgoing = [alert for pot in pots.values()
                        for alert in self._alerts(pot, now) + self._capacity_alerts(pot, now)]
            await self._store_pots(conn, list(pots.values()))
            await enqueue(conn, self.outbox, outgoing)
        if outgoing:
            self.wake_relay()
        return set(pots)

    def _alerts_would_change(self, pot: Pot) -> bool:
        arrangement = self._arrangement(pot)
        if arrangement is None:
            return False
        trial = PotBook.from_dict(pot.book.to_dict())
        return (bool(rearm_alerts(arrangement, trial)) or bool(crossed_alerts(arrangement, trial))
                or capacity.non_resident_alert_would_change(arrangement, trial)
                or bool(arrangement.plan and capacity.capacity_gaps(arrangement, self._calendar(arrangement), trial,
                                                                    self.clock())))

    # -- storage helpers ------------------------------------------------------------------------------
    async def _load_pots(self, conn: AsyncConnection, arrangement_ids: Iterable[str] | None = None,
                         for_update: bool = False) -> dict[str, Pot]:
        query = select(books.pots)
        if arrangement_ids is not None:
            query = query.where(books.pots.c.arrangement_id.in_(list(arrangement_ids)))
        if for_update:  # PostgreSQL row locks; SQLite's BEGIN IMMEDIATE already serialises writers
            query = query.with_for_update()
        pots = {row.arrangement_id: _pot_from_row(row) for row in (await conn.execute(query)).all()}
        for aid, moved in (await self._transfers(conn, list(pots))).items():
            pots[aid].transfers = moved
        return pots

    async def _transfers(self, conn: AsyncConnection, arrangement_ids: list[str]) -> dict[str, list[CapTransfer]]:
        """Per arrangement the cap transfers in or out of it (a transfer is listed under both its pots)."""
        moved: dict[str, list[CapTransfer]] = {}
        if not arrangement_ids:
            return moved
        t = books.transfers
        rows = (await conn.execute(select(t).where(t.c.from_arrangement.in_(arrangement_ids)
                                                   | t.c.to_arrangement.in_(arrangement_ids))
                                   .order_by(t.c.date, t.c.transfer_id))).all()
        wanted = set(arrangement_ids)
        for r in rows:
            transfer = CapTransfer(r.transfer_id, r.board_id, r.from_arrangement, r.to_arrangement, r.amount_cents,
                                   r.date)
            for aid in {r.from_arrangement, r.to_arrangement} & wanted:
                moved.setdefault(aid, []).append(transfer)
        return moved

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
    def figures(self, arrangement_id: str, arrangement: Arrangement, book: PotBook,
                payments: Iterable[Payment] = (), final_settlement: dict[str, Any] | None = None,
                transfers: list[CapTransfer] | None = None) -> dict[str, Any]:
        """The domain's pot figures plus who the pot belongs to. Every figure counts the effective cap (the
        arrangement's cap + transfers in - transfers out); the transfers themselves are listed beside."""
        school = self.registry.schools.get(arrangement.school_id)
        moved = transfers or []
        figures = pot_figures(effective_arrangement(arrangement_id, arrangement, moved), book, self.clock(), list(payments), final_settlement,
                              calendar=self._calendar(arrangement))
        if figures["host_municipality"] is None and school is not None:
            figures["host_municipality"] = school.municipality  # nothing booked yet: the school's host
        norm = self.registry.norms.get(arrangement.norm_id) if arrangement.norm_id else None
        if norm is not None:  # a per-pupil norm pot: delivered care against what the norm pays
            pupils = self.registry.pupils_of_groups(arrangement.school_id, arrangement.group_ids)
            figures["norm"] = capacity.norm_figures(arrangement, pupils, norm, self._calendar(arrangement), book,
                                                    self.clock())
        return {"arrangement_id": arrangement_id, "school_id": arrangement.school_id,
                "school_name": school.name if school else None, "group_ids": list(arrangement.group_ids),
                **figures, **transfer_history(arrangement_id, arrangement.cap_cents, moved)}

    async def pots(self, school_id: str | None = None, arrangement_ids: Iterable[str] | None = None,
                   school_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Figures of every arrangement in the registry copy (an arrangement without bookings shows an empty
        pot), optionally only one school's (or several schools': a board's) or only the given ones. Sorted by
        arrangement id."""
        schools = None if school_ids is None else set(school_ids)
        wanted = sorted(aid for aid, arr in self.registry.arrangements.items()
                        if (school_id is None or arr.school_id == school_id)
                        and (schools is None or arr.school_id in schools)
                        and (arrangement_ids is None or aid in arrangement_ids))
        if not wanted:
            return []
        async with self.read_engine.connect() as conn:
            stored = await self._load_pots(conn, wanted)
            paid = await self._payments(conn, wanted)
            settled = await self._latest_final_settlements(conn, wanted)
            moved = await self._transfers(conn, wanted)
        return [self.figures(aid, self.registry.arrangements[aid], stored[aid].book if aid in stored else PotBook(),
                             paid.get(aid, ()), settled.get(aid), moved.get(aid)) for aid in wanted]

    async def _payments(self, conn: AsyncConnection, arrangement_ids: Iterable[str]) -> dict[str, list[Payment]]:
        paid: dict[str, list[Payment]] = {}
        p = books.payments
        for row in (await conn.execute(select(p.c.arrangement_id, p.c.payment_id, p.c.date, p.c.amount_cents)
                                       .where(p.c.arrangement_id.in_(list(arrangement_ids)))
                                       .order_by(p.c.date, p.c.payment_id))).all():
            paid.setdefault(row.arrangement_id, []).append(Payment(row.payment_id, row.date, row.amount_cents))
        return paid

    # -- final settlements (design.md section 10; services/budget/final_settlement.py) -------------------
    async def _latest_final_settlements(self, conn: AsyncConnection, arrangement_ids: Iterable[str]
                                        ) -> dict[str, dict[str, Any]]:
        """The latest version's document per arrangement that has one."""
        fs = books.final_settlements
        latest = (select(fs.c.arrangement_id, func.max(fs.c.version).label("version"))
                  .where(fs.c.arrangement_id.in_(list(arrangement_ids))).group_by(fs.c.arrangement_id).subquery())
        rows = (await conn.execute(select(fs.c.arrangement_id, fs.c.document).join(
            latest, (fs.c.arrangement_id == latest.c.arrangement_id) & (fs.c.version == latest.c.version)))).all()
        return {row.arrangement_id: orjson.loads(row.document) for row in rows}

    async def _final_settlement_docs(self, conn: AsyncConnection, arrangement_id: str) -> list[dict[str, Any]]:
        fs = books.final_settlements
        rows = (await conn.execute(select(fs.c.document).where(fs.c.arrangement_id == arrangement_id)
                                   .order_by(fs.c.version))).all()
        return [orjson.loads(row.document) for row in rows]

    async def final_settlements(self, arrangement_id: str) -> list[dict[str, Any]]:
        """Every version issued for the arrangement, oldest first."""
        async with self.read_engine.connect() as conn:
            return await self._final_settlement_docs(conn, arrangement_id)

    async def final_settlement(self, final_settlement_id: str) -> dict[str, Any] | None:
        fs = books.final_settlements
        async with self.read_engine.connect() as conn:
            row = (await conn.execute(select(fs.c.document)
                                      .where(fs.c.final_settlement_id == final_settlement_id))).first()
        return None if row is None else orjson.loads(row.document)

    async def issue_final_settlement(self, arrangement_id: str, supersedes: str | None = None,
                                     registry_version: int = 0) -> tuple[dict[str, Any], bool]:
        """(document, created): issue the arrangement's final settlement, or answer with the one issued before
        (`decide`). Raises UnknownArrangement, RegistryBehind, and the domain's FinalSettlementError kinds.

        The document counts the care and payments this service has applied when it runs; what arrives later
        shows on the pot as `after_final_settlement_cents` until a superseding version counts it. Stored with
        its `final_settlement.issued` event (outbox) in one transaction."""
        if not await self.registry.wait_for(registry_version, timeout=REGISTRY_WAIT_S):
            raise RegistryBehind(f"registry copy at version {self.registry.version}, the request needs "
                                 f"{registry_version}; try again shortly")
        arrangement = self.registry.arrangements.get(arrangement_id)
        if arrangement is None:
            raise UnknownArrangement(f"arrangement {arrangement_id!r} is not registered")
        for attempt in range(3):
            try:
                return await self._issue_final_settlement(arrangement_id, arrangement, supersedes)
            except IntegrityError:  # a concurrent request issued this version first: decide again
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _issue_final_settlement(self, arrangement_id: str, arrangement: Arrangement, supersedes: str | None
                                      ) -> tuple[dict[str, Any], bool]:
        async with self.engine.begin() as conn:
            decision = decide(await self._final_settlement_docs(conn, arrangement_id), supersedes)
            if decision.existing is not None:
                return dict(decision.existing), False
            today = self.clock()
            check_may_issue(arrangement, today)
            pots = await self._load_pots(conn, [arrangement_id], for_update=True)
            book = pots[arrangement_id].book if arrangement_id in pots else PotBook()
            # The cap it settles against is the pot's effective cap (board transfers, design.md section 11).
            arrangement = effective_arrangement(arrangement_id, arrangement,
                                                (await self._transfers(conn, [arrangement_id])).get(arrangement_id, []))
            payments = (await self._payments(conn, [arrangement_id])).get(arrangement_id, [])
            school = self.registry.schools.get(arrangement.school_id)
            doc = final_settlement_document(arrangement_id, arrangement, book, payments, today,
                                            version=decision.version, supersedes=decision.supersedes,
                                            school_name=school.name if school else None)
            await conn.execute(books.final_settlements.insert().values(
                final_settlement_id=doc["final_settlement_id"], arrangement_id=arrangement_id, version=doc["version"],
                school_id=arrangement.school_id, issued_on=today, supersedes=doc["supersedes"],
                delivered_cents=doc["delivered_cents"], balance_cents=doc["balance_cents"], document=_dumps(doc)))
            event = FinalSettlementIssued(
                event_id=f"final-settlement:{doc['final_settlement_id']}",
                final_settlement_id=doc["final_settlement_id"], arrangement_id=arrangement_id,
                school_id=arrangement.school_id, version=doc["version"], supersedes=doc["supersedes"],
                delivered_cents=doc["delivered_cents"], paid_cents=doc["paid_cents"],
                balance_cents=doc["balance_cents"], document=doc)
            await enqueue(conn, self.outbox, [OutgoingEvent(topics.FINAL_SETTLEMENTS, arrangement_id.encode(),
                                                            event.to_bytes())])
        self.wake_relay()
        self.on_changed({arrangement_id})
        log.info("final settlement %s issued: delivered %d, paid %d, balance %d cents", doc["final_settlement_id"],
                 doc["delivered_cents"], doc["paid_cents"], doc["balance_cents"])
        return doc, True

    # -- accountability reports (design.md section 12; services/budget/report.py) ---------------------------------
    async def reports(self) -> list[dict[str, Any]]:
        """Every report issued, newest period first: its id, kind, period, arrangements and issue date."""
        r = books.reports
        async with self.read_engine.connect() as conn:
            rows = (await conn.execute(select(r.c.report_id, r.c.kind, r.c.period_start, r.c.period_end,
                                              r.c.arrangement_ids, r.c.issued_on)
                                       .order_by(r.c.period_end.desc(), r.c.report_id))).all()
        return [{"report_id": row.report_id, "kind": row.kind, "period_start": row.period_start.isoformat(),
                 "period_end": row.period_end.isoformat(), "arrangement_ids": orjson.loads(row.arrangement_ids),
                 "issued_on": row.issued_on.isoformat()} for row in rows]

    async def report(self, report_id: str, conn: AsyncConnection | None = None) -> dict[str, Any] | None:
        r = books.reports
        query = select(r.c.document).where(r.c.report_id == report_id)
        if conn is None:
            async with self.read_engine.connect() as conn:
                row = (await conn.execute(query)).first()
        else:
            row = (await conn.execute(query)).first()
        return None if row is None else orjson.loads(row.document)

    async def issue_report(self, body: dict[str, Any], registry_version: int = 0) -> tuple[dict[str, Any], bool]:
        """(document, created). `body`: {report_id?, kind, arrangement_ids, period? | period_start, period_end}.
        Raises UnknownArrangement (404), RegistryBehind (503) and the report module's errors (Invalid 422,
        NotEnded and ReportIdTaken 409). The same request again (the same report_id, or without one the same
        kind, period and set of arrangements) answers the stored document; later facts never change it."""
        if not await self.registry.wait_for(registry_version, timeout=REGISTRY_WAIT_S):
            raise RegistryBehind(f"registry copy at version {self.registry.version}, the request needs "
                                 f"{registry_version}; try again shortly")
        ids = list(body.get("arrangement_ids") or [])
        unknown = [a for a in ids if a not in self.registry.arrangements]
        if unknown:
            raise UnknownArrangement(f"arrangement(s) not registered: {', '.join(sorted(set(unknown)))}")
        arrangements = {a: self.registry.arrangements[a] for a in ids}

        def date(name: str) -> dt.date | None:
            value = body.get(name)
            return None if value is None else dt.date.fromisoformat(value)

        request = reports.resolve_request(body["kind"], ids, arrangements, period=body.get("period"),
                                          period_start=date("period_start"), period_end=date("period_end"))
        report_id = body.get("report_id") or reports.report_id_for(request)
        existing = reports.answer_for(await self.report(report_id), request, report_id)
        if existing is not None:
            return dict(existing), False
        today = self.clock()
        reports.check_may_issue(request, arrangements, today)
        try:
            return await self._issue_report(report_id, request, arrangements, today), True
        except IntegrityError:  # the same report_id issued concurrently: answer it (or 409 for another request)
            stored = reports.answer_for(await self.report(report_id), request, report_id)
            assert stored is not None
            return dict(stored), False

    async def _issue_report(self, report_id: str, request: "reports.ReportRequest",
                            arrangements: dict[str, Arrangement], today: dt.date) -> dict[str, Any]:
        ids = list(request.arrangement_ids)
        lg = books.ledger
        async with self.engine.begin() as conn:
            rows = (await conn.execute(select(lg.c.arrangement_id, lg.c.facts)
                                       .where(lg.c.arrangement_id.in_(ids), lg.c.voided.is_(False)))).all()
            paid = await self._payments(conn, ids)
            moved = await self._transfers(conn, ids)
            inputs = []
            for aid in ids:
                arrangement = effective_arrangement(aid, arrangements[aid], moved.get(aid, []))
                school = self.registry.schools.get(arrangement.school_id)
                inputs.append((aid, arrangement, paid.get(aid, []), self._calendar(arrangement),
                               school.name if school else None))

            def compute() -> dict[str, Any]:
                # Parsing every live registration of a large pot and cutting the period takes seconds: off the
                # event loop, which also serves the consumer's heartbeats and the gauges.
                facts: dict[str, list[LoggedFacts]] = {a: [] for a in ids}
                for row in rows:
                    facts[row.arrangement_id].append(LoggedFacts.from_dict(orjson.loads(row.facts)))
                pots = [reports.PotInput(aid, arrangement, facts[aid], payments, calendar, school_name)
                        for aid, arrangement, payments, calendar, school_name in inputs]
                return reports.report_document(report_id, request, pots, today)

            doc = await asyncio.to_thread(compute)
            await conn.execute(books.reports.insert().values(
                report_id=report_id, kind=request.kind, period_start=request.period_start,
                period_end=request.period_end, arrangement_ids=orjson.dumps(ids), issued_on=today,
                document=_dumps(doc)))
        log.info("report %s issued: %s %s, %d arrangement(s), spent %s cents", report_id, request.kind,
                 doc["period"], len(ids), doc["totals"]["spent_cents"])
        return doc

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
