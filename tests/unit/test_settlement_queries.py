"""The database's sums for a close (services/settlement/queries.py) equal the domain's reference
`summarise_care` on the same lines, on a real SQLite database: random registrations, voids, late facts,
participation changes, several pupils of one residence; and a close from those sums issues the very same
statements as a close from the lines."""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import tempfile
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from services.settlement import books, queries
from services.settlement.domain import (ArrangementContext, CareLine, Close, close_period, close_summarised,
                                        participating_days,
                                        routing_day_of, routing_days, summarise_care)
from shared.migrations import migrate
from shared.registry import RegistryCopy
from shared.schemas import Arrangement, Municipality
from tests.unit.service_books import service_books

D = dt.date
HOST = "GM0984"
CODES = [HOST, "GM1507", "GM0944", "GM1894", "unknown"]
YEAR = D(2025, 1, 1)


def registry() -> RegistryCopy:
    copy = RegistryCopy()
    docs = [
        (HOST, {"name": "Venray"}),
        ("GM1507", {"name": "Horst", "participation": [{"from": "2025-01-01", "until": "2025-03-14"},
                                                        {"from": "2025-05-01"}]}),
        ("GM0944", {"name": "Mook", "participation": [{"from": "2025-02-10"}]}),
        ("GM1894", {"name": "Peel"}),
    ]
    for version, (code, doc) in enumerate(docs, start=1):
        copy.apply("municipality", code, doc, version)
    return copy


def context(key: str) -> ArrangementContext:
    copy = registry()
    arrangement = Arrangement.model_validate({
        "school_id": "focus", "group_ids": ["g1"], "start": "2025-01-01", "end": "2025-12-31",
        "rates": [{"from": "2025-01-01", "hourly_rate_cents": 6500}], "cap_cents": 10**9,
        "settlement": {"key": key, "non_participating": "bill", "frameworks": {"wlz": "WLZ-ZK"},
                       "contributions": [{"funder": "BEL", "amount_cents": 5000}],
                       **({"shares": {HOST: 2, "GM1507": 1}} if key == "fixed_shares" else {})}})
    return ArrangementContext(arrangement_id="arr", arrangement=arrangement, host_municipality=HOST,
                              municipalities=dict(copy.municipalities))


def history_of(period_ends: list[int]) -> list[Close]:
    closes, start = [], YEAR
    for sequence, end_day in enumerate(period_ends, start=1):
        end = YEAR + dt.timedelta(days=end_day)
        closes.append(Close(arrangement_id="arr", sequence=sequence, period_start=start, period_end=end,
                            issued_on=end, key="residence_hours", non_participating_policy="bill",
                            host_municipality=HOST, cumulative_cost_cent_minutes=0, cumulative_rounded_cost_cents=0,
                            education_applied_cents=0, cumulative_charged_cents=0, charged_cents=0))
        start = end + dt.timedelta(days=1)
    return closes


# Any day of the year, often one just before or after a participation change of registry().
care_day = st.one_of(st.integers(0, 364), st.sampled_from([39, 40, 72, 73, 119, 120]))


@st.composite
def books_(draw: st.DrawFn) -> tuple[list[CareLine], list[int], int]:
    ends = sorted(set(draw(st.lists(st.integers(10, 200), max_size=3))))
    closes_made = len(ends)
    period_end = draw(st.integers((ends[-1] if ends else 0) + 1, 364))
    lines = []
    for n in range(draw(st.integers(0, 40))):
        minutes = draw(st.integers(0, 300))
        rate = draw(st.sampled_from([6500, 6500, 7000]))
        cost = minutes * rate + draw(st.sampled_from([0, 0, 0, 7]))  # now and then not an exact rate
        known = draw(st.integers(0, closes_made))
        voided = draw(st.booleans())
        pupils = draw(st.lists(st.sampled_from(CODES), min_size=1, max_size=3))
        lines.append(CareLine(
            registration_id=f"r{n:03d}", date=YEAR + dt.timedelta(days=draw(care_day)),
            cost_cent_minutes=cost, minutes=minutes,
            attributions=tuple((f"p{i}", home) for i, home in enumerate(pupils)),
            attributed_to="listed", voided=voided, known_since_close=known,
            voided_since_close=draw(st.integers(known, closes_made)) if voided else None,
            funder=draw(st.sampled_from([None, None, None, "WLZ-ZK"]))))  # now and then Wlz care
    return lines, ends, period_end


