"""Budget service (Faust worker): the kernel consumes `care.logged` into BudgetService; its gauges and views."""
from __future__ import annotations

import asyncio
import logging

import orjson
from faust.web import View

from services.budget import books, metrics
from services.budget.final_settlement import NotLatest, TooEarly, UnknownSupersedes
from services.budget.render import final_settlement_csv, final_settlement_pdf
from services.budget.report import Invalid, NotEnded, ReportIdTaken
from services.budget.report_render import report_csv, report_pdf
from services.budget.service import SERVICE, BudgetService, RegistryBehind, UnknownArrangement
from shared.streams import make_runtime

log = logging.getLogger("zorgpot.budget")

rt = make_runtime(SERVICE, books.metadata, migrations="services/budget/migrations")
app = rt.app
REFRESH_EVERY_S = 10.0  # gauges of every pot (the elapsed fraction moves with the date), alert sweep, lag
REGISTRY_WAIT_S = 5.0  # how long a view waits for the registry version the caller has seen


async def refresh_gauges(arrangement_ids: set[str] | None = None) -> None:
    # Read everything first, then publish with no await in between: /metrics is served on this event loop,
    # so a scrape sees a pot's figures and its reconciliation gauge together, never one without the other
    # (a freshly restarted worker used to show spent before its reconciliation series existed).
    pots = await service.pots(arrangement_ids=arrangement_ids)
    reconciliation = (await service.reconciliation(arrangement_ids))["pots"]
    for figures in pots:
        metrics.publish_pot(figures)
    metrics.publish_reconciliation(reconciliation)


gauges = metrics.GaugeRefresher(refresh_gauges)
service = rt.serve(BudgetService(rt.engine, rt.registry, rt.outbox, rt.relay.wake, on_changed=gauges.request))


@app.task
async def refresh_changed_gauges() -> None:
    await gauges.run()


@app.timer(REFRESH_EVERY_S)
async def refresh_all() -> None:
    if not rt.books_ready.is_set():
        return
    try:
        changed = await service.sweep_alerts()
        if changed:
            log.info("alert sweep updated %d pot(s)", len(changed))
        await refresh_gauges()
    except Exception:  # noqa: BLE001 - a failed refresh is retried on the next tick; never stop the timer
        log.exception("refreshing the budget gauges failed")


async def registry_caught_up(request) -> None:  # noqa: ANN001
    """Wait (briefly) until the registry copy has the version the gateway had: read-your-writes for pots."""
    version = request.query.get("registry_version", "0")
    if version.isdigit() and not await rt.registry.wait_for(int(version), timeout=REGISTRY_WAIT_S):
        log.warning("answering from registry version %d; the caller has seen %s", rt.registry.version, version)


@app.page("/internal/pots")
async def pots_view(web, request):  # noqa: ANN001
    await registry_caught_up(request)
    school_ids = request.query.get("school_ids")  # a board's schools, comma-separated ("" is none)
    return web.json({"pots": await service.pots(school_id=request.query.get("school_id"),
                                                school_ids=None if school_ids is None else school_ids.split(","))})


@app.page("/internal/pots/{arrangement_id}")
async def pot_view(web, request, arrangement_id: str):  # noqa: ANN001
    await registry_caught_up(request)
    figures = await service.pot(arrangement_id)
    if figures is None:
        return web.json({"detail": "unknown"}, status=404)
    return web.json(figures)


@app.page("/internal/reconciliation")
async def reconciliation_view(web, request):  # noqa: ANN001
    return web.json(await service.reconciliation())


# -- final settlements (design.md section 10): the gateway authenticates and authorises, these only answer ---

@app.page("/internal/final-settlements")
class FinalSettlementIssueView(View):
    async def post(self, request):  # noqa: ANN001, ANN201
        """{arrangement_id, supersedes?, registry_version?} -> 201 the new document, 200 the one issued before."""
        await rt.books_ready.wait()
        try:
            body = orjson.loads(await request.read())
            arrangement_id, supersedes = body["arrangement_id"], body.get("supersedes")
            version = int(body.get("registry_version", 0))
            if not isinstance(arrangement_id, str) or not (supersedes is None or isinstance(supersedes, str)):
                raise TypeError("arrangement_id and supersedes must be strings")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return self.json({"detail": f"body is not a final settlement request: {exc!r}"}, status=422)
        try:
            doc, created = await service.issue_final_settlement(arrangement_id, supersedes, version)
        except UnknownArrangement as exc:
            return self.json({"detail": str(exc)}, status=404)
        except RegistryBehind as exc:
            return self.json({"detail": str(exc)}, status=503)
        except (TooEarly, NotLatest) as exc:
            return self.json({"detail": str(exc)}, status=409)
        except UnknownSupersedes as exc:
            return self.json({"detail": [{"field": "supersedes", "msg": str(exc)}]}, status=422)
        return self.json(doc, status=201 if created else 200)


