"""Gateway routes: per-pupil norms (Nijmegen; design.md section 11, contract).

A norm is reference data: the coordinator PUTs its full state (every version), the gateway stores it and
publishes it on `registry.changes` (kind "norm") in one transaction. An arrangement with `norm_id` and
`settlement.key: "per_pupil_norm"` is charged the norm in force on each day per collective pupil below the
threshold (services/settlement/keys.py `ByNorm`); a new version applies from its date, never to closed periods.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request

from services.gateway.auth import Principal
from services.gateway.deps import IdPath, require_broker, require_coordinator
from shared.schemas import Norm

router = APIRouter(tags=["reference data"])


@router.put("/norms/{norm_id}", dependencies=[Depends(require_broker)])
async def put_norm(body: Norm, request: Request, norm_id: IdPath, _: Principal = Depends(require_coordinator)):
    """`{name?, versions: [{from, threshold_minutes_per_week, norm_minutes_per_week}]}`: the full new state."""
    starts = [v.valid_from for v in body.versions]
    if len(set(starts)) != len(starts):
        raise HTTPException(422, [{"loc": ["body", "versions"], "field": "versions",
                                   "msg": "two versions start on the same date; give each version its own from"}])
    doc = body.model_dump(mode="json", by_alias=True)
    version = await request.app.state.registry.put("norm", norm_id, doc)
    return {"norm_id": norm_id, **doc, "registry_version": version}


@router.get("/norms/{norm_id}")
async def get_norm(request: Request, norm_id: IdPath, _: Principal = Depends(require_coordinator)):
    return await request.app.state.registry.view("norm", norm_id, "norm_id")
