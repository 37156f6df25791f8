"""The settlement books asked for what a close needs: `domain.CareSummary`, summed by the database.

A close at region scale covers a million registrations; walking them in Python costs ~18 us each. The
sums a close needs do not depend on the single registration (see `domain.NewCare`), so the database adds
them up per (routing day, residences) and only the corrections (registrations dated in an already closed
period whose status changed since) come back one by one. Each line's sorted residences are stored in
their own column (`care_lines.residences`) when the line is written, so the database groups by a plain
string instead of taking JSON apart for every registration.

Every filter here mirrors a domain rule, named where it is used (`included_in_close`, `routing_day_of`);
tests/unit/test_settlement_queries.py checks that these sums equal `domain.summarise_care` on random books."""
from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

import orjson
from sqlalchemy import ColumnElement, Integer, String, and_, case, func, literal, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.settlement import books
from services.settlement.domain import CareLine, CareSummary, NewCare, exact_rate, routing_days
from shared.reference import ReferenceData as RegistryCopy

cl = books.care_lines


def _included(close_sequence: int, period_end: dt.date) -> ColumnElement[bool]:
    """domain.included_in_close as SQL: dated by the period end, known before the close, not voided before."""
    return and_(cl.c.date <= period_end, cl.c.known_since_close < close_sequence,
                or_(cl.c.voided.is_(False), cl.c.voided_since_close >= close_sequence))


def _care_line(row: Any, parsed: dict[bytes, tuple[tuple[str, str], ...]]) -> CareLine:
    """A care_lines row as the domain's CareLine; each distinct attribution list parsed once."""
    attributions = parsed.get(row.attributions)
    if attributions is None:
        attributions = parsed[row.attributions] = tuple(map(tuple, orjson.loads(row.attributions)))
    return CareLine(registration_id=row.registration_id, date=row.date, cost_cent_minutes=row.cost_cent_minutes,
                    minutes=row.minutes, attributions=attributions, attributed_to=row.attributed_to,
                    voided=row.voided, known_since_close=row.known_since_close,
                    voided_since_close=row.voided_since_close, funder=row.funder)


LINE_COLUMNS = (cl.c.registration_id, cl.c.date, cl.c.cost_cent_minutes, cl.c.minutes, cl.c.attributions,
                cl.c.attributed_to, cl.c.voided, cl.c.known_since_close, cl.c.voided_since_close, cl.c.funder)


async def care_lines(conn: AsyncConnection, arrangement_id: str) -> list[CareLine]:
    """Every care line of the arrangement (the invariant check reads them all)."""
    rows = (await conn.execute(select(*LINE_COLUMNS).where(cl.c.arrangement_id == arrangement_id))).all()
    parsed: dict[bytes, tuple[tuple[str, str], ...]] = {}
    return [_care_line(row, parsed) for row in rows]


