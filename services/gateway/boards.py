"""Gateway routes: school boards and their drawing rights (Amsterdam, domain.md M4; design.md section 11).

`PUT /boards/{board_id}` (coordinator) publishes the board through the registry (kind "board"). `POST
/boards/{board_id}/transfers` (coordinator) moves cap between two of the board's pots: the gateway checks it
(shared/drawing_rights.py: pots of the board's schools, the source's cap not below its spent, the board's pots
together within the board's cap), stores it and publishes `cap.transferred` on `board.transfers` in one
transaction (outbox), like payments; `transfer_id` is the idempotency key. The budget service consumes it: each
pot's effective cap is its arrangement's cap + transfers in - transfers out. A board token reads its transfers
(`GET /boards/{board_id}/transfers`) and its schools' pots (services/gateway/pots.py), nothing else.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.gateway import books
from services.gateway.auth import Principal, authenticate, forbid, now_utc
from services.gateway.deps import RETRY_AFTER_S, IdPath, require_broker, require_coordinator, service_get
from services.gateway.service import Conflict, Invalid, NotFound, current_registry_version, registry_doc
from shared import topics
from shared.drawing_rights import CapTransfer, TransferRefused, cap_problem, effective_cap_cents, reference_problem
from shared.events import CapTransferred
from shared.outbox import OutgoingEvent, enqueue
from shared.schemas import Arrangement, Board, Transfer
from shared.timeutil import today

router = APIRouter(tags=["boards"])


def _content_hash(transfer: Transfer) -> str:
    return hashlib.sha256(orjson.dumps(transfer.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()


def _transfer_doc(row: Any) -> dict[str, Any]:
    recorded = row.recorded_at if row.recorded_at.tzinfo else row.recorded_at.replace(tzinfo=dt.timezone.utc)
    return {"transfer_id": row.transfer_id, "board_id": row.board_id, "from_arrangement": row.from_arrangement,
            "to_arrangement": row.to_arrangement, "amount_cents": row.amount_cents, "date": row.date.isoformat(),
            "recorded_at": recorded.isoformat()}


def _recorded(row: Any) -> CapTransfer:
    return CapTransfer(row.transfer_id, row.board_id, row.from_arrangement, row.to_arrangement, row.amount_cents,
                       row.date)


async def _board(conn: AsyncConnection, board_id: str) -> Board:
    doc = await registry_doc(conn, "board", board_id)
    if doc is None:
        raise NotFound(f"board {board_id!r} not found")
    return Board.model_validate(doc)


async def _arrangements(conn: AsyncConnection, board: Board, *also: str) -> dict[str, Arrangement]:
    """The arrangements of the board's schools, and those named in `also` (whoever's they are)."""
    e = books.registry_entities
    rows = (await conn.execute(select(e.c.key, e.c.doc).where(
        e.c.kind == "arrangement", or_(e.c.school_id.in_(board.school_ids), e.c.key.in_(also))))).all()
    return {row.key: Arrangement.model_validate(orjson.loads(row.doc)) for row in rows}


async def _transfers_touching(conn: AsyncConnection, arrangement_ids: list[str]) -> list[CapTransfer]:
    t = books.transfers
    rows = (await conn.execute(select(t).where(or_(t.c.from_arrangement.in_(arrangement_ids),
                                                   t.c.to_arrangement.in_(arrangement_ids)))
                               .order_by(t.c.date, t.c.transfer_id))).all()
    return [_recorded(r) for r in rows]


async def _same_transfer(conn: AsyncConnection, board_id: str, body: Transfer, digest: str) -> JSONResponse | None:
    """200 with the stored transfer for an identical resend; 409 for the same id with other content."""
    t = books.transfers
    found = (await conn.execute(select(t).where(t.c.transfer_id == body.transfer_id))).first()
    if found is None:
        return None
    if found.content_hash == digest and found.board_id == board_id:
        return JSONResponse(_transfer_doc(found), status_code=200)
    raise Conflict(f"transfer {body.transfer_id!r} was recorded before with other content ({found.board_id}: "
                   f"{found.amount_cents} cents from {found.from_arrangement} to {found.to_arrangement} on "
                   f"{found.date.isoformat()})")


def _refuse(refusal: TransferRefused) -> Exception:
    if refusal.kind == "invalid":
        return Invalid(refusal.field or "", refusal.message)
    if refusal.kind == "unknown":
        return NotFound(refusal.message)
    return Conflict(refusal.message)


async def _spent_cents(request: Request, arrangement_id: str) -> int:
    """The source pot's spent, from the budget service (as GET /pots/{id} reads it)."""
    async with request.app.state.read_engine.connect() as conn:
        version = await current_registry_version(conn)
    reply = await service_get(request, "budget", f"/internal/pots/{arrangement_id}", {"registry_version": version})
    if reply.status_code != 200:
        raise HTTPException(503, f"the budget service could not tell what pot {arrangement_id!r} has spent; "
                                 "nothing was stored, try again shortly", headers={"Retry-After": str(RETRY_AFTER_S)})
    return int(reply.json()["spent_cents"])


