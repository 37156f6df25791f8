"""Gateway routes: final settlements of pots (afrekening, design.md section 10, contract).

The budget service computes, stores and renders them (services/budget/final_settlement.py, render.py); these
routes authenticate, authorise and pass requests to its internal views.

Who: the coordinator issues; the coordinator and the pot's school read (another school gets the same 404 as
for an unknown arrangement or document, so nothing leaks); a municipality token gets 403 (a final settlement is
between the region and the school board; municipalities read their settlement statements).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.auth import Principal, authenticate, forbid
from services.gateway.deps import IdPath, require_coordinator, service_get, service_post
from services.gateway.language import document_language
from services.gateway.service import current_registry_version
from services.gateway.settlements import _passthrough as passthrough

router = APIRouter(tags=["budget"])

# fs:<arrangement_id>:<version>; the same safe alphabet as every other id in a URL.
FinalSettlementIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,200}$")]


class FinalSettlementRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    supersedes: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,200}$",
                                   description="the latest final_settlement_id: issue a corrected version")


def _may_read(principal: Principal) -> None:
    if not (principal.is_coordinator or principal.role == "school"):
        raise forbid("final settlements are for the coordinating municipality and the pot's school; "
                     "a municipality reads its settlement statements")


def _passthrough(reply: Any) -> None:
    """A budget-service error reply becomes the same HTTP error (503 with Retry-After)."""
    passthrough(reply, "budget")


async def _school_of(request: Request, arrangement_id: str) -> str:
    doc = await request.app.state.registry.get("arrangement", arrangement_id)
    if doc is None:
        raise HTTPException(404, f"arrangement {arrangement_id!r} not found")
    return doc["school_id"]


@router.post("/arrangements/{arrangement_id}/final-settlement", status_code=201,
             responses={200: {"description": "issued before: the same document (a plain repeat, or the same "
                                             "`supersedes` repeated)"},
                        404: {"description": "the arrangement is not registered"},
                        409: {"description": "the arrangement's end date has not passed yet, or `supersedes` is not "
                                             "the latest version"},
                        422: {"description": "`supersedes` names no final settlement of this arrangement"}})
async def issue_final_settlement(request: Request, arrangement_id: IdPath,
                                 body: FinalSettlementRequest | None = Body(default=None),
                                 _: Principal = Depends(require_coordinator)):
    """Issue the arrangement's final settlement once its end date has passed: delivered cost capped at the cap,
    paid, balance (positive: still to pay to the school; negative: to be refunded), and per budget year -> 201.
    Asked again -> 200 with the same document, even if care or payments arrived since; `{"supersedes": id}` with
    the latest version's id issues the next version from the facts now."""
    await _school_of(request, arrangement_id)
    async with request.app.state.read_engine.connect() as conn:
        version = await current_registry_version(conn)
    payload = {"arrangement_id": arrangement_id, "supersedes": body.supersedes if body else None,
               "registry_version": version}
    return await issue_in_budget(request, "/internal/final-settlements", payload)


async def issue_in_budget(request: Request, path: str, payload: dict[str, Any]) -> JSONResponse:
    """POST a document request to the budget service: its reply (201 issued, 200 issued before) as it is, its
    field errors as FastAPI's 422 shape (`loc: ["body", field]`), any other error as the same HTTP error."""
    reply = await service_post(request, "budget", path, payload)
    if reply.status_code == 422:
        detail = reply.json().get("detail")
        if isinstance(detail, list):
            detail = [{"loc": ["body", d["field"]], **d, "type": "value_error"} for d in detail]
        raise HTTPException(422, detail)
    _passthrough(reply)
    return JSONResponse(reply.json(), status_code=reply.status_code)


@router.get("/arrangements/{arrangement_id}/final-settlements")
async def list_final_settlements(request: Request, arrangement_id: IdPath,
                                 principal: Principal = Depends(authenticate)) -> dict[str, Any]:
    """Every version issued for the arrangement, oldest first (the last one is in force)."""
    _may_read(principal)
    if not principal.may_act_for_school(await _school_of(request, arrangement_id)):
        raise HTTPException(404, f"arrangement {arrangement_id!r} not found")
    reply = await service_get(request, "budget", f"/internal/arrangements/{arrangement_id}/final-settlements")
    _passthrough(reply)
    return {"arrangement_id": arrangement_id, **reply.json()}


@router.get("/final-settlements/{final_settlement_id}",
            responses={200: {"content": {"application/json": {}, "text/csv": {}, "application/pdf": {}}}})
async def get_final_settlement(request: Request, final_settlement_id: FinalSettlementIdPath,
                               format: Literal["json", "csv", "pdf"] = Query(default="json"),
                               dutch: bool = Query(default=False, description="csv: ';' separator and decimal comma"),
                               principal: Principal = Depends(authenticate),
                               lang: str = Depends(document_language)):
    """One final settlement as JSON, CSV (`?format=csv`, `&dutch=1`) or a one-page PDF letter; the CSV header
    and the PDF in Dutch by default, English with `?lang=en` or `Accept-Language: en`."""
    _may_read(principal)
    not_found = HTTPException(404, f"final settlement {final_settlement_id!r} not found")
    reply = await service_get(request, "budget", f"/internal/final-settlements/{final_settlement_id}")
    if reply.status_code == 404:
        raise not_found
    _passthrough(reply)
    doc = reply.json()
    if not principal.may_act_for_school(doc["school_id"]):
        raise not_found
    if format == "json":
        return doc
    params = {"format": format, "lang": lang, **({"dutch": "1"} if format == "csv" and dutch else {})}
    reply = await service_get(request, "budget", f"/internal/final-settlements/{final_settlement_id}", params=params)
    _passthrough(reply)
    filename = final_settlement_id.replace(":", "_") + (".csv" if format == "csv" else ".pdf")
    media = "text/csv; charset=utf-8" if format == "csv" else "application/pdf"
    return Response(reply.content, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Content-Language": lang})
