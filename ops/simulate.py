"""`python -m ops simulate`: stream realistic daily care registrations for the demo region through the
gateway, school day by school day from the start of the demo school year up to today, so the dashboard moves.

Bounded: it stops by itself after `--days` school days (default: every school day up to today), or on
Ctrl-C. `--speed` sets how many school days are sent per second. Registration ids and contents are derived
from (school, group, date), so running it again sends identical registrations, which the gateway answers
as duplicates: nothing is counted twice.

What a day looks like (a care worker's log, not an average): the group's planned minutes (40 h/week =
480 min a day) in three to five blocks of the ZiO task categories, weighted towards behaviour and social
skills; individual tasks (personal care, mental-health treatment, paramedical) name one or two pupils, group
tasks none (the cost then goes to every pupil enrolled that day). About one day in thirty the care worker is
absent (no registrations) and some days end early. School holidays are those of the demo's school calendar
(ops/demo.py, regio zuid), or for a school year without one an approximate southern-region calendar (ISO
weeks below).
"""
from __future__ import annotations

import argparse
import datetime as dt
import random
import signal
import time
from dataclasses import dataclass
from typing import Any, Iterator

import httpx

from ops.demo import DemoGroup, DemoSchool, region
from shared.schemas import Calendar
from shared.timeutil import today

# Autumn (43), Christmas (52, 1), carnival (8), May (18): approximate, south of the Netherlands.
HOLIDAY_WEEKS = frozenset({43, 52, 1, 8, 18})
# (task category, weight, pupils named): behaviour and social skills dominate in these groups.
TASKS = ((2, 30, 0), (1, 20, 0), (4, 12, 1), (3, 10, 2), (9, 12, 0), (10, 6, 0), (5, 5, 1), (11, 5, 0))
BLOCK_MINUTES = 15


@dataclass
class Totals:
    days: int = 0
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    minutes: int = 0


def school_days(start: dt.date, end: dt.date, calendar: Calendar | None = None) -> Iterator[dt.date]:
    day = start
    while day <= end:
        if calendar.is_school_day(day) if calendar else (day.weekday() < 5 and day.isocalendar()[1] not in HOLIDAY_WEEKS):
            yield day
        day += dt.timedelta(days=1)


def day_registrations(school: DemoSchool, group: DemoGroup, day: dt.date) -> list[dict[str, Any]]:
    """One group's registrations for one school day; deterministic for (school, group, day)."""
    rng = random.Random(f"{school.school_id}/{group.group_id}/{day.isoformat()}")
    if rng.random() < 1 / 30:
        return []  # the care worker is ill and there is no replacement (domain.md section 7)
    planned = group.minutes_per_day
    if rng.random() < 0.15:
        planned -= BLOCK_MINUTES * rng.randint(1, 6)  # left early, a meeting at school, ...
    blocks = rng.randint(3, 5)
    # Cut the day at random quarter-hours into `blocks` pieces.
    quarters = planned // BLOCK_MINUTES
    cuts = sorted(rng.sample(range(2, quarters - 1), blocks - 1)) if quarters > 2 * blocks else []
    edges = [0, *cuts, quarters]
    pieces = [(b - a) * BLOCK_MINUTES for a, b in zip(edges, edges[1:]) if b > a]
    pieces[-1] += planned - sum(pieces)
    enrolled = [ref for ref in group.pupils
                if dt.date.fromisoformat(school.pupils[ref]["enrolled_from"]) <= day]
    regs = []
    for n, minutes in enumerate(pieces):
        category, _, named = rng.choices(TASKS, weights=[t[1] for t in TASKS])[0]
        reg: dict[str, Any] = {
            "registration_id": f"sim-{school.school_id}-{group.group_id}-{day:%Y%m%d}-{n}",
            "school_id": school.school_id, "group_id": group.group_id, "date": day.isoformat(),
            "minutes": min(720, minutes), "care_worker": group.care_worker, "task_category": category,
            "funding": "jeugdwet",
        }
        if named and enrolled:
            reg["pupils"] = sorted(rng.sample(enrolled, min(named, len(enrolled))))
        regs.append(reg)
    return regs


def _post(api: httpx.Client, items: list[dict[str, Any]]) -> dict[str, Any]:
    for _ in range(60):
        try:
            reply = api.post("/hours/batch", json=items)
        except httpx.TransportError:
            time.sleep(1.0)
            continue
        if reply.status_code == 503:  # broker unavailable: nothing stored, so resending is safe
            time.sleep(float(reply.headers.get("Retry-After", "1")))
            continue
        reply.raise_for_status()
        return reply.json()
    raise RuntimeError("the gateway kept refusing; is the stack up?")


def simulate(base_url: str, token: str, speed: float = 4.0, max_days: int | None = None,
             first_year: int | None = None, quiet: bool = False) -> Totals:
    schools = region(first_year)
    start = min(g.care_from for s in schools for g in s.groups)
    last = min(today(), max(dt.date.fromisoformat(s.arrangement["end"]) for s in schools))
    totals = Totals()
    stopping = {"now": False}
    previous = signal.signal(signal.SIGINT, lambda *_: stopping.update(now=True))
    try:
        with httpx.Client(base_url=f"{base_url}/api/v1", timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as api:
            interval = 1.0 / speed if speed > 0 else 0.0
            next_at = time.monotonic()
            seeded = next((s.calendar for s in schools if s.calendar), None)
            calendar = Calendar.model_validate(seeded[1]) if seeded else None
            for day in school_days(start, last, calendar):
                if stopping["now"] or (max_days is not None and totals.days >= max_days):
                    break
                items = []
                for school in schools:
                    if not dt.date.fromisoformat(school.arrangement["start"]) <= day <= dt.date.fromisoformat(
                            school.arrangement["end"]):
                        continue
                    for group in school.groups:
                        if day >= group.care_from:
                            items.extend(day_registrations(school, group, day))
                if items:
                    result = _post(api, items)
                    totals.sent += len(items)
                    totals.accepted += result["accepted"]
                    totals.duplicates += result["duplicates"]
                    totals.rejected += len(result["rejected"])
                    totals.minutes += sum(i["minutes"] for i in items)
                totals.days += 1
                if not quiet:
                    print(f"{day.isoformat()}  {len(items):2d} registrations  "
                          f"(total {totals.sent}: {totals.accepted} new, {totals.duplicates} duplicates, "
                          f"{totals.rejected} rejected)", flush=True)
                next_at += interval
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
    finally:
        signal.signal(signal.SIGINT, previous)
    return totals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--speed", type=float, default=4.0, help="school days sent per second (default 4)")
    parser.add_argument("--days", type=int, default=None,
                        help="stop after this many school days (default: every school day up to today)")
    parser.add_argument("--url", default=None, help="gateway base URL (default: the local stack)")


def run(args: argparse.Namespace, token: str, default_url: str) -> int:
    url = args.url or default_url
    print(f"simulating the demo region through {url} at {args.speed:g} school days/s; Ctrl-C stops", flush=True)
    totals = simulate(url, token, speed=args.speed, max_days=args.days)
    print(f"done: {totals.days} school days, {totals.sent} registrations sent ({totals.accepted} new, "
          f"{totals.duplicates} duplicates, {totals.rejected} rejected), {totals.minutes / 60:.1f} hours of care")
    return 0 if totals.rejected == 0 else 1
