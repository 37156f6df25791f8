"""Settlement service (Faust worker): the kernel consumes `care.logged` into SettlementService; its internal views.

Views (reached only through the gateway, which does authentication and authorisation):
  POST /internal/close                   {arrangement_id, period_start, period_end, registry_version?}
  POST /internal/close-batch             {arrangement_ids, period_start, period_end, registry_version?}
  GET  /internal/statements              ?funder=&arrangement_id=  (funder: municipality code or funder id)
  GET  /internal/statements/{id}         ?format=json|csv|pdf &dutch=1 (csv: ';' and decimal comma)
                                         &lang=nl|en (descriptions, CSV header, PDF; default nl;
                                         lang=issued: the JSON exactly as stored, for internal readers)
  GET  /internal/invariant               ?arrangement_id=
"""
from __future__ import annotations

import asyncio
import logging

import orjson
from faust.web import View
from pydantic import ValidationError

from services.settlement import books
from services.settlement.describe import localise
from services.settlement.domain import PeriodConflictError, SettlementError
from services.settlement.render import statement_csv, statement_pdf
from services.settlement.service import SERVICE, RegistryBehind, SettlementService, UnknownArrangement
from shared.schemas import CloseBatchRequest, CloseRequest
from shared.streams import make_runtime

log = logging.getLogger("zorgpot.settlement")

rt = make_runtime(SERVICE, books.metadata, migrations="services/settlement/migrations")
app = rt.app
service = rt.serve(SettlementService(rt.engine, rt.registry, rt.outbox, rt.relay.wake))


def truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "comma")


async def _close_reply(view: View, request, model, close):  # noqa: ANN001, ANN202
    """Parse the body as `model`, run `close(parsed, registry_version)`, map domain errors to HTTP."""
    await rt.books_ready.wait()
    try:
        body = orjson.loads(await request.read())
        version = int(body.pop("registry_version", 0)) if isinstance(body, dict) else 0
        parsed = model.model_validate(body)
    except ValidationError as exc:
        return view.json({"detail": [{"field": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]}
                                     for e in exc.errors()]}, status=422)
    except (ValueError, TypeError) as exc:
        return view.json({"detail": f"body is not a close request: {exc}"}, status=422)
    try:
        return await close(parsed, version)
    except UnknownArrangement as exc:
        return view.json({"detail": str(exc)}, status=404)
    except RegistryBehind as exc:
        return view.json({"detail": str(exc)}, status=503)
    except PeriodConflictError as exc:  # before SettlementError: it is a subclass
        return view.json({"detail": str(exc)}, status=409)
    except SettlementError as exc:
        return view.json({"detail": str(exc)}, status=422)


@app.page("/internal/close")
class CloseView(View):
    async def post(self, request):  # noqa: ANN001, ANN201
        async def close(parsed: CloseRequest, version: int):  # noqa: ANN202
            outcome = await service.close(parsed, version)
            return self.json(outcome.to_dict(), status=201 if outcome.created else 200)

        return await _close_reply(self, request, CloseRequest, close)


@app.page("/internal/close-batch")
class CloseBatchView(View):
    async def post(self, request):  # noqa: ANN001, ANN201
        async def close(parsed: CloseBatchRequest, version: int):  # noqa: ANN202
            outcomes = await service.close_many(parsed, version)
            created = any(outcome.created for outcome in outcomes)
            return self.json({"closes": [outcome.to_dict() for outcome in outcomes]}, status=201 if created else 200)

        return await _close_reply(self, request, CloseBatchRequest, close)


@app.page("/internal/statements")
async def statements_view(web, request):  # noqa: ANN001
    await rt.books_ready.wait()
    query = request.query
    funder = query.get("funder") or query.get("municipality") or None
    return web.json(await service.statements(funder, query.get("arrangement_id") or None))


@app.page("/internal/statements/{statement_id}")
async def statement_view(web, request, statement_id: str):  # noqa: ANN001
    await rt.books_ready.wait()
    statement = await service.statement(statement_id)
    if statement is None:
        return web.json({"detail": f"statement {statement_id!r} not found"}, status=404)
    fmt = request.query.get("format", "json")
    lang = request.query.get("lang")
    if fmt == "csv":
        dutch = truthy(request.query.get("dutch")) or request.query.get("decimal") == "comma"
        return web.bytes(statement_csv(statement, dutch=dutch, lang=lang).encode("utf-8"), content_type="text/csv")
    if fmt == "pdf":
        pdf = await asyncio.to_thread(statement_pdf, statement, rt.settings.region_name, lang)
        return web.bytes(pdf, content_type="application/pdf")
    if fmt != "json":
        return web.json({"detail": "format must be json, csv or pdf"}, status=422)
    return web.json(statement if lang == "issued" else localise(statement, lang))


@app.page("/internal/invariant")
async def invariant_view(web, request):  # noqa: ANN001
    await rt.books_ready.wait()
    report = await service.invariant(request.query.get("arrangement_id") or None)
    return web.json({"ok": all(item["ok"] for item in report), "arrangements": report})
