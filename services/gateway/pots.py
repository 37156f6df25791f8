"""Gateway routes: budget pots (design.md section 6), read from the budget service's internal view.

Scoping: the coordinator sees every pot, a school token only its own school's pots (another school's pot is
a 404, the same as an unknown one, so nothing leaks), a board token the pots of the board's schools (the same
404 for any other), a municipality or funder token none (403). Figures are in cents
and minutes, each money figure with a `*_display` euro string beside it.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request

from services.gateway.auth import Principal, authenticate, forbid
from services.gateway.deps import RETRY_AFTER_S, IdPath, service_get
from services.gateway.service import current_registry_version

router = APIRouter(tags=["budget"])


def _may_read_pots(principal: Principal) -> None:
    if not (principal.is_coordinator or principal.role in ("school", "board")):
        raise forbid("pots are for the coordinating municipality, the schools and their boards; "
                     "a municipality reads its settlement statements")


async def _board_schools(request: Request, board_id: str | None) -> list[str]:
    """The schools of a board token's board as the registry has them now (none once the board is gone)."""
    doc = await request.app.state.registry.get("board", board_id or "")
    return list(doc["school_ids"]) if doc else []


async def _registry_version(request: Request) -> dict[str, Any]:
    """Read-your-writes: the budget service answers from a registry copy at least as new as the gateway's,
    so an arrangement whose PUT returned is a pot at once."""
    async with request.app.state.read_engine.connect() as conn:
        return {"registry_version": await current_registry_version(conn)}


def _answer(reply: Any) -> dict[str, Any]:
    if reply.status_code != 200:
        raise HTTPException(503, "the budget service could not answer; ask again shortly",
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    return reply.json()


@router.get("/pots")
async def list_pots(request: Request, principal: Principal = Depends(authenticate)) -> dict[str, Any]:
    """Every pot the token may see, with its section-6 figures and weekly spending series."""
    _may_read_pots(principal)
    params = await _registry_version(request)
    if principal.role == "board":
        params["school_ids"] = ",".join(await _board_schools(request, principal.subject))
    elif not principal.is_coordinator:
        params["school_id"] = principal.subject
    pots = _answer(await service_get(request, "budget", "/internal/pots", params))["pots"]
    return {"viewer": {"role": principal.role, "subject": principal.subject}, "pots": pots}


@router.get("/pots/{arrangement_id}")
async def get_pot(request: Request, arrangement_id: IdPath,
                  principal: Principal = Depends(authenticate)) -> dict[str, Any]:
    _may_read_pots(principal)
    reply = await service_get(request, "budget", f"/internal/pots/{arrangement_id}", await _registry_version(request))
    not_found = HTTPException(404, f"pot {arrangement_id!r} not found")
    if reply.status_code == 404:
        raise not_found
    pot = _answer(reply)
    if principal.role == "board":
        if pot["school_id"] not in await _board_schools(request, principal.subject):
            raise not_found
    elif not principal.may_act_for_school(pot["school_id"]):
        raise not_found
    return pot