@router.put("/boards/{board_id}", dependencies=[Depends(require_coordinator), Depends(require_broker)])
async def put_board(body: Board, request: Request, board_id: IdPath) -> dict[str, Any]:
    """A school board: its schools and its cap (the drawing right its schools' pots share). Full new state."""
    doc = body.model_dump(mode="json", by_alias=True)
    version = await request.app.state.registry.put("board", board_id, doc)
    return {"board_id": board_id, **doc, "registry_version": version}


@router.post("/boards/{board_id}/transfers", status_code=201,
             dependencies=[Depends(require_coordinator), Depends(require_broker)],
             responses={200: {"description": "identical resend: the transfer recorded before, nothing changed"},
                        409: {"description": "transfer_id used with other content; the source's cap would fall "
                                             "below its spent; the board's pots would exceed the board's cap"}})
async def record_transfer(body: Transfer, request: Request, board_id: IdPath) -> Any:
    """Move cap from one of the board's pots to another -> 201; the identical transfer again -> 200."""
    digest = _content_hash(body)
    sides = (body.from_arrangement, body.to_arrangement)
    async with request.app.state.read_engine.connect() as conn:
        board = await _board(conn, board_id)
        if (again := await _same_transfer(conn, board_id, body, digest)) is not None:
            return again
        refusal = reference_problem(board_id, board, body, await _arrangements(conn, board, *sides), today())
    if refusal is not None:
        raise _refuse(refusal)
    spent = await _spent_cents(request, body.from_arrangement)
    async with request.app.state.engine.begin() as conn:
        e = books.registry_entities
        # PostgreSQL: one transfer of a board at a time (SQLite's BEGIN IMMEDIATE serialises writers already).
        await conn.execute(select(e.c.version).where(e.c.kind == "board", e.c.key == board_id).with_for_update())
        board = await _board(conn, board_id)
        if (again := await _same_transfer(conn, board_id, body, digest)) is not None:
            return again
        arrangements = await _arrangements(conn, board, *sides)
        refusal = (reference_problem(board_id, board, body, arrangements, today())
                   or cap_problem(board_id, board, body, arrangements, await _transfers_touching(conn, list(arrangements)),
                                  spent))
        if refusal is not None:
            raise _refuse(refusal)
        now = now_utc()
        t = books.transfers
        await conn.execute(t.insert().values(transfer_id=body.transfer_id, board_id=board_id,
                                             from_arrangement=body.from_arrangement, to_arrangement=body.to_arrangement,
                                             amount_cents=body.amount_cents, date=body.date, content_hash=digest,
                                             recorded_at=now))
        event = CapTransferred(event_id=f"transfer:{body.transfer_id}", transfer_id=body.transfer_id, board_id=board_id,
                               from_arrangement=body.from_arrangement, to_arrangement=body.to_arrangement,
                               amount_cents=body.amount_cents, date=body.date, recorded_at=now)
        await enqueue(conn, books.outbox, [OutgoingEvent(topics.BOARD_TRANSFERS, board_id.encode(), event.to_bytes())])
        row = (await conn.execute(select(t).where(t.c.transfer_id == body.transfer_id))).one()
    request.app.state.relay.wake()
    return _transfer_doc(row)


@router.get("/boards/{board_id}/transfers")
async def list_transfers(request: Request, board_id: IdPath,
                         principal: Principal = Depends(authenticate)) -> dict[str, Any]:
    """The board's transfers (oldest first) and its schools' pots with their caps before and after transfers:
    the coordinator, or the board itself."""
    if not (principal.is_coordinator or principal.role == "board"):
        raise forbid("a board's transfers are for the coordinating municipality and the board")
    if not principal.is_coordinator and principal.subject != board_id:
        raise NotFound(f"board {board_id!r} not found")  # another board's: the same answer as an unknown one
    async with request.app.state.read_engine.connect() as conn:
        board = await _board(conn, board_id)
        arrangements = await _arrangements(conn, board)
        t = books.transfers
        rows = (await conn.execute(select(t).where(t.c.board_id == board_id)
                                   .order_by(t.c.date, t.c.recorded_at, t.c.transfer_id))).all()
        touching = await _transfers_touching(conn, list(arrangements))
    pots = [{"arrangement_id": aid, "school_id": arr.school_id, "start": arr.start.isoformat(),
             "end": arr.end.isoformat(), "arrangement_cap_cents": arr.cap_cents,
             "cap_cents": effective_cap_cents(aid, arr.cap_cents, touching)}
            for aid, arr in sorted(arrangements.items())]
    return {"board_id": board_id, "name": board.name, "school_ids": list(board.school_ids),
            "cap_cents": board.cap_cents, "pots": pots, "transfers": [_transfer_doc(r) for r in rows],
            "total_cents": sum(r.amount_cents for r in rows)}
