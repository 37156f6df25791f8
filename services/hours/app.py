"""Hours service (Faust): thin adapter from `hours.submitted` to HoursService, plus its internal view."""
from __future__ import annotations

from services.hours import books
from services.hours.service import SERVICE, HoursService
from shared import topics
from shared.events import HoursSubmitted, VoidRequested
from shared.streams import decode_events, in_batches, make_runtime

rt = make_runtime(SERVICE, books.metadata)
app = rt.app
service = HoursService(rt.engine, rt.registry, rt.outbox, rt.relay.wake)
submitted_topic = app.topic(topics.HOURS_SUBMITTED, value_serializer="raw", key_serializer="raw")


@app.agent(submitted_topic, concurrency=1)  # concurrency=1: faust-streaming #606 (offsets can skip otherwise)
async def process_submissions(stream) -> None:  # noqa: ANN001
    async def handle(values: list[bytes]) -> None:
        await service.handle(decode_events(SERVICE, values, (HoursSubmitted, VoidRequested)))

    await in_batches(rt, stream, handle)


@app.page("/internal/registrations/{registration_id}")
async def registration_view(web, request, registration_id: str):  # noqa: ANN001
    status = await service.status_of(registration_id)
    if status is None:
        return web.json({"detail": "unknown"}, status=404)
    return web.json(status)


@app.page("/internal/stats")
async def stats_view(web, request):  # noqa: ANN001
    return web.json(await service.stats())
