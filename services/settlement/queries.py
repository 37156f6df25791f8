"""The settlement books asked for what a close needs: `domain.CareSummary`, summed by the database.

A close at region scale covers a million registrations; walking them in Python costs ~18 us each. The
sums a close needs do not depend on the single registration (see `domain.NewCarePart`), so the database
adds them up and only the corrections (registrations dated in an already closed period whose status
changed since) come back one by one.

Every filter here mirrors a domain rule, named where it is used (`included_in_close`, `routing_day_of`);
tests/unit/test_settlement_queries.py checks that these sums equal `domain.summarise_care` on random books.
The attribution lists are JSON, stored as bytes; the only dialect-specific part is taking them apart
(SQLite `json_each`, PostgreSQL `jsonb_array_elements`).
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

import orjson
from sqlalchemy import (ColumnElement, Integer, Text, and_, case, cast, func, literal, literal_column, not_, or_,
                        select, true)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from services.settlement import books
from services.settlement.domain import CareLine, CareSummary, Close, NewCarePart, routing_days
from shared.registry import RegistryCopy

cl = books.care_lines


def _included(close_sequence: int, period_end: dt.date) -> ColumnElement[bool]:
    """domain.included_in_close as SQL: dated by the period end, known before the close, not voided before."""
    return and_(cl.c.date <= period_end, cl.c.known_since_close < close_sequence,
                or_(cl.c.voided.is_(False), cl.c.voided_since_close >= close_sequence))


def _attribution_parts(dialect: str) -> tuple[Any, ColumnElement[Any], ColumnElement[Any]]:
    """(table of one row per attributed pupil, its residence, the registration's pupil count)."""
    if dialect == "postgresql":
        doc = cast(func.convert_from(cl.c.attributions, literal_column("'UTF8'")), JSONB)
        parts = func.jsonb_array_elements(doc).table_valued("value").lateral("part")
        return parts, parts.c.value.op("->>")(literal_column("1")), func.jsonb_array_length(doc)
    doc = cast(cl.c.attributions, Text)
    parts = func.json_each(doc).table_valued("value").alias("part")
    return parts, func.json_extract(parts.c.value, "$[1]"), func.json_array_length(doc)


def _care_line(row: Any, parsed: dict[bytes, tuple[tuple[str, str], ...]]) -> CareLine:
    """A care_lines row as the domain's CareLine; each distinct attribution list parsed once."""
    attributions = parsed.get(row.attributions)
    if attributions is None:
        attributions = parsed[row.attributions] = tuple(map(tuple, orjson.loads(row.attributions)))
    return CareLine(registration_id=row.registration_id, date=row.date, cost_cent_minutes=row.cost_cent_minutes,
                    minutes=row.minutes, attributions=attributions, attributed_to=row.attributed_to,
                    voided=row.voided, known_since_close=row.known_since_close,
                    voided_since_close=row.voided_since_close)


LINE_COLUMNS = (cl.c.registration_id, cl.c.date, cl.c.cost_cent_minutes, cl.c.minutes, cl.c.attributions,
                cl.c.attributed_to, cl.c.voided, cl.c.known_since_close, cl.c.voided_since_close)


async def care_lines(conn: AsyncConnection, arrangement_id: str) -> list[CareLine]:
    """Every care line of the arrangement (the invariant check reads them all)."""
    rows = (await conn.execute(select(*LINE_COLUMNS).where(cl.c.arrangement_id == arrangement_id))).all()
    parsed: dict[bytes, tuple[tuple[str, str], ...]] = {}
    return [_care_line(row, parsed) for row in rows]


async def care_summary(conn: AsyncConnection, registry: RegistryCopy, arrangement_id: str, history: Sequence[Close],
                       period_end: dt.date, with_parts: bool) -> CareSummary:
    """domain.summarise_care of the arrangement's stored lines, for closing the period ending `period_end`.

    `with_parts=False` leaves the per-pupil parts out: the period keys split the care total by their own
    basis and never look at them.
    """
    closes_made = len(history)
    previous = history[-1] if history else None
    sequence = closes_made + 1
    mine = cl.c.arrangement_id == arrangement_id
    # This close's own care: counted by this close, dated after the previous close's end.
    new_care = and_(mine, _included(sequence, period_end))
    if previous is not None:
        new_care = and_(new_care, cl.c.date > previous.period_end)
        reproduced = func.sum(case((_included(previous.sequence, previous.period_end), cl.c.cost_cent_minutes),
                                   else_=0))
    else:
        reproduced = literal(0, Integer)
    new_cost = func.sum(case((new_care, cl.c.cost_cent_minutes), else_=0))
    totals = (await conn.execute(select(
        func.coalesce(reproduced, 0), func.coalesce(new_cost, 0),
        func.coalesce(func.max(cl.c.known_since_close), 0),
        func.coalesce(func.max(cl.c.voided_since_close), 0),
    ).where(mine))).one()

    # domain._exact_rate: the rate where the cost divides by the minutes.
    rate = cl.c.cost_cent_minutes // cl.c.minutes
    rates = frozenset((await conn.execute(select(rate).distinct().where(
        new_care, cl.c.minutes > 0, cl.c.cost_cent_minutes % cl.c.minutes == 0))).scalars())

    parts: tuple[NewCarePart, ...] = ()
    if with_parts:
        days = routing_days(registry.municipalities, previous.period_end if previous else None, period_end)
        # domain.routing_day_of: the first routing day on or after the care date.
        routing = case(*[(cl.c.date <= day, index) for index, day in enumerate(days[:-1])],
                       else_=len(days) - 1) if len(days) > 1 else literal(0, Integer)
        each, residence, pupils = _attribution_parts(conn.dialect.name)
        per_pupil = (select(routing.label("routing"), residence.label("residence"), pupils.label("pupils"),
                            cl.c.cost_cent_minutes, cl.c.minutes)
                     .select_from(cl).join(each, true()).where(new_care).subquery())
        rows = (await conn.execute(
            select(per_pupil.c.routing, per_pupil.c.residence, per_pupil.c.pupils,
                   func.sum(per_pupil.c.cost_cent_minutes), func.sum(per_pupil.c.minutes))
            .group_by(per_pupil.c.routing, per_pupil.c.residence, per_pupil.c.pupils))).all()
        parts = tuple(sorted(NewCarePart(days[index], home, count, int(cost), int(minutes))
                             for index, home, count, cost, minutes in rows))

    corrections: list[CareLine] = []
    if previous is not None:
        # Dated in a closed period and counted differently by the previous close than by this one.
        before, now = _included(previous.sequence, previous.period_end), _included(sequence, period_end)
        rows = (await conn.execute(
            select(*LINE_COLUMNS)
            .where(mine, cl.c.date <= previous.period_end, or_(and_(before, not_(now)), and_(not_(before), now)))
            .order_by(cl.c.date, cl.c.registration_id))).all()
        parsed: dict[bytes, tuple[tuple[str, str], ...]] = {}
        corrections = [_care_line(row, parsed) for row in rows]

    return CareSummary(
        reproduced_cost_cent_minutes=int(totals[0]),
        new_cost_cent_minutes=int(totals[1]),
        new_rates=frozenset(int(r) for r in rates),
        new_parts=parts,
        corrections=tuple(corrections),
        latest_close_seen=max(int(totals[2]), int(totals[3])),
    )
