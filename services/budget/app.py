"""Budget service (Faust): thin adapter from `care.logged` to BudgetService, its gauges and internal views."""
from __future__ import annotations

import logging

from services.budget import books, metrics
from services.budget.service import SERVICE, BudgetService
from shared import topics
from shared.events import CareLogged, CareVoided
from shared.streams import decode_events, in_batches, make_runtime

log = logging.getLogger("zorgpot.budget")

rt = make_runtime(SERVICE, books.metadata, upgrade=books.upgrade)
app = rt.app
service = BudgetService(rt.engine, rt.registry, rt.outbox, rt.relay.wake)
care_topic = app.topic(topics.CARE_LOGGED, value_serializer="raw", key_serializer="raw")
REFRESH_EVERY_S = 10.0  # gauges of every pot (the elapsed fraction moves with the date), alert sweep, lag
REGISTRY_WAIT_S = 5.0  # how long a view waits for the registry version the caller has seen


async def refresh_gauges(arrangement_ids: set[str] | None = None) -> None:
    # Read everything first, then publish with no await in between: /metrics is served on this event loop,
    # so a scrape sees a pot's figures and its reconciliation gauge together, never one without the other
    # (a freshly restarted worker used to show spent before its reconciliation series existed).
    pots = await service.pots(arrangement_ids=arrangement_ids)
    reconciliation = (await service.reconciliation(arrangement_ids))["pots"]
    for figures in pots:
        metrics.publish_pot(figures)
    metrics.publish_reconciliation(reconciliation)


gauges = metrics.GaugeRefresher(refresh_gauges)


@app.task
async def refresh_changed_gauges() -> None:
    await gauges.run()


@app.agent(care_topic, concurrency=1)  # concurrency=1: faust-streaming #606 (offsets can skip otherwise)
async def consume_care(stream) -> None:  # noqa: ANN001
    async def handle(values: list[bytes]) -> None:
        changed = await service.handle(decode_events(SERVICE, values, (CareLogged, CareVoided)))
        if changed:
            gauges.request(changed)

    await in_batches(rt, stream, handle)


def consumer_lag() -> dict[tuple[str, int], int]:
    """High watermark (from fetch responses) minus committed offset per assigned partition. Uses Faust's
    committed-offset map (internal); on the embedded broker see docs/budget.md for what the figure means."""
    consumer = app.consumer
    committed = getattr(consumer, "_committed_offset", {})
    lags = {}
    try:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp) if tp.topic == topics.CARE_LOGGED else None
            if highwater is not None:
                lags[(tp.topic, tp.partition)] = max(0, highwater - (committed.get(tp) or 0))
    except Exception as exc:  # noqa: BLE001 - the consumer is (re)starting: no figure this time
        log.debug("consumer lag unavailable: %s", exc)
    return lags


@app.timer(REFRESH_EVERY_S)
async def refresh_all() -> None:
    if not rt.books_ready.is_set():
        return
    try:
        changed = await service.sweep_alerts()
        if changed:
            log.info("alert sweep updated %d pot(s)", len(changed))
        await refresh_gauges()
        metrics.publish_lag(SERVICE, consumer_lag())
    except Exception:  # noqa: BLE001 - a failed refresh is retried on the next tick; never stop the timer
        log.exception("refreshing the budget gauges failed")


async def registry_caught_up(request) -> None:  # noqa: ANN001
    """Wait (briefly) until the registry copy has the version the gateway had: read-your-writes for pots."""
    version = request.query.get("registry_version", "0")
    if version.isdigit() and not await rt.registry.wait_for(int(version), timeout=REGISTRY_WAIT_S):
        log.warning("answering from registry version %d; the caller has seen %s", rt.registry.version, version)


@app.page("/internal/pots")
async def pots_view(web, request):  # noqa: ANN001
    await registry_caught_up(request)
    return web.json({"pots": await service.pots(school_id=request.query.get("school_id"))})


@app.page("/internal/pots/{arrangement_id}")
async def pot_view(web, request, arrangement_id: str):  # noqa: ANN001
    await registry_caught_up(request)
    figures = await service.pot(arrangement_id)
    if figures is None:
        return web.json({"detail": "unknown"}, status=404)
    return web.json(figures)


@app.page("/internal/reconciliation")
async def reconciliation_view(web, request):  # noqa: ANN001
    return web.json(await service.reconciliation())
