"""Settlement service layer: keeps the exact care lines, closes periods into statements, checks the invariant.

The kernel (shared/kernel.py) applies care events in batches, one transaction each with the event ids and
the consumer position: `begin_batch` locks the batch's arrangements and loads its known lines, the handlers
turn each event into a care line (or a void of one) in memory, `end_batch` writes them. A void that arrives
before its registration is parked by the kernel until the registration is applied. A close runs `domain.close_period` and persists the close
record, the statements and one `StatementIssued` outbox event per statement in one transaction. The
consumer and a close both lock the arrangement's `arrangement_state` row first, so every care line records
exactly how many closes had been committed when it was learned (`known_since_close`).

What a close covers: everything this service has applied when the close's transaction starts. A care event
the gateway accepted earlier but that is still on its way (gateway outbox, hours service, care.logged) is
not lost: it is learned after the close and settled as a correction line on the next close of the
arrangement (docs/settlement.md, "Close semantics").
"""
from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.settlement import books
from services.settlement import queries
from services.settlement.domain import (ArrangementContext, CareLine, Close, CloseResult,
                                        SettlementError, close_summarised, find_identical_close,
                                        invariant_figures, invariant_problems)
from shared import topics
from shared.db import insert_dicts, readonly, select_where_in
from shared.events import CareLogged, CareVoided, Event, StatementIssued
from shared.kernel import Park, Subscription, UnitOfWork
from shared.outbox import OutgoingEvent, enqueue
from shared.registry import RegistryCopy
from shared.schemas import CloseBatchRequest, CloseRequest
from shared.stream_metrics import EVENTS_PROCESSED, count
from shared.settlement_keys import KEYS
from shared.statements import read_statement
from shared.timeutil import today

log = logging.getLogger("zorgpot.settlement")
SERVICE = "settlement"


class UnknownArrangement(LookupError):
    """The close names an arrangement the registry copy does not have (HTTP 404)."""


class RegistryBehind(RuntimeError):
    """The registry copy has not caught up with the version the gateway had (HTTP 503, retry)."""


@dataclass(frozen=True)
class CloseOutcome:
    created: bool  # False: exactly this period was closed before; these are the statements issued then
    close: Close
    statements: list[dict[str, Any]]  # summaries: statement_id, municipality, total_cents

    def to_dict(self) -> dict[str, Any]:
        return {"arrangement_id": self.close.arrangement_id, "period_start": self.close.period_start.isoformat(),
                "period_end": self.close.period_end.isoformat(), "close_sequence": self.close.sequence,
                "issued_on": self.close.issued_on.isoformat(), "created": self.created,
                "statements": self.statements}


def _summary(row: Any) -> dict[str, Any]:
    return {"statement_id": row.statement_id, "arrangement_id": row.arrangement_id,
            "funder": row.funder or row.municipality, "municipality": row.municipality, "period_start": row.period_start.isoformat(),
            "period_end": row.period_end.isoformat(), "close_sequence": row.close_sequence,
            "total_cents": row.total_cents, "issued_at": row.issued_at.isoformat()}


@dataclass
class SettlementBatch:
    """One batch's state: closes made per arrangement (locked), the lines it touches, the writes it queues."""

    closes_made: dict[str, int]
    known: dict[str, bool]  # registration id -> voided, as stored
    new_lines: dict[str, dict[str, Any]] = field(default_factory=dict)
    voids: list[dict[str, Any]] = field(default_factory=list)