@app.page("/internal/arrangements/{arrangement_id}/final-settlements")
async def final_settlements_view(web, request, arrangement_id: str):  # noqa: ANN001
    await rt.books_ready.wait()
    return web.json({"final_settlements": await service.final_settlements(arrangement_id)})


@app.page("/internal/final-settlements/{final_settlement_id}")
async def final_settlement_view(web, request, final_settlement_id: str):  # noqa: ANN001
    """?format=json|csv|pdf (&dutch=1 for a CSV with ';' and decimal comma; &lang=nl|en for the CSV header and
    the PDF, default nl)."""
    await rt.books_ready.wait()
    doc = await service.final_settlement(final_settlement_id)
    if doc is None:
        return web.json({"detail": f"final settlement {final_settlement_id!r} not found"}, status=404)
    fmt = request.query.get("format", "json")
    if fmt == "csv":
        dutch = (request.query.get("dutch") or "").lower() in ("1", "true", "yes")
        return web.bytes(final_settlement_csv(doc, dutch=dutch, lang=request.query.get("lang")).encode("utf-8"),
                         content_type="text/csv")
    if fmt == "pdf":
        pdf = await asyncio.to_thread(final_settlement_pdf, doc, rt.settings.region_name, request.query.get("lang"))
        return web.bytes(pdf, content_type="application/pdf")
    if fmt != "json":
        return web.json({"detail": "format must be json, csv or pdf"}, status=422)
    return web.json(doc)


# -- accountability reports (design.md section 12): the gateway authenticates and authorises, these only answer ---

@app.page("/internal/reports")
class ReportView(View):
    async def get(self, request):  # noqa: ANN001, ANN201
        await rt.books_ready.wait()
        return self.json({"reports": await service.reports()})

    async def post(self, request):  # noqa: ANN001, ANN201
        """{report_id?, kind, arrangement_ids, period? | period_start, period_end, registry_version?} -> 201 the new
        report, 200 the one issued before for the same request."""
        await rt.books_ready.wait()
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise TypeError("not an object")
            version = int(body.pop("registry_version", 0))
        except (ValueError, TypeError) as exc:
            return self.json({"detail": f"body is not a report request: {exc!r}"}, status=422)
        try:
            doc, created = await service.issue_report(body, version)
        except UnknownArrangement as exc:
            return self.json({"detail": str(exc)}, status=404)
        except RegistryBehind as exc:
            return self.json({"detail": str(exc)}, status=503)
        except (NotEnded, ReportIdTaken) as exc:
            return self.json({"detail": str(exc)}, status=409)
        except Invalid as exc:
            return self.json({"detail": [{"field": exc.field, "msg": str(exc)}]}, status=422)
        except (KeyError, TypeError, ValueError) as exc:  # the gateway validated the shape; never expected
            return self.json({"detail": [{"field": "body", "msg": f"not a report request: {exc!r}"}]}, status=422)
        return self.json(doc, status=201 if created else 200)


@app.page("/internal/reports/{report_id}")
async def report_view(web, request, report_id: str):  # noqa: ANN001
    """?format=json|csv|pdf, &lang=nl (default) | en for the CSV and PDF."""
    await rt.books_ready.wait()
    doc = await service.report(report_id)
    if doc is None:
        return web.json({"detail": f"report {report_id!r} not found"}, status=404)
    fmt, lang = request.query.get("format", "json"), request.query.get("lang")  # unknown or none: Dutch
    if fmt == "csv":
        return web.bytes(report_csv(doc, lang).encode("utf-8"), content_type="text/csv")
    if fmt == "pdf":
        pdf = await asyncio.to_thread(report_pdf, doc, rt.settings.region_name, lang)
        return web.bytes(pdf, content_type="application/pdf")
    if fmt != "json":
        return web.json({"detail": "format must be json, csv or pdf"}, status=422)
    return web.json(doc)
