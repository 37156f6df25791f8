"""Gateway routes: dead letters (design.md section 7, contract), coordinator only.

Each stream service keeps the records it could not read or apply in its own database (shared/kernel.py) and
publishes each to `zorgpot.deadletter`; these routes ask the services' internal views. A dead letter's id
names its service (`hours-3`), so a retry goes to the service that holds it.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from services.gateway.deps import RETRY_AFTER_S, require_coordinator, service_get, service_post

STREAM_SERVICES = ("hours", "budget", "settlement")
router = APIRouter(tags=["dead letters"], dependencies=[Depends(require_coordinator)])
DeadletterIdPath = Annotated[str, Path(pattern=r"^(hours|budget|settlement)-[0-9]{1,12}$",
                                       description="as listed: the service and its number, e.g. hours-3")]


def _answer(reply: Any, service: str) -> Any:
    if reply.status_code == 404:
        raise HTTPException(404, reply.json().get("detail", "not found"))
    if reply.status_code != 200:
        raise HTTPException(503, f"the {service} service could not answer; ask again shortly",
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    return reply.json()


@router.get("/deadletters")
async def list_deadletters(request: Request, status: Literal["open", "resolved"] | None = Query(default=None),
                           service: Literal["hours", "budget", "settlement"] | None = Query(default=None)
                           ) -> dict[str, Any]:
    """Records a stream service could not read or apply: service, source topic, partition, offset, reason."""
    found: list[dict[str, Any]] = []
    for name in (service,) if service else STREAM_SERVICES:
        params = {"status": status} if status else None
        found.extend(_answer(await service_get(request, name, "/internal/deadletters", params), name)["deadletters"])
    found.sort(key=lambda d: (d["created_at"], d["id"]))
    return {"deadletters": found}


@router.post("/deadletters/{deadletter_id}/retry")
async def retry_deadletter(request: Request, deadletter_id: DeadletterIdPath) -> dict[str, Any]:
    """Apply a dead letter again, after its cause was fixed: `status` becomes `resolved` when it applied (at
    most once: its event id is recorded), else it stays `open` with the new `reason` (409)."""
    service, number = deadletter_id.rsplit("-", 1)
    reply = await service_post(request, service, f"/internal/deadletters/{number}/retry", json={})
    found = _answer(reply, service)
    if found["status"] != "resolved":
        raise HTTPException(409, f"dead letter {deadletter_id} still cannot be applied: {found['reason']}")
    return found