class SettlementService:
    name = SERVICE

    def __init__(self, engine: AsyncEngine, registry: RegistryCopy, outbox, wake_relay) -> None:  # noqa: ANN001
        self.engine = engine
        self.read_engine = readonly(engine)
        self.registry = registry
        self.outbox = outbox
        self.wake_relay = wake_relay
        self.subscriptions = [Subscription(
            topics.CARE_LOGGED, handlers={CareLogged: self._logged, CareVoided: self._voided},
            provides={CareLogged: lambda e: e.registration_id})]

    # -- the kernel's hooks (consuming care.logged) ---------------------------------------------------
    async def ready_for(self, events: list[Event]) -> None:
        pass

    async def begin_batch(self, uow: UnitOfWork, events: list[CareLogged | CareVoided]) -> SettlementBatch:
        closes_made = await self._lock_arrangements(uow.conn, {e.arrangement_id for e in events})
        rids = list({e.registration_id for e in events})
        cl = books.care_lines
        known = {r.registration_id: bool(r.voided)
                 for r in await select_where_in(uow.conn, (cl.c.registration_id, cl.c.voided), cl.c.registration_id, rids)}
        return SettlementBatch(closes_made, known)

    async def end_batch(self, uow: UnitOfWork, batch: SettlementBatch) -> None:
        if batch.new_lines:
            await insert_dicts(uow.conn, books.care_lines, list(batch.new_lines.values()))
        if batch.voids:
            cl = books.care_lines
            await uow.conn.execute(update(cl).where(cl.c.registration_id == bindparam("rid"), cl.c.voided.is_(False))
                                   .values(voided=True, voided_since_close=bindparam("made")), batch.voids)

    def after_commit(self, batch: SettlementBatch) -> None:
        pass

    def _logged(self, batch: SettlementBatch, event: CareLogged) -> None:
        if event.registration_id in batch.known or event.registration_id in batch.new_lines:
            count(EVENTS_PROCESSED, SERVICE, "duplicate")
            return
        batch.new_lines[event.registration_id] = {
            "registration_id": event.registration_id, "arrangement_id": event.arrangement_id,
            "school_id": event.school_id, "date": event.date, "minutes": event.minutes,
            "cost_cent_minutes": event.cost_cent_minutes,
            "attributions": orjson.dumps([[a.pupil_ref, a.municipality] for a in event.attributions]),
            "residences": books.residences_column((a.pupil_ref, a.municipality) for a in event.attributions),
            "attributed_to": event.attributed_to, "known_since_close": batch.closes_made[event.arrangement_id],
            "voided": False, "voided_since_close": None, "funder": event.funder,
        }
        count(EVENTS_PROCESSED, SERVICE, event.type)

    def _voided(self, batch: SettlementBatch, event: CareVoided) -> Park | None:
        made = batch.closes_made.get(event.arrangement_id, 0)
        line = batch.new_lines.get(event.registration_id)
        if line is not None:
            if not line["voided"]:
                line.update(voided=True, voided_since_close=made)
            count(EVENTS_PROCESSED, SERVICE, event.type)
        elif event.registration_id in batch.known:
            if batch.known[event.registration_id]:
                count(EVENTS_PROCESSED, SERVICE, "void_noop")
            else:
                batch.known[event.registration_id] = True
                batch.voids.append({"rid": event.registration_id, "made": made})
                count(EVENTS_PROCESSED, SERVICE, event.type)
        else:  # never expected (a void follows its registration on its partition): kept until it arrives
            return Park(event.registration_id)
        return None

    async def _lock_arrangements(self, conn: AsyncConnection, arrangement_ids: Iterable[str]) -> dict[str, int]:
        """Lock (creating when missing) the arrangements' state rows; returns closes made per arrangement."""
        wanted = sorted(set(arrangement_ids))  # one lock order for everyone: no deadlocks
        s = books.arrangement_state
        rows = (await conn.execute(select(s.c.arrangement_id, s.c.closes_made)
                                   .where(s.c.arrangement_id.in_(wanted)).order_by(s.c.arrangement_id)
                                   .with_for_update())).all()
        made = {r.arrangement_id: r.closes_made for r in rows}
        missing = [a for a in wanted if a not in made]
        if missing:
            await conn.execute(s.insert(), [{"arrangement_id": a, "closes_made": 0} for a in missing])
            made.update({a: 0 for a in missing})
        return made

    # -- closing a period --------------------------------------------------------------------------------
    def context_of(self, arrangement_id: str) -> ArrangementContext:
        arrangement = self.registry.arrangements.get(arrangement_id)
        if arrangement is None:
            raise UnknownArrangement(f"arrangement {arrangement_id!r} is not registered")
        school = self.registry.schools.get(arrangement.school_id)
        if school is None:
            raise UnknownArrangement(f"school {arrangement.school_id!r} of arrangement {arrangement_id!r} is unknown")
        return ArrangementContext(
            arrangement_id=arrangement_id, arrangement=arrangement, host_municipality=school.municipality,
            municipalities=dict(self.registry.municipalities),
            pupils=self.registry.pupils_of_groups(arrangement.school_id, arrangement.group_ids),
            school_name=school.name,
            funders={f: self.registry.funders[f] for f in arrangement.settlement.funders() if f in self.registry.funders},
            norm=self.registry.norms.get(arrangement.norm_id) if arrangement.norm_id else None,
            calendar=self.registry.calendars.get(arrangement.calendar_id) if arrangement.calendar_id else None,
        )

    async def close(self, request: CloseRequest, registry_version: int = 0) -> CloseOutcome:
        """Close the period; raises domain.SettlementError / PeriodConflictError for a bad one."""
        return (await self.close_many(CloseBatchRequest(arrangement_ids=[request.arrangement_id],
                                                        period_start=request.period_start,
                                                        period_end=request.period_end), registry_version))[0]

    async def close_many(self, request: CloseBatchRequest, registry_version: int = 0) -> list[CloseOutcome]:
        """Close the same period for several arrangements in one transaction: all of them or none.

        Per arrangement the outcome is what `close` gives: a new close, or (exactly this period closed before)
        the statements issued then. A bad period for any arrangement raises for the whole request, naming it.
        One transaction and a handful of queries for the lot: closing a region's 500 arrangements one by one
        costs ~70 database round trips each (docs/performance.md)."""
        if not await self.registry.wait_for(registry_version, timeout=20.0):
            raise RegistryBehind(f"registry copy at version {self.registry.version}, the close needs "
                                 f"{registry_version}; try again shortly")
        contexts = {a: self.context_of(a) for a in request.arrangement_ids}
        for attempt in range(3):
            try:
                return await self._close_many(contexts, request)
            except IntegrityError:  # a concurrent identical close won the race: answer with its statements
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _close_many(self, contexts: dict[str, ArrangementContext], request: CloseBatchRequest
                          ) -> list[CloseOutcome]:
        period_start, period_end = request.period_start, request.period_end
        now, issued_on = dt.datetime.now(dt.timezone.utc), today()  # one request, one issue date
        outcomes: dict[str, CloseOutcome] = {}
        repeated: list[Close] = []  # exactly this period closed before: answered with its statements
        results: dict[str, CloseResult] = {}
        async with self.engine.begin() as conn:
            await self._lock_arrangements(conn, contexts)
            histories = await self._histories(conn, contexts)
            # Arrangements alike in history (closes made, last period end) and key share the summary queries.
            shapes: dict[tuple[int, dt.date | None, bool], list[str]] = defaultdict(list)
            for arrangement_id, history in histories.items():
                identical = find_identical_close(history, period_start, period_end)
                if identical is not None:
                    repeated.append(identical)
                    continue
                per_residence = not KEYS[contexts[arrangement_id].arrangement.settlement.key].by_period
                shapes[(len(history), history[-1].period_end if history else None, per_residence)].append(
                    arrangement_id)
            for (closes_made, previous_end, per_residence), arrangement_ids in shapes.items():
                summaries = await queries.care_summaries(conn, self.registry, arrangement_ids, closes_made,
                                                         previous_end, period_end, per_residence)
                for arrangement_id in arrangement_ids:
                    try:
                        results[arrangement_id] = close_summarised(
                            contexts[arrangement_id], summaries[arrangement_id], histories[arrangement_id],
                            period_start, period_end, issued_on)
                    except SettlementError as exc:  # name the arrangement: a batch has many
                        raise type(exc)(f"arrangement {arrangement_id}: {exc}") from exc
            for close, statements in zip(repeated, await self._close_statements(conn, repeated)):
                outcomes[close.arrangement_id] = CloseOutcome(False, close, statements)
            if results:
                await self._record_closes(conn, list(results.values()), now)
        if results:
            self.wake_relay()
        for arrangement_id, result in results.items():
            close = result.close
            count(EVENTS_PROCESSED, SERVICE, "statement.issued", amount=len(result.statements))
            log.info("closed %s %s..%s (close %d): %d statements, %d cents", arrangement_id, close.period_start,
                     close.period_end, close.sequence, len(result.statements), close.charged_cents)
            outcomes[arrangement_id] = CloseOutcome(True, close, [
                {"statement_id": s["statement_id"], "funder": s["funder"], "funder_kind": s["funder_kind"],
                 "municipality": s["municipality"], "total_cents": s["total_cents"]} for s in result.statements])
        return [outcomes[arrangement_id] for arrangement_id in request.arrangement_ids]

    async def _record_closes(self, conn: AsyncConnection, results: list[CloseResult], now: dt.datetime) -> None:
        """The closes, the arrangements' close counts, the statements and their outbox events."""
        closes, statement_rows, outgoing = [], [], []
        for result in results:
            close = result.close
            closes.append({"arrangement_id": close.arrangement_id, "sequence": close.sequence,
                           "period_start": close.period_start, "period_end": close.period_end,
                           "record": orjson.dumps(close.to_dict()), "closed_at": now})
            for statement in result.statements:
                statement_rows.append({
                    "statement_id": statement["statement_id"], "arrangement_id": close.arrangement_id,
                    "municipality": statement["municipality"], "funder": statement["funder"],
                    "close_sequence": close.sequence,
                    "period_start": close.period_start, "period_end": close.period_end,
                    "total_cents": statement["total_cents"], "issued_at": now, "doc": orjson.dumps(statement)})
                event = StatementIssued(
                    event_id=f"statement:{statement['statement_id']}", statement_id=statement["statement_id"],
                    municipality=statement["municipality"], funder=statement["funder"],
                    funder_kind=statement["funder_kind"], arrangement_id=close.arrangement_id,
                    period_start=close.period_start, period_end=close.period_end,
                    total_cents=statement["total_cents"], statement=statement)
                outgoing.append(OutgoingEvent(topics.STATEMENTS, statement["funder"].encode(), event.to_bytes()))
        await conn.execute(books.closes.insert(), closes)
        state = books.arrangement_state
        await conn.execute(update(state).where(state.c.arrangement_id == bindparam("for_arrangement"))
                           .values(closes_made=bindparam("sequence")),
                           [{"for_arrangement": c["arrangement_id"], "sequence": c["sequence"]} for c in closes])
        await conn.execute(books.statements.insert(), statement_rows)
        await enqueue(conn, self.outbox, outgoing)

    async def _histories(self, conn: AsyncConnection, arrangement_ids: Iterable[str]) -> dict[str, list[Close]]:
        """Each arrangement's closes, oldest first (an empty list for one never closed)."""
        histories: dict[str, list[Close]] = {a: [] for a in arrangement_ids}
        rows = await conn.execute(select(books.closes.c.arrangement_id, books.closes.c.record)
                                  .where(books.closes.c.arrangement_id.in_(list(histories)))
                                  .order_by(books.closes.c.arrangement_id, books.closes.c.sequence))
        for arrangement_id, record in rows:
            histories[arrangement_id].append(Close.from_dict(orjson.loads(record)))
        return histories

    async def _close_statements(self, conn: AsyncConnection, closes: list[Close]) -> list[list[dict[str, Any]]]:
        """The statement summaries each of `closes` issued, by funder."""
        if not closes:
            return []
        st = books.statements
        wanted = {(close.arrangement_id, close.sequence): [] for close in closes}
        rows = (await conn.execute(select(st.c.arrangement_id, st.c.close_sequence, st.c.statement_id,
                                          st.c.municipality, st.c.funder, st.c.total_cents)
                                   .where(st.c.arrangement_id.in_(list({c.arrangement_id for c in closes})))
                                   .order_by(st.c.funder))).all()
        for r in rows:
            found = wanted.get((r.arrangement_id, r.close_sequence))
            if found is not None:
                found.append({"statement_id": r.statement_id, "funder": r.funder,
                              "funder_kind": "municipality" if r.municipality else "funder",
                              "municipality": r.municipality, "total_cents": r.total_cents})
        return [wanted[(close.arrangement_id, close.sequence)] for close in closes]

    # -- reading statements ------------------------------------------------------------------------------
    async def statements(self, funder: str | None = None, arrangement_id: str | None = None
                         ) -> list[dict[str, Any]]:
        """Summaries, optionally of one funder's (a municipality code or a funder id) or one arrangement's."""
        st = books.statements
        query = select(st.c.statement_id, st.c.arrangement_id, st.c.municipality, st.c.funder, st.c.period_start,
                       st.c.period_end, st.c.close_sequence, st.c.total_cents, st.c.issued_at)
        if funder:
            query = query.where(st.c.funder == funder)
        if arrangement_id:
            query = query.where(st.c.arrangement_id == arrangement_id)
        async with self.read_engine.connect() as conn:
            rows = (await conn.execute(query.order_by(st.c.arrangement_id, st.c.close_sequence,
                                                      st.c.funder))).all()
        return [_summary(r) for r in rows]

    async def statement(self, statement_id: str) -> dict[str, Any] | None:
        async with self.read_engine.connect() as conn:
            doc = (await conn.execute(select(books.statements.c.doc)
                                      .where(books.statements.c.statement_id == statement_id))).scalar_one_or_none()
        return read_statement(orjson.loads(doc)) if doc is not None else None

    # -- the invariant -----------------------------------------------------------------------------------
    async def invariant(self, arrangement_id: str | None = None) -> list[dict[str, Any]]:
        """Per arrangement: issued statements + unsettled cost == net cost of accepted, non-voided care.

        `unsettled` is computed from the care lines alone (cost not covered by the last close, as the lines
        reproduce it), `issued` from the stored statements alone: a lost, doubled or altered statement or
        care line shows up as a non-zero difference or a problem.
        """
        cl, st, cs = books.care_lines, books.statements, books.closes
        async with self.read_engine.connect() as conn:
            ids_query = select(cl.c.arrangement_id).union(select(cs.c.arrangement_id))
            ids = sorted((await conn.execute(ids_query)).scalars())
            if arrangement_id is not None:
                ids = [a for a in ids if a == arrangement_id]
            report = []
            for arr_id in ids:
                lines = await queries.care_lines(conn, arr_id)
                history = (await self._histories(conn, [arr_id]))[arr_id]
                issued = int((await conn.execute(select(func.coalesce(func.sum(st.c.total_cents), 0))
                                                 .where(st.c.arrangement_id == arr_id))).scalar_one())
                per_close = dict((await conn.execute(select(st.c.close_sequence, func.sum(st.c.total_cents))
                                                     .where(st.c.arrangement_id == arr_id)
                                                     .group_by(st.c.close_sequence))).all())
                report.append(self._arrangement_invariant(arr_id, lines, history, issued, per_close))
        return report

    def _arrangement_invariant(self, arr_id: str, lines: list[CareLine], history: list[Close], issued: int,
                               per_close: dict[int, int]) -> dict[str, Any]:
        problems: list[str] = []
        try:
            context = self.context_of(arr_id)
            arrangement = context.arrangement
        except UnknownArrangement as exc:
            context, arrangement = None, None
            problems.append(str(exc))
        settled_by_lines, net = invariant_figures(arrangement, lines, history)
        unsettled = net - settled_by_lines
        if context is not None:
            problems += invariant_problems(context, lines, history, issued)
        for close in history:
            if per_close.get(close.sequence, 0) != close.charged_cents:
                problems.append(f"close {close.sequence} of {arr_id} charged {close.charged_cents} cents, its "
                                f"statements sum to {per_close.get(close.sequence, 0)}")
        difference = issued + unsettled - net
        return {
            "arrangement_id": arr_id,
            "registrations": len(lines),
            "voided": sum(1 for line in lines if line.voided),
            "cost_cent_minutes": sum(line.cost_cent_minutes for line in lines if not line.voided),
            "closes": len(history),
            "issued_cents": issued,
            "unsettled_cents": unsettled,
            "net_cost_cents": net,
            "difference_cents": difference,
            "problems": problems,
            "ok": difference == 0 and not problems,
        }
