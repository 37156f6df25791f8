"""Budget service (Faust). Issue 2 placeholder: consumes care.logged and logs it; pots come in issue 3."""
from __future__ import annotations

import logging

from sqlalchemy import MetaData

from shared import topics
from shared.events import parse_event
from shared.streams import EVENTS_PROCESSED, in_batches, make_runtime

log = logging.getLogger("zorgpot.budget")
rt = make_runtime("budget", MetaData())
app = rt.app
care_topic = app.topic(topics.CARE_LOGGED, value_serializer="raw", key_serializer="raw")


@app.agent(care_topic, concurrency=1)
async def consume_care(stream) -> None:  # noqa: ANN001
    async def handle(values: list[bytes]) -> None:
        for raw in values:
            event = parse_event(raw)
            EVENTS_PROCESSED.labels("budget", event.type).inc()
        log.info("budget consumed %d care events", len(values))

    await in_batches(rt, stream, handle)