async def compare_sums(engine: AsyncEngine, lines: list[CareLine], ends: list[int], period_end_day: int) -> None:
    """Store `lines` (and another arrangement's line) in `engine`'s empty care_lines; assert that the
    database's CareSummary equals the domain reference and that the lines read back unchanged."""
    # A twin arrangement with the same lines under other ids: asked together, each gets its own sums.
    twins = [dataclasses.replace(line, registration_id=f"t-{line.registration_id}") for line in lines]
    async with engine.begin() as conn:
        if lines:
            await conn.execute(books.care_lines.insert(), [{
                "registration_id": line.registration_id, "arrangement_id": arrangement_id, "school_id": "focus",
                "date": line.date, "minutes": line.minutes, "cost_cent_minutes": line.cost_cent_minutes,
                "attributions": orjson.dumps([list(a) for a in line.attributions]),
                "residences": books.residences_column(line.attributions),
                "attributed_to": line.attributed_to, "known_since_close": line.known_since_close,
                "voided": line.voided, "voided_since_close": line.voided_since_close, "funder": line.funder}
                for arrangement_id, copies in (("arr", lines), ("twin", twins)) for line in copies])
        # Another arrangement's lines must not leak into the sums.
        await conn.execute(books.care_lines.insert().values(
            registration_id="other", arrangement_id="arr2", school_id="focus", date=YEAR, minutes=60,
            cost_cent_minutes=60 * 6500, attributions=b'[["p0","GM1507"]]', residences="GM1507", attributed_to="listed",
            known_since_close=0, voided=False, voided_since_close=None))
    history = history_of(ends)
    period_end = YEAR + dt.timedelta(days=period_end_day)
    async with engine.connect() as conn:
        previous_end = history[-1].period_end if history else None
        from_db = (await queries.care_summaries(conn, registry(), ["arr"], len(history), previous_end, period_end,
                                                per_residence=True))["arr"]
        stored = await queries.care_lines(conn, "arr")
        together = await queries.care_summaries(conn, registry(), ["twin", "arr", "none"], len(history),
                                                previous_end, period_end, per_residence=True)
    reference = summarise_care(context("residence_hours"), lines, history, period_end)
    assert from_db == reference
    assert together == {"arr": reference, "twin": summarise_care(context("residence_hours"), twins, history, period_end),
                        "none": summarise_care(context("residence_hours"), [], history, period_end)}
    assert sorted(stored, key=lambda line: line.registration_id) == lines


async def _compare(lines: list[CareLine], ends: list[int], period_end_day: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine, _outbox = await service_books(Path(tmp), books.metadata, "settlement")
        try:
            await compare_sums(engine, lines, ends, period_end_day)
        finally:
            await engine.dispose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books_())
def test_database_sums_equal_the_domain_reference(case: tuple[list[CareLine], list[int], int]) -> None:
    asyncio.run(_compare(*case))


