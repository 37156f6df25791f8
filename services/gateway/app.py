"""Gateway (FastAPI): the only HTTP entry for users. Authenticates, validates, writes facts to its own
database + outbox (relayed to Kafka), and reads the stream services through their internal HTTP views."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import update

from services.gateway import books, dashboard, deadletters, payments, pots, settlements
from services.gateway import boards, final_settlements, norms, reports
from services.gateway.auth import STATEMENT_ROLES, Principal, authenticate, forbid, hash_token, new_token, now_utc
from services.gateway.deps import (RETRY_AFTER_S, CodePath, IdPath, NoNulStr, no_nul, require_broker,
                                   require_coordinator, service_get)
from services.gateway.calendars import router as calendars_router
from services.gateway.parsing import BodyError, UnsupportedMediaType, read_items, validate_items
from services.gateway.service import Conflict, Intake, Invalid, NotFound, RegistryWriter
from shared.db import make_engine, readonly
from shared.migrations import migrate
from shared.identity import SLUG_ID, is_municipality_code, pupil_ref_problem
from shared.outbox import OutboxRelay
from shared.schemas import Arrangement, Funder, Group, Municipality, Pupil, Registration, School, VoidRequest
from shared.settings import Settings, get_settings

log = logging.getLogger("zorgpot.gateway")

REQUESTS = Counter("zorgpot_gateway_requests_total", "Gateway HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("zorgpot_gateway_request_seconds", "Gateway HTTP request latency", ["method", "route"])
REGISTRATIONS = Counter("zorgpot_gateway_registrations_total", "Registrations received, by outcome", ["outcome"])



def problem(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["coordinator", "school", "municipality", "funder", "board"]
    subject: str | None = Field(default=None, max_length=64)
    label: NoNulStr | None = Field(default=None, max_length=200)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = make_engine(settings.db_url("gateway"))
        await migrate(engine, "services/gateway/migrations")
        relay = OutboxRelay("gateway", engine, books.outbox, books.relay_state, settings)
        app.state.settings = settings
        app.state.engine = engine
        app.state.read_engine = readonly(engine)
        app.state.coordinator_token = settings.coordinator_token
        app.state.relay = relay
        app.state.registry = RegistryWriter(engine)
        app.state.intake = Intake(engine)
        app.state.http = httpx.AsyncClient(timeout=10.0)
        relay_task = asyncio.create_task(relay.run())
        try:
            yield
        finally:
            await relay.stop()
            relay_task.cancel()
            await app.state.http.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Zorgpot gateway",
        version="1.0",
        description="Collective funding of care in special-school groups: hour registrations, budget pots, "
                    "settlement statements. Every call except /health needs `Authorization: Bearer TOKEN`.",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next):  # noqa: ANN001
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_body_bytes:
            response: Response = problem(413, f"request body is {int(length)} bytes; the limit is "
                                              f"{settings.max_body_bytes} bytes: split the batch")
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        LATENCY.labels(request.method, path).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_errors(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI answers 400 "There was an error parsing the body" for a JSON body it cannot decode for a
        # reason other than a JSON syntax error (not UTF-8, nested too deep): say which, as the 422 it is.
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            return problem(422, [{"loc": ["body"], "field": "", "msg": _unreadable_body(exc.__cause__),
                                  "type": "json_invalid"}])
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_errors(request: Request, exc: RequestValidationError) -> JSONResponse:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if (media != "application/json" and not media.endswith("+json")
                and any(tuple(err.get("loc", ())) == ("body",) and err.get("type") == "model_attributes_type"
                        for err in exc.errors())):
            # FastAPI only decodes JSON content types; any other body reaches the model as raw bytes.
            return problem(415, f"content type {media or '(none)'!r} is not JSON: send the body as JSON with "
                                "'Content-Type: application/json'")
        details = []
        for err in exc.errors():
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            if tuple(err.get("loc", ())) == ("body",) and err.get("type") == "missing":
                msg = "the request body is empty: send a JSON object"
            details.append({"loc": list(err.get("loc", ())), "field": ".".join(str(p) for p in err.get("loc", ())[1:]),
                            "msg": msg, "type": err.get("type")})
        return problem(422, details)

    @app.exception_handler(Invalid)
    async def invalid_reference(_request: Request, exc: Invalid) -> JSONResponse:
        return problem(422, [{"loc": ["body", exc.field], "field": exc.field, "msg": exc.message,
                              "type": "reference"}])

    @app.exception_handler(Conflict)
    async def conflict(_request: Request, exc: Conflict) -> JSONResponse:
        return problem(409, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return problem(404, str(exc))

    @app.get("/health", tags=["operations"])
    async def health(request: Request) -> dict[str, Any]:
        relay: OutboxRelay = request.app.state.relay
        return {"status": "ok", "broker_available": relay.broker_available()}

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        from shared.outbox import BACKLOG
        BACKLOG.labels("gateway").set(await request.app.state.relay.backlog())
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(api_router(), prefix="/api/v1")
    app.include_router(pots.router, prefix="/api/v1")
    app.include_router(calendars_router, prefix="/api/v1")
    app.include_router(norms.router, prefix="/api/v1")
    app.include_router(settlements.router, prefix="/api/v1")
    app.include_router(deadletters.router, prefix="/api/v1")
    app.include_router(payments.router, prefix="/api/v1")
    app.include_router(final_settlements.router, prefix="/api/v1")
    app.include_router(reports.router, prefix="/api/v1")
    app.include_router(boards.router, prefix="/api/v1")
    app.include_router(dashboard.router)  # /dashboard, outside the API prefix
    return app


def api_router() -> APIRouter:
    r = APIRouter()

    # -- tokens -------------------------------------------------------------------------------------
    @r.post("/tokens", status_code=201, tags=["tokens"])
    async def issue_token(body: TokenRequest, request: Request, _: Principal = Depends(require_coordinator)):
        if body.role != "coordinator" and not body.subject:
            raise HTTPException(422, [{"loc": ["body", "subject"], "field": "subject",
                                       "msg": f"role {body.role} needs a subject (school_id, municipality code, "
                                              "funder id or board id)"}])
        if body.role == "municipality" and not is_municipality_code(body.subject or ""):
            raise HTTPException(422, [{"loc": ["body", "subject"], "field": "subject",
                                       "msg": "a municipality subject is a CBS code: GM + 4 digits"}])
        if body.role == "school" and not SLUG_ID.fullmatch(body.subject or ""):
            raise HTTPException(422, [{"loc": ["body", "subject"], "field": "subject",
                                       "msg": "a school subject is a school_id: 1-64 of A-Z a-z 0-9 . _ : -"}])
        if body.role == "funder" and await request.app.state.registry.get("funder", body.subject or "") is None:
            raise HTTPException(422, [{"loc": ["body", "subject"], "field": "subject",
                                       "msg": f"funder {body.subject!r} is not registered: PUT /funders/{{id}} first"}])
        if body.role == "board" and await request.app.state.registry.get("board", body.subject or "") is None:
            raise HTTPException(422, [{"loc": ["body", "subject"], "field": "subject",
                                       "msg": f"board {body.subject!r} is not registered: PUT /boards/{{id}} first"}])
        token_id, token = new_token()
        async with request.app.state.engine.begin() as conn:
            await conn.execute(books.tokens.insert().values(
                id=token_id, token_hash=hash_token(token), role=body.role,
                subject=body.subject if body.role != "coordinator" else None, label=body.label,
                created_at=now_utc()))
        return {"id": token_id, "token": token, "role": body.role, "subject": body.subject}

    @r.delete("/tokens/{token_id}", status_code=204, tags=["tokens"])
    async def revoke_token(request: Request, token_id: IdPath, _: Principal = Depends(require_coordinator)):
        async with request.app.state.engine.begin() as conn:
            result = await conn.execute(update(books.tokens).where(books.tokens.c.id == token_id)
                                        .values(revoked_at=now_utc()))
        if result.rowcount == 0:
            raise NotFound(f"token {token_id!r} does not exist")
        return Response(status_code=204)

    # -- reference data -----------------------------------------------------------------------------
    @r.put("/municipalities/{code}", tags=["reference data"], dependencies=[Depends(require_broker)])
    async def put_municipality(body: Municipality, request: Request, code: CodePath,
                               _: Principal = Depends(require_coordinator)):
        doc = body.model_dump(mode="json", by_alias=True)
        version = await request.app.state.registry.put("municipality", code, doc)
        return {"code": code, **doc, "registry_version": version}

    @r.put("/funders/{funder_id}", tags=["reference data"], dependencies=[Depends(require_broker)])
    async def put_funder(body: Funder, request: Request, funder_id: IdPath,
                         _: Principal = Depends(require_coordinator)):
        """A party other than a municipality that receives statements (Wlz office, insurer, ...)."""
        if is_municipality_code(funder_id):
            raise HTTPException(422, [{"loc": ["path", "funder_id"], "field": "funder_id",
                                       "msg": "a municipality is set up with PUT /municipalities/{code}, not as a funder"}])
        doc = body.model_dump(mode="json", by_alias=True)
        version = await request.app.state.registry.put("funder", funder_id, doc)
        return {"funder_id": funder_id, **doc, "registry_version": version}

    @r.get("/funders/{funder_id}", tags=["reference data"])
    async def get_funder(request: Request, funder_id: IdPath, principal: Principal = Depends(authenticate)):
        if not principal.may_read_funder(funder_id):
            raise NotFound(f"funder {funder_id!r} not found")
        return await request.app.state.registry.view("funder", funder_id, "funder_id")

    @r.put("/schools/{school_id}", tags=["reference data"], dependencies=[Depends(require_broker)])
    async def put_school(body: School, request: Request, school_id: IdPath,
                         _: Principal = Depends(require_coordinator)):
        doc = body.model_dump(mode="json", by_alias=True)
        version = await request.app.state.registry.put("school", school_id, doc, school_id=school_id)
        return {"school_id": school_id, **doc, "registry_version": version}

    @r.put("/schools/{school_id}/groups/{group_id}", tags=["reference data"], dependencies=[Depends(require_broker)])
    async def put_group(body: Group, request: Request, school_id: IdPath, group_id: IdPath,
                        principal: Principal = Depends(authenticate)):
        if not principal.may_act_for_school(school_id):
            raise forbid("a school token may only change its own school")
        doc = body.model_dump(mode="json", by_alias=True)
        version = await request.app.state.registry.put("group", f"{school_id}/{group_id}", doc, school_id=school_id)
        return {"school_id": school_id, "group_id": group_id, **doc, "registry_version": version}

    @r.put("/schools/{school_id}/pupils/{pupil_ref}", tags=["reference data"], dependencies=[Depends(require_broker)])
    async def put_pupil(body: Pupil, request: Request, school_id: IdPath, pupil_ref: Annotated[str, Path(max_length=64)],
                        principal: Principal = Depends(authenticate)):
        if not principal.may_act_for_school(school_id):
            raise forbid("a school token may only change its own school")
        reason = pupil_ref_problem(pupil_ref)
        if reason:
            raise HTTPException(422, [{"loc": ["path", "pupil_ref"], "field": "pupil_ref", "msg": reason}])
        doc = body.model_dump(mode="json", by_alias=True)
        version = await request.app.state.registry.put("pupil", f"{school_id}/{pupil_ref}", doc, school_id=school_id)
        return {"school_id": school_id, "pupil_ref": pupil_ref, **doc, "registry_version": version}

    @r.put("/arrangements/{arrangement_id}", tags=["reference data"], dependencies=[Depends(require_broker)])
    async def put_arrangement(body: Arrangement, request: Request, arrangement_id: IdPath,
                              _: Principal = Depends(require_coordinator)):
        doc = body.model_dump(mode="json", by_alias=True)
        version = await request.app.state.registry.put("arrangement", arrangement_id, doc, school_id=body.school_id)
        return {"arrangement_id": arrangement_id, **doc, "registry_version": version}

    # -- hours --------------------------------------------------------------------------------------
    @r.post("/hours", status_code=202, tags=["hours"], dependencies=[Depends(require_broker)],
            responses={200: {"description": "identical resend: duplicate, nothing changed"},
                       409: {"description": "registration_id already used with other content"}})
    async def post_hours(body: Registration, request: Request, principal: Principal = Depends(authenticate)):
        if not principal.may_act_for_school(body.school_id):
            raise forbid(f"this token may only register hours for its own school, not {body.school_id!r}")
        result = await request.app.state.intake.submit([(0, body)])
        request.app.state.relay.wake()
        if result.conflicts:
            REGISTRATIONS.labels("conflict").inc()
            raise Conflict(f"registration_id {body.registration_id!r} was already received with different "
                           "content; use a new registration_id, or void the old one first")
        if result.duplicates:
            REGISTRATIONS.labels("duplicate").inc()
            return JSONResponse({"registration_id": body.registration_id, "status": "duplicate"}, status_code=200)
        REGISTRATIONS.labels("received").inc()
        return {"registration_id": body.registration_id, "status": "pending"}

    @r.post("/hours/batch", tags=["hours"], dependencies=[Depends(require_broker)],
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Registration"}}},
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}}}}})
    async def post_hours_batch(request: Request, principal: Principal = Depends(authenticate)):
        if principal.role in STATEMENT_ROLES or principal.role == "board":  # as POST /hours: schools, coordinator
            raise forbid(f"a {principal.role} token cannot register hours")
        settings: Settings = request.app.state.settings
        body = await _read_limited(request, settings.max_body_bytes)
        try:
            raw_items = read_items(body, request.headers.get("content-type", "application/json"))
        except BodyError as exc:
            raise HTTPException(415 if isinstance(exc, UnsupportedMediaType) else 422, str(exc)) from exc
        if len(raw_items) > settings.max_batch_items:
            raise HTTPException(413, f"batch has {len(raw_items)} items; the limit is {settings.max_batch_items}")
        parsed = validate_items(raw_items)
        rejected: list[dict[str, Any]] = []
        valid: list[tuple[int, Registration]] = []
        for item in parsed:
            if item.registration is None:
                rejected.append({"index": item.index, "registration_id": item.registration_id, "errors": item.errors})
            elif not principal.may_act_for_school(item.registration.school_id):
                rejected.append({"index": item.index, "registration_id": item.registration_id, "errors": [
                    {"field": "school_id", "message": "this token may only register hours for its own school"}]})
            else:
                valid.append((item.index, item.registration))
        result = await request.app.state.intake.submit(valid)
        request.app.state.relay.wake()
        for index, rid in result.conflicts:
            rejected.append({"index": index, "registration_id": rid, "errors": [
                {"field": "registration_id",
                 "message": "already received with different content; use a new registration_id"}]})
        rejected.sort(key=lambda e: e["index"])
        REGISTRATIONS.labels("received").inc(len(result.accepted))
        REGISTRATIONS.labels("duplicate").inc(len(result.duplicates))
        REGISTRATIONS.labels("invalid").inc(len(rejected))
        return {"received": len(parsed), "accepted": len(result.accepted), "duplicates": len(result.duplicates),
                "rejected": rejected}

    @r.post("/hours/{registration_id}/void", status_code=202, tags=["hours"], dependencies=[Depends(require_broker)])
    async def void_hours(body: VoidRequest, request: Request, registration_id: IdPath,
                         principal: Principal = Depends(authenticate)):
        try:
            no_nul(body.reason)
        except ValueError as exc:
            raise HTTPException(422, [{"loc": ["body", "reason"], "field": "reason", "msg": str(exc)}]) from exc
        await _own_submission(request, registration_id, principal)
        first = await request.app.state.intake.void(registration_id, body.reason)
        request.app.state.relay.wake()
        if not first:
            return JSONResponse({"registration_id": registration_id, "status": "duplicate"}, status_code=200)
        return {"registration_id": registration_id, "status": "void_pending"}

    @r.get("/hours/{registration_id}", tags=["hours"])
    async def get_hours(request: Request, registration_id: IdPath, principal: Principal = Depends(authenticate)):
        submission = await _own_submission(request, registration_id, principal)
        reply = await service_get(request, "hours", f"/internal/registrations/{registration_id}")
        if reply.status_code == 404:
            view: dict[str, Any] = {"registration_id": registration_id, "status": "pending"}
        elif reply.status_code == 200:
            view = reply.json()
            view.pop("school_id", None)
        else:
            raise HTTPException(503, "the hours service could not answer; ask again shortly",
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        received = submission["received_at"]
        # SQLite hands back naive datetimes; every stored time is UTC.
        view["received_at"] = (received if received.tzinfo else received.replace(tzinfo=dt.timezone.utc)).isoformat()
        if submission["void_requested_at"] is not None and view["status"] in ("pending", "accepted"):
            view["void_pending"] = True
        return view

    return r


def _unreadable_body(cause: BaseException | None) -> str:
    if isinstance(cause, UnicodeError):
        return "the body is not UTF-8 encoded JSON"
    if isinstance(cause, RecursionError):
        return "the body is not readable JSON: it is nested too deeply"
    return "the body is not readable JSON"


async def _own_submission(request: Request, registration_id: str, principal: Principal) -> dict[str, Any]:
    submission = await request.app.state.intake.lookup(registration_id)
    # A school asking about another school's id gets the same 404 as for an unknown id: no leak.
    if submission is None or not principal.may_act_for_school(submission["school_id"]):
        raise NotFound(f"registration {registration_id!r} not found")
    return submission


async def _read_limited(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body exceeds the limit of {limit} bytes: split the batch")
        chunks.append(chunk)
    return b"".join(chunks)
