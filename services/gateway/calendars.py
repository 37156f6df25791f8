"""Gateway routes: school calendars (design.md section 11, contract).

A calendar is reference data like a school: the coordinator PUTs its full state, the gateway stores it and
publishes it on `registry.changes` (kind "calendar") in one transaction, and every service's registry copy has
it. An arrangement that names it (`calendar_id`) counts its elapsed share, burn ratio and forecast in school
days (Monday to Friday outside the holidays), and its planned capacity per school day (docs/budget.md).
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request

from services.gateway.auth import Principal
from services.gateway.deps import IdPath, require_broker, require_coordinator
from shared.schemas import Calendar

router = APIRouter(tags=["reference data"])
MAX_HOLIDAYS = 400  # a school year has about ten; several years in one calendar stay far below this


def _problems(body: Calendar) -> list[dict[str, object]]:
    """What the model allows but a calendar cannot mean: an open-ended holiday (every later day would be one)."""
    problems: list[dict[str, object]] = []
    if len(body.holidays) > MAX_HOLIDAYS:
        problems.append({"loc": ["body", "holidays"], "field": "holidays",
                         "msg": f"{len(body.holidays)} holidays; at most {MAX_HOLIDAYS} in one calendar"})
    for index, holiday in enumerate(body.holidays):
        if holiday.valid_until is None:
            problems.append({"loc": ["body", "holidays", index, "until"], "field": f"holidays.{index}.until",
                             "msg": f"holiday {holiday.name!r} needs an until date (inclusive last day)"})
    return problems


@router.put("/calendars/{calendar_id}", dependencies=[Depends(require_broker)])
async def put_calendar(body: Calendar, request: Request, calendar_id: IdPath,
                       _: Principal = Depends(require_coordinator)):
    """A school calendar: `{name, holidays: [{from, until, name}]}`, dates inclusive. School days are Monday to
    Friday outside the holidays. The full new state each time (idempotent)."""
    problems = _problems(body)
    if problems:
        raise HTTPException(422, problems)
    doc = body.model_dump(mode="json", by_alias=True)
    version = await request.app.state.registry.put("calendar", calendar_id, doc)
    return {"calendar_id": calendar_id, **doc, "registry_version": version}


@router.get("/calendars/{calendar_id}")
async def get_calendar(request: Request, calendar_id: IdPath, _: Principal = Depends(require_coordinator)):
    return await request.app.state.registry.view("calendar", calendar_id, "calendar_id")