@settings(max_examples=80, deadline=None)
@given(books_(), st.sampled_from(["residence_hours", "host_pays", "fixed_shares"]))
def test_a_close_from_the_sums_issues_the_same_statements_as_from_the_lines(
        case: tuple[list[CareLine], list[int], int], key: str) -> None:
    """Only the first close (no history: the history above is not a real one) of random lines."""
    lines, _ends, period_end_day = case
    ctx = context(key)
    period_end = YEAR + dt.timedelta(days=period_end_day)
    first = [CareLine(line.registration_id, line.date, line.cost_cent_minutes, line.minutes, line.attributions,
                      line.attributed_to, funder=line.funder) for line in lines]
    by_lines = close_period(ctx, first, [], YEAR, period_end, period_end)
    by_sums = close_summarised(ctx, summarise_care(ctx, first, [], period_end), [], YEAR, period_end, period_end)
    assert orjson.dumps(by_sums.statements) == orjson.dumps(by_lines.statements)
    assert by_sums.close == by_lines.close


def test_routing_days_stand_for_every_day_with_the_same_participation() -> None:
    municipalities = {code: Municipality.model_validate(doc) for code, doc in [
        ("GM1507", {"name": "Horst", "participation": [{"from": "2025-01-01", "until": "2025-03-14"},
                                                        {"from": "2025-05-01"}]}),
        ("GM0944", {"name": "Mook", "participation": [{"from": "2025-02-10"}]}),
    ]}
    days = routing_days(municipalities, None, D(2025, 12, 31))
    assert days == (D(2024, 12, 31), D(2025, 2, 9), D(2025, 3, 14), D(2025, 4, 30), D(2025, 12, 31))
    assert routing_days(municipalities, D(2025, 3, 31), D(2025, 6, 30)) == (D(2025, 4, 30), D(2025, 6, 30))
    assert routing_days({}, None, D(2025, 6, 30)) == (D(2025, 6, 30),)
    for offset in range(365):
        day = YEAR + dt.timedelta(days=offset)
        stand_in = routing_day_of(day, days)
        assert stand_in >= day
        for municipality in municipalities.values():
            assert municipality.participates_on(stand_in) == municipality.participates_on(day)


def test_participating_days_count_each_day_once_even_where_periods_overlap() -> None:
    municipalities = {
        "GM1507": Municipality.model_validate({"name": "Horst", "participation": [
            {"from": "2025-01-01", "until": "2025-03-14"}, {"from": "2025-03-01", "until": "2025-03-31"},
            {"from": "2025-05-01"}]}),
        "GM1894": Municipality.model_validate({"name": "Peel"}),
    }
    for start, end in [(D(2025, 1, 1), D(2025, 12, 31)), (D(2025, 3, 10), D(2025, 5, 3)),
                       (D(2025, 4, 1), D(2025, 4, 30)), (D(2024, 12, 1), D(2025, 1, 1))]:
        for code in ("GM1507", "GM1894", "GM0000"):
            by_day = sum(1 for offset in range((end - start).days + 1)
                         if code in municipalities
                         and municipalities[code].participates_on(start + dt.timedelta(days=offset)))
            assert participating_days(municipalities, code, start, end) == by_day, (code, start, end)


async def test_upgrade_adds_and_fills_the_residences_of_books_made_before_they_existed(tmp_path: Path) -> None:
    engine, _outbox = await service_books(tmp_path, books.metadata, "settlement")
    try:
        async with engine.begin() as conn:  # the table as the previous version made it
            await conn.exec_driver_sql("ALTER TABLE care_lines DROP COLUMN residences")
            await conn.exec_driver_sql(
                "INSERT INTO care_lines (registration_id, arrangement_id, school_id, date, minutes, cost_cent_minutes, "
                "attributions, attributed_to, known_since_close, voided) VALUES "
                "('r1', 'arr', 'focus', '2025-03-03', 60, 390000, '[[\"p1\",\"GM1507\"],[\"p0\",\"GM0984\"]]', "
                "'listed', 0, 0)")
        await migrate(engine, "services/settlement/migrations")  # the baseline fills them in
        await migrate(engine, "services/settlement/migrations")  # idempotent
        async with engine.connect() as conn:
            residences = (await conn.exec_driver_sql("SELECT residences FROM care_lines")).scalars().all()
    finally:
        await engine.dispose()
    assert residences == ["GM0984 GM1507"]
