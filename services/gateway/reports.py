"""Gateway routes: accountability reports (verantwoordingsrapportage, design.md section 12, contract).

The budget service computes, stores and renders them (services/budget/report.py, report_render.py); these routes
authenticate, authorise, validate the shape and pass requests to its internal views.

Who: the coordinating municipality only, for issuing and reading. A report is the region's account to its
council and funders and may span several schools' pots, so school, municipality and board tokens get 403 on
every report route (nothing about a report is answered to them, so nothing leaks).

"The same request": the same `report_id`; a request without one gets an id derived from its kind, period and set
of arrangements (order and repeats ignored; `period: "2026-Q1"` and its first and last day are the same period),
so sending it again answers the stored report (200). A `report_id` already used for another request: 409.
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.auth import Principal
from services.gateway.deps import require_coordinator, service_get
from services.gateway.final_settlements import issue_in_budget
from services.gateway.language import document_language
from services.gateway.service import current_registry_version
from services.gateway.settlements import _passthrough as passthrough
from shared.schemas import SlugId

router = APIRouter(tags=["budget"])

REPORT_ID = r"^[A-Za-z0-9._-]{1,200}$"
ReportIdPath = Annotated[str, Path(pattern=REPORT_ID)]


class ReportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    report_id: str | None = Field(default=None, pattern=REPORT_ID,
                                  description="your id for the report; without one it is derived from the request")
    kind: Literal["quarterly", "annual", "final"]
    arrangement_ids: list[SlugId] = Field(min_length=1, max_length=500)
    period: str | None = Field(default=None, pattern=r"^\d{4}(-Q[1-4])?$",
                               description='"2026-Q1" (quarterly) or "2026" (annual); leave out for final')
    period_start: dt.date | None = Field(default=None, description="instead of period: the period's first day")
    period_end: dt.date | None = Field(default=None, description="instead of period: the period's last day")


def _passthrough(reply: Any) -> None:
    passthrough(reply, "budget")


@router.post("/reports", status_code=201,
             responses={200: {"description": "issued before for the same request: the same document"},
                        404: {"description": "an arrangement is not registered"},
                        409: {"description": "the period has not ended yet, or report_id names another report"},
                        422: {"description": "the period does not fit the kind or lies outside an arrangement's "
                                             "term (the field is named)"}})
async def issue_report(request: Request, body: ReportRequest, _: Principal = Depends(require_coordinator)):
    """Issue an accountability report (quarterly, annual or final) over one or more arrangements: per arrangement
    minutes and cost by group, week, task category and funding law; planned, spent and paid per budget year;
    pupils reached and pupils with care on 3 or more days; care workers per group; non-resident share; savings
    against individual decisions -> 201. Immutable: the same request again -> 200 with the same document."""
    registry = request.app.state.registry
    for arrangement_id in dict.fromkeys(body.arrangement_ids):
        if await registry.get("arrangement", arrangement_id) is None:
            raise HTTPException(404, f"arrangement {arrangement_id!r} not found")
    async with request.app.state.read_engine.connect() as conn:
        version = await current_registry_version(conn)
    payload = {**body.model_dump(mode="json", exclude_none=True), "registry_version": version}
    return await issue_in_budget(request, "/internal/reports", payload)


@router.get("/reports")
async def list_reports(request: Request, _: Principal = Depends(require_coordinator)) -> dict[str, Any]:
    """Every report issued (id, kind, period, arrangements, issue date), latest period first."""
    reply = await service_get(request, "budget", "/internal/reports")
    _passthrough(reply)
    return reply.json()


@router.get("/reports/{report_id}",
            responses={200: {"content": {"application/json": {}, "text/csv": {}, "application/pdf": {}}}})
async def get_report(request: Request, report_id: ReportIdPath,
                     format: Literal["json", "csv", "pdf"] = Query(default="json"),
                     _: Principal = Depends(require_coordinator), lang: str = Depends(document_language)):
    """One report as JSON, CSV (`?format=csv`, one figure a row) or PDF (with charts: hours per week per group,
    spent against planned per budget year); the CSV and PDF in Dutch by default (the CSV with ';' and decimal
    comma), English with `?lang=en` or `Accept-Language: en`."""
    params = None if format == "json" else {"format": format, "lang": lang}
    reply = await service_get(request, "budget", f"/internal/reports/{report_id}", params=params)
    if reply.status_code == 404:
        raise HTTPException(404, f"report {report_id!r} not found")
    _passthrough(reply)
    if format == "json":
        return reply.json()
    filename = report_id + (".csv" if format == "csv" else ".pdf")
    media = "text/csv; charset=utf-8" if format == "csv" else "application/pdf"
    return Response(reply.content, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Content-Language": lang})
