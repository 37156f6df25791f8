"""`python -m ops invariant`: check the settlement invariant (design.md section 5) on a running stack.

Per arrangement: the sum of all issued statements plus the cost not yet settled equals the cost of the
accepted, non-voided registrations minus the education contribution, to the cent. The settlement service
computes the figures (GET /internal/invariant); this command prints them and exits non-zero on any
difference. It also compares the settlement service's total cost with the hours service's accepted cost:
those two may differ for a moment while care events are in flight, so that check waits for them to agree.
"""
from __future__ import annotations

import time
from typing import Any

import httpx

from shared.money import format_euro
from shared.settings import Settings


def check(settings: Settings, settle_s: float = 30.0, out=print) -> int:  # noqa: ANN001
    """0 when every arrangement adds up, 1 when one does not, 2 when a service cannot be reached."""
    try:
        report = _get(settings, "settlement", "/internal/invariant")
    except httpx.HTTPError as exc:
        out(f"cannot reach the settlement service at {settings.url_of('settlement')}: {exc}")
        return 2
    failures = 0
    out(f"{'arrangement':<40} {'regs':>6} {'closes':>6} {'issued':>18} {'unsettled':>16} {'net cost':>18} diff")
    for item in report["arrangements"]:
        out(f"{item['arrangement_id']:<40} {item['registrations']:>6} {item['closes']:>6} "
            f"{format_euro(item['issued_cents']):>18} {format_euro(item['unsettled_cents']):>16} "
            f"{format_euro(item['net_cost_cents']):>18} {item['difference_cents']}")
        for problem in item["problems"]:
            out(f"    problem: {problem}")
        failures += not item["ok"]
    if not report["arrangements"]:
        out("no arrangements with care or statements yet")
    lag = _compare_with_hours(settings, settle_s)
    if lag:
        out(lag)
        failures += 1
    out("invariant holds" if failures == 0 else f"INVARIANT BROKEN: {failures} problem(s)")
    return 0 if failures == 0 else 1


def _compare_with_hours(settings: Settings, settle_s: float) -> str | None:
    """The hours service's accepted (non-voided) cost must equal what the settlement service knows."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            hours = _get(settings, "hours", "/internal/stats")
            settlement = _get(settings, "settlement", "/internal/invariant")
        except httpx.HTTPError as exc:
            return f"cannot compare with the hours service: {exc}"
        accepted = hours.get("accepted", {}).get("cost_cent_minutes", 0)
        known = sum(item["cost_cent_minutes"] for item in settlement["arrangements"])
        if accepted == known:
            return None
        if time.monotonic() > deadline:
            return (f"hours service accepted {accepted} cent-minutes of care, the settlement service knows "
                    f"{known}: {accepted - known} cent-minutes still not applied after {settle_s:.0f}s")
        time.sleep(0.5)


def _get(settings: Settings, service: str, path: str) -> Any:
    reply = httpx.get(f"{settings.url_of(service)}{path}", timeout=30)
    reply.raise_for_status()
    return reply.json()
