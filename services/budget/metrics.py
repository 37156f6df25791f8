"""Prometheus gauges of the budget service (design.md section 6), served by the runtime on /metrics.

Every pot gauge is labelled `arrangement` and `school`. A figure the domain leaves undefined (burn ratio and
forecast before the start, savings without an individual rate, non-resident share with nothing attributed)
has no series rather than a made-up 0. Help texts are repeated in docs/budget.md.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Iterable

from prometheus_client import Gauge

from shared.schemas import TASK_CATEGORIES

POT = ("arrangement", "school")

CAP = Gauge("zorgpot_pot_cap_cents", "Cap of the pot (the arrangement's maximum), euro cents", POT)
SPENT = Gauge("zorgpot_pot_spent_cents",
              "Cost of the accepted, non-voided care booked on the pot, rounded once half-up, euro cents", POT)
REMAINING = Gauge("zorgpot_pot_remaining_cents", "Cap minus spent, euro cents (negative when overspent)", POT)
FORECAST = Gauge("zorgpot_pot_forecast_cents",
                 "Forecast spending at the end of the arrangement: spent / elapsed fraction, euro cents", POT)
BURN = Gauge("zorgpot_pot_burn_ratio",
             "(spent / cap) / elapsed fraction: 1 is on the straight line to the cap, above 1 spends too fast", POT)
SAVINGS = Gauge("zorgpot_pot_savings_cents",
                "Individual equivalent (minutes x individual rate) minus spent, euro cents", POT)
NON_RESIDENT = Gauge("zorgpot_pot_non_resident_share",
                     "Share (0..1) of attributed care minutes for pupils living outside the host municipality", POT)
NON_RESIDENT_PUPILS = Gauge("zorgpot_pot_non_resident_pupil_share",
                            "Share (0..1) of the pupils with attributed care who lived outside the host municipality "
                            "on a care day", POT)
PLANNED_TO_DATE = Gauge("zorgpot_pot_planned_to_date_cents",
                        "Cost of the planned capacity up to today (plan minutes per school day x rate), euro cents", POT)
GROUP_DELIVERY = Gauge("zorgpot_pot_group_delivery_ratio",
                       "Care minutes delivered to a group / its planned minutes up to today", POT + ("group",))
MINUTES = Gauge("zorgpot_pot_minutes", "Care minutes booked on the pot", POT)
ELAPSED = Gauge("zorgpot_pot_elapsed_fraction", "Share (0..1) of the arrangement's days passed, today included", POT)
STATUS = Gauge("zorgpot_pot_status", "Pot status: 0 ok, 1 warning (lowest alert threshold reached), 2 exceeded", POT)
BY_CATEGORY = Gauge("zorgpot_pot_minutes_by_task_category",
                    "Care minutes booked on the pot, by task category (ZiO screening list 1..11)",
                    POT + ("task_category",))
RECONCILIATION = Gauge("zorgpot_reconciliation_cents",
                       "Spent according to the pot book minus the cost of the live registrations in the budget "
                       "ledger, euro cents rounded away from zero; must read 0", POT)
log = logging.getLogger("zorgpot.budget")
STATUS_CODES = {"ok": 0, "warning": 1, "exceeded": 2}
_OPTIONAL = ((FORECAST, "forecast_cents"), (BURN, "burn_ratio"), (SAVINGS, "savings_cents"),
             (NON_RESIDENT, "non_resident_share"), (NON_RESIDENT_PUPILS, "non_resident_pupil_share"))


def publish_pot(figures: dict[str, Any]) -> None:
    labels = (figures["arrangement_id"], figures["school_id"])
    CAP.labels(*labels).set(figures["cap_cents"])
    SPENT.labels(*labels).set(figures["spent_cents"])
    REMAINING.labels(*labels).set(figures["remaining_cents"])
    MINUTES.labels(*labels).set(figures["minutes"])
    PLANNED_TO_DATE.labels(*labels).set(figures["planned_to_date_cents"])
    for group in figures["by_group"]:
        if group["delivery_ratio"] is None:
            _remove(GROUP_DELIVERY, *labels, group["group_id"])
        else:
            GROUP_DELIVERY.labels(*labels, group["group_id"]).set(group["delivery_ratio"])
    ELAPSED.labels(*labels).set(figures["elapsed_fraction"])
    STATUS.labels(*labels).set(STATUS_CODES[figures["status"]])
    for gauge, key in _OPTIONAL:
        if figures[key] is None:
            _remove(gauge, *labels)
        else:
            gauge.labels(*labels).set(figures[key])
    by_category = figures["minutes_by_task_category"]
    for category in TASK_CATEGORIES:  # every category, 0 included: stable series for graphs
        BY_CATEGORY.labels(*labels, str(category)).set(by_category.get(str(category), 0))


def _remove(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass


def publish_reconciliation(rows: Iterable[dict[str, Any]]) -> None:
    for row in rows:
        RECONCILIATION.labels(row["arrangement_id"], row["school_id"]).set(row["difference_cents"])


class GaugeRefresher:
    """Refreshes the gauges of the pots a batch changed beside the batch loop rather than in it.

    Refreshing in the loop (pots + reconciliation reads, 7-70 ms at 1,000 registrations/s, more as a pot's
    ledger grows: the reconciliation sums it) delayed the next batch, and with it every pot's `GET /pots`
    figure. Requests coalesce: the pots changed while a refresh runs, or within `min_interval_s` of the last
    one, are refreshed together, so the gauges cost at most a few refreshes a second however fast batches
    come (a replay applies hundreds a second) and lag the books by at most about `min_interval_s`. A failed
    refresh is logged and its pots are tried again with the next request (the service's 10 s timer
    refreshes every pot as well)."""

    def __init__(self, refresh: Callable[[set[str]], Awaitable[None]], min_interval_s: float = 0.5) -> None:
        self._refresh = refresh
        self._min_interval_s = min_interval_s
        self._pending: set[str] = set()
        self._wake = asyncio.Event()

    def request(self, arrangement_ids: set[str]) -> None:
        self._pending |= arrangement_ids
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            arrangement_ids, self._pending = self._pending, set()
            try:
                await self._refresh(arrangement_ids)
            except Exception:  # noqa: BLE001 - keep refreshing; these pots are tried again next time
                self._pending |= arrangement_ids
                log.exception("refreshing the gauges of %d pot(s) failed", len(arrangement_ids))
            await asyncio.sleep(self._min_interval_s)
