"""Gateway routes: payments actually made to a pot's payee (design.md section 10, contract).

The coordinator records each payment once (`payment_id` is the idempotency key); the gateway stores it and
publishes `payment.recorded` in the same transaction (outbox), and the budget service's pot figures count
what was paid from these facts, never from installment due dates. A school reads its own pots' payments.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from services.gateway import books
from services.gateway.auth import Principal, authenticate, now_utc
from services.gateway.deps import IdPath, require_broker, require_coordinator
from services.gateway.service import Conflict, Invalid, NotFound, registry_doc
from shared import topics
from shared.events import PaymentRecorded
from shared.outbox import OutgoingEvent, enqueue
from shared.schemas import Arrangement, PaymentRequest
from shared.timeutil import today

router = APIRouter(tags=["budget"])


def _payment_doc(row: Any) -> dict[str, Any]:
    return {"payment_id": row.payment_id, "arrangement_id": row.arrangement_id, "date": row.date.isoformat(),
            "amount_cents": row.amount_cents, "reference": row.reference,
            "recorded_at": (row.recorded_at if row.recorded_at.tzinfo else
                            row.recorded_at.replace(tzinfo=dt.timezone.utc)).isoformat()}


async def _arrangement(conn: Any, arrangement_id: str) -> Arrangement:
    doc = await registry_doc(conn, "arrangement", arrangement_id)
    if doc is None:
        raise NotFound(f"arrangement {arrangement_id!r} not found")
    return Arrangement.model_validate(doc)


@router.post("/arrangements/{arrangement_id}/payments", status_code=201,
             dependencies=[Depends(require_coordinator), Depends(require_broker)])
async def record_payment(body: PaymentRequest, request: Request, arrangement_id: IdPath) -> Any:
    """Record a payment made to the pot's payee -> 201; the identical payment again -> 200; the same
    `payment_id` with other content -> 409. `date` must lie in one of the arrangement's budget years and not
    in the future."""
    digest = body.content_hash()
    async with request.app.state.engine.begin() as conn:
        arrangement = await _arrangement(conn, arrangement_id)
        first, last = arrangement.start.year, arrangement.end.year
        if not first <= body.date.year <= last:
            raise Invalid("date", f"{body.date.isoformat()} is outside the budget years of arrangement "
                                  f"{arrangement_id!r} ({first}..{last})")
        if body.date > today():
            raise Invalid("date", f"{body.date.isoformat()} is in the future: record a payment once it is made")
        p = books.payments
        found = (await conn.execute(select(p).where(p.c.payment_id == body.payment_id))).first()
        if found is not None:
            if found.content_hash == digest and found.arrangement_id == arrangement_id:
                return JSONResponse(_payment_doc(found), status_code=200)
            raise Conflict(f"payment {body.payment_id!r} was recorded before with other content "
                           f"({found.arrangement_id}, {found.date.isoformat()}, {found.amount_cents} cents)")
        now = now_utc()
        await conn.execute(p.insert().values(payment_id=body.payment_id, arrangement_id=arrangement_id,
                                             date=body.date, amount_cents=body.amount_cents,
                                             reference=body.reference, content_hash=digest, recorded_at=now))
        event = PaymentRecorded(event_id=f"payment:{body.payment_id}", payment_id=body.payment_id,
                                arrangement_id=arrangement_id, school_id=arrangement.school_id, date=body.date,
                                amount_cents=body.amount_cents, reference=body.reference, recorded_at=now)
        await enqueue(conn, books.outbox, [OutgoingEvent(topics.PAYMENTS, arrangement_id.encode(), event.to_bytes())])
        row = (await conn.execute(select(p).where(p.c.payment_id == body.payment_id))).one()
    request.app.state.relay.wake()
    return _payment_doc(row)


@router.get("/arrangements/{arrangement_id}/payments")
async def list_payments(request: Request, arrangement_id: IdPath,
                        principal: Principal = Depends(authenticate)) -> dict[str, Any]:
    """The payments recorded for a pot, oldest first, and their total (the coordinator, or the pot's school)."""
    async with request.app.state.read_engine.connect() as conn:
        arrangement = await _arrangement(conn, arrangement_id)
        if not principal.may_act_for_school(arrangement.school_id):
            raise NotFound(f"arrangement {arrangement_id!r} not found")  # another school's pot: no leak
        p = books.payments
        rows = (await conn.execute(select(p).where(p.c.arrangement_id == arrangement_id)
                                   .order_by(p.c.date, p.c.payment_id))).all()
    return {"arrangement_id": arrangement_id, "payments": [_payment_doc(r) for r in rows],
            "total_cents": sum(r.amount_cents for r in rows)}
