"""Dependencies and helpers shared by the gateway's route modules."""
from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import Depends, HTTPException, Path, Request
from pydantic import AfterValidator

from services.gateway.auth import Principal, authenticate, forbid
from shared.identity import SLUG_ID
from shared.settings import Settings

IdPath = Annotated[str, Path(pattern=SLUG_ID.pattern, min_length=1, max_length=64)]
CodePath = Annotated[str, Path(pattern=r"^GM\d{4}$", description="CBS municipality code, e.g. GM0984")]
RETRY_AFTER_S = 5


def no_nul(value: str) -> str:
    """PostgreSQL text cannot hold U+0000: refuse it at the door (422) instead of failing the insert (500)."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (\\u0000)")
    return value


NoNulStr = Annotated[str, AfterValidator(no_nul)]


def require_coordinator(principal: Principal = Depends(authenticate)) -> Principal:
    if not principal.is_coordinator:
        raise forbid("only the coordinating municipality may do this")
    return principal


async def require_broker(request: Request) -> None:
    """Refuse writes while the broker is unreachable: 503 + Retry-After, nothing stored."""
    if not request.app.state.relay.broker_available():
        raise HTTPException(503, "the message broker is unavailable; nothing was stored, retry later",
                            headers={"Retry-After": str(RETRY_AFTER_S)})


async def service_get(request: Request, service: str, path: str, params: dict[str, Any] | None = None
                      ) -> httpx.Response:
    """GET a stream service's internal view; 503 + Retry-After when it cannot be reached."""
    settings: Settings = request.app.state.settings
    try:
        return await request.app.state.http.get(f"{settings.url_of(service)}{path}", params=params)
    except httpx.HTTPError as exc:
        raise HTTPException(503, f"the {service} service is not reachable; ask again shortly",
                            headers={"Retry-After": str(RETRY_AFTER_S)}) from exc


async def service_post(request: Request, service: str, path: str, json: Any) -> httpx.Response:
    settings: Settings = request.app.state.settings
    try:
        return await request.app.state.http.post(f"{settings.url_of(service)}{path}", json=json, timeout=60)
    except httpx.HTTPError as exc:
        raise HTTPException(503, f"the {service} service is not reachable; try again shortly",
                            headers={"Retry-After": str(RETRY_AFTER_S)}) from exc