async def care_summaries(conn: AsyncConnection, registry: RegistryCopy, arrangement_ids: Sequence[str],
                         closes_made: int, previous_end: dt.date | None, period_end: dt.date, per_residence: bool
                         ) -> dict[str, CareSummary]:
    """domain.summarise_care of each arrangement's stored lines, for closing the period ending `period_end`;
    several arrangements at once, in three queries rather than three per arrangement.

    The SQL depends on an arrangement's history only through how many closes it made and where the last one
    ended, so arrangements alike in that (the usual case when a region closes a quarter) share the queries;
    the caller groups them. `per_residence=False` leaves `new_care` empty: the period keys split the care
    total by their own basis and never look at who the care was for.
    """
    sequence = closes_made + 1
    mine = cl.c.arrangement_id.in_(list(arrangement_ids))
    # This close's own care: counted by this close, dated after the previous close's end.
    this_close = and_(mine, _included(sequence, period_end))
    if previous_end is not None:
        this_close = and_(this_close, cl.c.date > previous_end)
        reproduced = func.sum(case((_included(closes_made, previous_end), cl.c.cost_cent_minutes), else_=0))
    else:
        reproduced = literal(0, Integer)
    totals = {row[0]: row for row in (await conn.execute(select(
        cl.c.arrangement_id, func.coalesce(reproduced, 0), func.coalesce(func.max(cl.c.known_since_close), 0),
        func.coalesce(func.max(cl.c.voided_since_close), 0),
    ).where(mine).group_by(cl.c.arrangement_id))).all()}

    # domain.exact_rate: the rate where the cost divides by the minutes (NULL where it does not).
    rate = case((and_(cl.c.minutes > 0, cl.c.cost_cent_minutes % cl.c.minutes == 0),
                 cl.c.cost_cent_minutes // cl.c.minutes), else_=None)
    days = routing_days(registry.municipalities, previous_end, period_end)
    # domain.routing_day_of: the first routing day on or after the care date.
    routing = case(*[(cl.c.date <= day, index) for index, day in enumerate(days[:-1])],
                   else_=len(days) - 1) if len(days) > 1 and per_residence else literal(0, Integer)
    residences = cl.c.residences if per_residence else literal("", String)
    # A subquery, so that GROUP BY names plain columns (PostgreSQL would not match the bound parameters of
    # the CASE in the select list to those in a GROUP BY expression).
    # The municipalities' care only: care a framework routes to a funder comes back line by line below.
    per_line = (select(cl.c.arrangement_id, routing.label("routing"), residences.label("residences"),
                       rate.label("rate"), cl.c.cost_cent_minutes, cl.c.minutes)
                .where(this_close, cl.c.funder.is_(None)).subquery())
    rows = (await conn.execute(
        select(per_line.c.arrangement_id, per_line.c.routing, per_line.c.residences, per_line.c.rate,
               func.sum(per_line.c.cost_cent_minutes), func.sum(per_line.c.minutes))
        .group_by(per_line.c.arrangement_id, per_line.c.routing, per_line.c.residences, per_line.c.rate))).all()
    groups: dict[str, dict[tuple[dt.date, tuple[str, ...]], list[int]]] = {a: {} for a in arrangement_ids}
    rates: dict[str, set[int]] = {a: set() for a in arrangement_ids}
    new_cost = dict.fromkeys(arrangement_ids, 0)
    for arrangement_id, index, homes, line_rate, cost, minutes in rows:
        new_cost[arrangement_id] += int(cost)
        if line_rate is not None:
            rates[arrangement_id].add(int(line_rate))
        if per_residence:
            group = groups[arrangement_id].setdefault((days[index], tuple(homes.split(" "))), [0, 0])  # sorted
            group[0] += int(cost)
            group[1] += int(minutes)

    framework: dict[str, list[CareLine]] = {a: [] for a in arrangement_ids}
    parsed: dict[bytes, tuple[tuple[str, str], ...]] = {}
    for row in (await conn.execute(select(cl.c.arrangement_id, *LINE_COLUMNS)
                                   .where(this_close, cl.c.funder.is_not(None))
                                   .order_by(cl.c.arrangement_id, cl.c.date, cl.c.registration_id))).all():
        line = _care_line(row, parsed)
        framework[row.arrangement_id].append(line)
        rate_of = exact_rate(line.cost_cent_minutes, line.minutes)
        if rate_of is not None:
            rates[row.arrangement_id].add(rate_of)

    corrections: dict[str, list[CareLine]] = {a: [] for a in arrangement_ids}
    if previous_end is not None:
        # Dated in a closed period and counted differently by the previous close than by this one.
        before, now = _included(closes_made, previous_end), _included(sequence, period_end)
        rows = (await conn.execute(
            select(cl.c.arrangement_id, *LINE_COLUMNS)
            .where(mine, cl.c.date <= previous_end, or_(and_(before, not_(now)), and_(not_(before), now)))
            .order_by(cl.c.arrangement_id, cl.c.date, cl.c.registration_id))).all()
        for row in rows:
            corrections[row.arrangement_id].append(_care_line(row, parsed))

    summaries = {}
    for arrangement_id in arrangement_ids:
        total = totals.get(arrangement_id)
        summaries[arrangement_id] = CareSummary(
            reproduced_cost_cent_minutes=int(total[1]) if total else 0,
            new_cost_cent_minutes=new_cost[arrangement_id],
            new_rates=frozenset(rates[arrangement_id]),
            new_care=tuple(NewCare(day, homes, cost, minutes)
                           for (day, homes), (cost, minutes) in sorted(groups[arrangement_id].items())),
            corrections=tuple(corrections[arrangement_id]),
            latest_close_seen=max(int(total[2]), int(total[3])) if total else 0,
            framework_care=tuple(framework[arrangement_id]),
        )
    return summaries
