"""Rebuild a stream service's books from its topics: `python -m ops replay-from-start <service>`.

Each stream service records its consumer positions in its own database, with the effects (shared/kernel.py),
and the fact topics keep everything (retention.ms=-1). So rebuilding a service is: stop every worker of it,
empty its database, start it again. It migrates the empty database, finds no positions, reads its input topic
from offset 0 and deduplicates as it goes. No consumer-group surgery: Kafka's committed offsets are only a
lag hint the services never seek to. This command does the middle step, emptying the database, after checking
that no worker of the service answers on its port.

Which services can be rebuilt this way:

* budget: everything (pots, ledger, alert counters, payments, board cap transfers) follows from `care.logged`,
  `arrangement.payments` and `board.transfers`, but only while it has issued no final settlement and no report:
  those are decisions taken on HTTP calls (POST /arrangements/{id}/final-settlement, POST /reports); final
  settlements are published on `budget.final_settlements` but not consumed back, reports are not published. The
  command refuses when the books hold either.
* hours: everything follows from `hours.submitted`, judged again against the registry copy as it is now
  (the same verdicts as long as reference data was not changed retroactively). The regenerated care events
  carry the same deterministic event ids, so budget and settlement ignore them as duplicates.
* settlement: only while it has made no close. Its closes and statements are decisions taken on HTTP calls
  (POST /settlements/close), not events it consumes: rebuilding only its care lines would settle closed
  periods a second time. The command refuses when the books hold a close.

After restoring a service's database from a backup nothing needs resetting: the backup holds the positions
that belong to its books, and the service reads on from there (deduplicating what it already had).
"""
from __future__ import annotations

import asyncio

from sqlalchemy import MetaData, inspect, text

from ops.stack import port_open
from shared.db import make_engine
from shared.settings import Settings

REPLAYABLE = ("hours", "budget", "settlement")
NOT_REPLAYABLE = {
    "gateway": "it is the source of the reference data, tokens and submissions: restore it from a backup",
}


class ReplayRefused(RuntimeError):
    pass


async def _empty(url: str, service: str) -> list[str]:
    """Drop every table of the service's database (after checking settlement made no close and budget issued no
    final settlement)."""
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            if service == "settlement" and "closes" in names:
                closes = (await conn.execute(text("SELECT COUNT(*) FROM closes"))).scalar_one()
                if closes:
                    raise ReplayRefused(f"settlement has made {closes} close(s): its closes and statements are not "
                                        "in any topic it consumes; restore its database from a backup instead")
            if service == "budget" and "final_settlements" in names:
                issued = (await conn.execute(text("SELECT COUNT(*) FROM final_settlements"))).scalar_one()
                if issued:
                    raise ReplayRefused(f"budget has issued {issued} final settlement(s): they are not in any topic "
                                        "it consumes; restore its database from a backup instead")
            if service == "budget" and "reports" in names:
                issued = (await conn.execute(text("SELECT COUNT(*) FROM reports"))).scalar_one()
                if issued:
                    raise ReplayRefused(f"budget has issued {issued} report(s): they are not in any topic it "
                                        "consumes; restore its database from a backup instead")
            metadata = MetaData()
            await conn.run_sync(lambda sync: metadata.reflect(sync))
            await conn.run_sync(lambda sync: metadata.drop_all(sync))
        return sorted(names)
    finally:
        await engine.dispose()


def empty_books(settings: Settings, service: str) -> list[str]:
    """Empty the service's database so that it rebuilds from offset 0 when started; returns the dropped tables."""
    if service in NOT_REPLAYABLE:
        raise ReplayRefused(f"{service} cannot be rebuilt from topics: {NOT_REPLAYABLE[service]}")
    if service not in REPLAYABLE:
        raise ReplayRefused(f"unknown service {service!r}; one of {list(REPLAYABLE)}")
    if settings.embedded and port_open(settings.port_of(service)):
        raise ReplayRefused(f"a {service} worker answers on port {settings.port_of(service)}: stop every "
                            f"{service} worker first")
    return asyncio.run(_empty(settings.db_url(service), service))
