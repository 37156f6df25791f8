"""Hours service (Faust worker): the kernel consumes `hours.submitted` into HoursService; its internal views."""
from __future__ import annotations

from services.hours import books
from services.hours.service import SERVICE, HoursService
from shared.streams import make_runtime

rt = make_runtime(SERVICE, books.metadata, migrations="services/hours/migrations")
app = rt.app
service = rt.serve(HoursService(rt.engine, rt.registry))


@app.page("/internal/registrations/{registration_id}")
async def registration_view(web, request, registration_id: str):  # noqa: ANN001
    status = await service.status_of(registration_id)
    if status is None:
        held = await rt.kernel.held(registration_id)
        if held is None:
            return web.json({"detail": "unknown"}, status=404)
        status = {"registration_id": registration_id, "status": "held", "deadletter_id": held["id"],
                  "reason": f"held: {held['reason']}"}
    return web.json(status)


@app.page("/internal/stats")
async def stats_view(web, request):  # noqa: ANN001
    return web.json(await service.stats())
