"""Gateway routes: settlement closes, statements (JSON/CSV/PDF) and the municipalities' statement webhooks.

The settlement service computes, stores and renders statements; these routes authenticate, authorise and
pass requests to its internal views. Webhook configuration and delivery live here (services/gateway/
webhooks.py), because the gateway owns the secrets.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
from contextlib import asynccontextmanager
from typing import Annotated, Any, AsyncIterator, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator
from sqlalchemy import select

from services.gateway import books
from services.gateway.auth import STATEMENT_ROLES, Principal, authenticate, forbid, now_utc
from services.gateway.deps import (RETRY_AFTER_S, CodePath, NoNulStr, require_coordinator, service_get,
                                   service_post)
from services.gateway.language import document_language
from services.gateway.service import current_registry_version
from services.gateway.webhooks import WHSEC_PREFIX, Deliverer, StatementFeed, delivery_status, rearm
from shared.schemas import CloseBatchRequest, CloseRequest


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the webhook deliverer beside the gateway (runs inside the app's own lifespan: engine exists)."""
    deliverer = Deliverer(app.state.engine, app.state.settings)
    feed = StatementFeed(app.state.engine, app.state.settings, deliverer.wake)
    app.state.webhooks = deliverer
    tasks = [asyncio.create_task(feed.run()), asyncio.create_task(deliverer.run())]
    try:
        yield
    finally:
        feed.stop()
        await deliverer.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


router = APIRouter(lifespan=lifespan)

# {arrangement_id}:{start}:{end}:{municipality}; the same safe alphabet as every other id in a URL.
StatementIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,200}$")]


class WebhookBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: HttpUrl
    secret: NoNulStr = Field(min_length=16, max_length=200,
                        description="shared secret for the X-Zorgpot-Signature and Standard Webhooks HMACs; at "
                                    "least 16 characters. A plain secret signs webhook-signature with its UTF-8 "
                                    "bytes; a `whsec_` + base64 secret with the decoded bytes (docs/settlement.md)")

    @field_validator("secret")
    @classmethod
    def _whsec_is_base64(cls, value: str) -> str:
        if value.startswith(WHSEC_PREFIX):
            try:
                key = base64.b64decode(value[len(WHSEC_PREFIX):], validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("a secret starting with whsec_ must be base64 after the prefix "
                                 "(Standard Webhooks format)") from None
            if len(key) < 16:
                raise ValueError("a whsec_ secret must decode to at least 16 bytes")
        return value


def _passthrough(reply: Any, service: str = "settlement") -> None:
    """Turn a settlement-service error reply into the same HTTP error."""
    if reply.status_code == 503:
        raise HTTPException(503, f"the {service} service is not ready; try again shortly",
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    if reply.status_code >= 400:
        try:
            detail = reply.json().get("detail")
        except ValueError:
            detail = reply.text
        raise HTTPException(reply.status_code, detail)


# -- closing a period ---------------------------------------------------------------------------------

@router.post("/settlements/close", status_code=201, tags=["settlement"],
             responses={200: {"description": "exactly this period was closed before: the same statements"},
                        409: {"description": "the period overlaps a closed period or lies before the last one"},
                        422: {"description": "the period is invalid (order, outside the arrangement)"}})
async def close_period(body: CloseRequest, request: Request, _: Principal = Depends(require_coordinator)):
    """Close a period of an arrangement: one statement per municipality, immutable once issued.

    The close covers every care event the settlement service has applied when it runs; care still in flight
    is settled as a correction on the next close (docs/settlement.md)."""
    async with request.app.state.read_engine.connect() as conn:
        version = await current_registry_version(conn)
    if await request.app.state.registry.get("arrangement", body.arrangement_id) is None:
        raise HTTPException(404, f"arrangement {body.arrangement_id!r} is not registered")
    reply = await _post_close(request, "/internal/close", body.model_dump(mode="json"), version)
    result = reply.json()
    result.pop("created", None)
    return JSONResponse(result, status_code=reply.status_code)


@router.post("/settlements/close/batch", status_code=201, tags=["settlement"],
             responses={200: {"description": "exactly this period was closed before for every arrangement"},
                        404: {"description": "an arrangement is not registered (named); nothing was closed"},
                        409: {"description": "the period overlaps a closed period of an arrangement (named); "
                                             "nothing was closed"},
                        422: {"description": "the request or the period is invalid for an arrangement (named); "
                                             "nothing was closed"}})
async def close_period_batch(body: CloseBatchRequest, request: Request, _: Principal = Depends(require_coordinator)):
    """Close the same period for many arrangements (a region's quarter) in one transaction: all or none.

    Answers `{closes: [{arrangement_id, period_start, period_end, close_sequence, issued_on, created,
    statements}]}` in the order asked; `created` is false for an arrangement whose period was closed exactly
    so before (its statements then). 201 when anything was closed now, 200 when everything was a repeat."""
    async with request.app.state.read_engine.connect() as conn:
        version = await current_registry_version(conn)
    reply = await _post_close(request, "/internal/close-batch", body.model_dump(mode="json"), version)
    return JSONResponse(reply.json(), status_code=reply.status_code)


async def _post_close(request: Request, path: str, payload: dict[str, Any], registry_version: int) -> Any:
    """Ask the settlement service to close; its errors become the same HTTP errors (a period problem names
    the field, as a validation error would)."""
    reply = await service_post(request, "settlement", path, {**payload, "registry_version": registry_version})
    if reply.status_code == 422:
        detail = reply.json().get("detail")
        if isinstance(detail, str):
            field = "period_end" if "period_end" in detail or "past the end" in detail else "period_start"
            detail = [{"loc": ["body", field], "field": field, "msg": detail, "type": "period"}]
        raise HTTPException(422, detail)
    _passthrough(reply)
    return reply


# -- statements ---------------------------------------------------------------------------------------

@router.get("/statements", tags=["settlement"])
async def list_statements(request: Request, municipality: str | None = Query(default=None, pattern=r"^GM\d{4}$"),
                          funder: str | None = Query(default=None, pattern=r"^[A-Za-z0-9._:-]{1,64}$",
                                                     description="a municipality code or a funder id"),
                          arrangement_id: str | None = Query(default=None, max_length=64),
                          principal: Principal = Depends(authenticate)):
    """Coordinator: every statement. Municipality or funder token: its own statements only."""
    if municipality is not None and funder is not None and municipality != funder:
        raise HTTPException(422, [{"loc": ["query", "funder"], "field": "funder",
                                   "msg": "give municipality or funder, or both the same"}])
    funder = funder or municipality
    if principal.role in STATEMENT_ROLES:
        if funder is not None and funder != principal.subject:
            raise forbid(f"a {principal.role} token may only list its own statements")
        funder = principal.subject
    elif not principal.is_coordinator:
        raise forbid("only the coordinator, municipalities and funders may read statements")
    params = {k: v for k, v in (("funder", funder), ("arrangement_id", arrangement_id)) if v}
    reply = await service_get(request, "settlement", "/internal/statements", params=params)
    _passthrough(reply)
    return reply.json()


async def _readable_statement(request: Request, statement_id: str, principal: Principal,
                              lang: str = "issued") -> dict[str, Any]:
    reply = await service_get(request, "settlement", f"/internal/statements/{statement_id}", params={"lang": lang})
    if reply.status_code == 404:
        raise HTTPException(404, f"statement {statement_id!r} not found")
    _passthrough(reply)
    statement = reply.json()
    # Anyone but the coordinator and the statement's funder gets the same 404 as for an unknown id.
    if not principal.may_read_funder(statement.get("funder") or statement["municipality"]):
        raise HTTPException(404, f"statement {statement_id!r} not found")
    return statement


@router.get("/statements/{statement_id}", tags=["settlement"],
            responses={200: {"content": {"application/json": {}, "text/csv": {}, "application/pdf": {}}}})
async def get_statement(request: Request, statement_id: StatementIdPath,
                        format: Literal["json", "csv", "pdf"] = Query(default="json"),
                        dutch: bool = Query(default=False, description="csv: ';' separator and decimal comma"),
                        decimal: Literal["point", "comma"] = Query(default="point",
                                                                   description="csv: decimal=comma is dutch=1"),
                        principal: Principal = Depends(authenticate), lang: str = Depends(document_language)):
    """One statement as JSON, CSV (`?format=csv`, `&dutch=1` for ';' and decimal comma) or a PDF letter.

    Dutch by default, English with `?lang=en` or `Accept-Language: en`: the lines' `description`, the CSV
    header row and the PDF (figures are the same in every language; `Content-Language` says which)."""
    statement = await _readable_statement(request, statement_id, principal, lang)
    if format == "json":
        # The coordinator and the statement's own funder (a municipality's webhook delivery: design.md section 12)
        # see how its delivery went; a funder other than a municipality has no webhook, so none.
        found = await delivery_status(request.app.state.read_engine, [statement_id])
        statement["delivery"] = found[0] if found else None
        return JSONResponse(statement, headers={"Content-Language": lang})
    params = {"format": format, "lang": lang}
    if format == "csv" and (dutch or decimal == "comma"):
        params["dutch"] = "1"
    reply = await service_get(request, "settlement", f"/internal/statements/{statement_id}", params=params)
    _passthrough(reply)
    filename = statement_id.replace(":", "_") + (".csv" if format == "csv" else ".pdf")
    media = "text/csv; charset=utf-8" if format == "csv" else "application/pdf"
    return Response(reply.content, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Content-Language": lang})


# -- webhooks ------------------------------------------------------------------------------------------

@router.put("/municipalities/{code}/webhook", tags=["settlement"])
async def put_webhook(body: WebhookBody, request: Request, code: CodePath,
                      _: Principal = Depends(require_coordinator)):
    """Statements for this municipality are POSTed to `url`, signed with `secret`, retried until a 2xx.
    Statements issued before the webhook was set are sent too."""
    if await request.app.state.registry.get("municipality", code) is None:
        raise HTTPException(404, f"municipality {code} is not registered")
    values = {"url": str(body.url), "secret": body.secret, "updated_at": now_utc(), "active": True}
    async with request.app.state.engine.begin() as conn:
        updated = await conn.execute(books.webhooks.update().where(books.webhooks.c.municipality == code)
                                     .values(**values))
        if updated.rowcount == 0:
            await conn.execute(books.webhooks.insert().values(municipality=code, **values))
    request.app.state.webhooks.wake()
    return {"municipality": code, "url": str(body.url), "active": True}


@router.get("/municipalities/{code}/webhook", tags=["settlement"])
async def get_webhook(request: Request, code: CodePath, _: Principal = Depends(require_coordinator)):
    """The webhook (never the secret) and the delivery status of this municipality's statements."""
    async with request.app.state.read_engine.connect() as conn:
        row = (await conn.execute(select(books.webhooks).where(books.webhooks.c.municipality == code))).first()
    if row is None:
        raise HTTPException(404, f"municipality {code} has no webhook")
    updated = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=dt.timezone.utc)
    return {"municipality": code, "url": row.url, "active": row.active, "updated_at": updated.isoformat(),
            "deliveries": await delivery_status(request.app.state.read_engine, municipality=code)}


@router.get("/webhooks/deliveries", tags=["settlement"])
async def list_deliveries(request: Request, municipality: str | None = Query(default=None, pattern=r"^GM\d{4}$"),
                          statement_id: str | None = Query(default=None),
                          _: Principal = Depends(require_coordinator)):
    """Delivery status of every issued statement: attempts, last error, delivered_at."""
    ids = [statement_id] if statement_id else None
    return await delivery_status(request.app.state.read_engine, ids, municipality)


@router.post("/webhooks/deliveries/{statement_id}/retry", tags=["settlement"], status_code=202)
async def retry_delivery(request: Request, statement_id: StatementIdPath,
                         _: Principal = Depends(require_coordinator)):
    """Re-arm a delivery: a `failed` one (given up after webhook_give_up_hours) or one still waiting is sent
    now, with a fresh give-up window -> 202. One already delivered is left alone -> 200. Unknown id -> 404."""
    before = await rearm(request.app.state.engine, statement_id)
    if before is None:
        raise HTTPException(404, f"no delivery for statement {statement_id}")
    if before == "delivered":
        return JSONResponse({"statement_id": statement_id, "status": "delivered", "rearmed": False}, status_code=200)
    request.app.state.webhooks.wake()
    return {"statement_id": statement_id, "status": "pending", "previous_status": before, "rearmed": True}
