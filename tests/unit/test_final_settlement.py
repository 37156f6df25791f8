"""The final settlement (afrekening, design.md section 10): the pure document with hand-derived figures (worked
case (h), the cap cutting a year, rounding across a year end), the version decisions, the pot's
after_final_settlement figure, the CSV/PDF renderers, the service on a migrated SQLite database (one document
and one event per version, a repeat answers the stored one) and the replay command refusing to drop it."""
from __future__ import annotations

import asyncio
import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pypdf import PdfReader
from sqlalchemy import select

from ops.replay import ReplayRefused, _empty
from services.budget import books
from services.budget.domain import Payment, PotBook, pot_figures
from services.budget.final_settlement import (NotLatest, TooEarly, UnknownSupersedes, capped_running,
                                              check_may_issue, decide, final_settlement_document)
from services.budget.render import final_settlement_csv, final_settlement_pdf
from services.budget.service import BudgetService, UnknownArrangement
from shared import topics
from shared.events import parse_event
from shared.registry import RegistryCopy
from tests.unit.service_books import migrated_books, offline_kernel
from tests.unit.test_budget_domain import arrangement, book_of, logged

VENRAY_START, VENRAY_END = dt.date(2025, 8, 1), dt.date(2026, 7, 31)
AFTER_END = dt.date(2026, 11, 29)


def venray(**overrides: Any):  # noqa: ANN201
    data = dict(start=VENRAY_START, end=VENRAY_END, cap_cents=16_380_000, individual_rate_cents=9664,
                rates=[{"from": VENRAY_START, "hourly_rate_cents": 6500}])
    data.update(overrides)
    return arrangement(**data)


def weeks(group: str, first_monday: dt.date, count: int, skip: int = 0) -> list:
    """40 h of care a week for `count` weeks from `first_monday`, as five registrations of 480 minutes
    (Monday..Friday); the first `skip` of those weeks have no care worker, so no care."""
    out = []
    for week in range(skip, count):
        for day in range(5):
            date = first_monday + dt.timedelta(weeks=week, days=day)
            out.append(logged(f"{group}-{date.isoformat()}", 480, day=date))
    return out


def case_h_book_events() -> list:
    # Group 2: 17 school weeks of 2025 from Mon 1 Sep (the last one starts 22 Dec, ends Fri 26 Dec), the first
    # 3 without a care worker. Groups 1 and 2: 23 school weeks of 2026 each from Mon 5 Jan (the last 8 Jun).
    return [*weeks("g2", dt.date(2025, 9, 1), 17, skip=3), *weeks("g2", dt.date(2026, 1, 5), 23),
            *weeks("g1", dt.date(2026, 1, 5), 23)]


def case_h_book() -> PotBook:
    return book_of(*case_h_book_events())


PAYMENTS = [Payment("ven-2025", dt.date(2025, 9, 1), 4_420_000), Payment("ven-2026", dt.date(2026, 2, 1), 11_960_000)]


def test_case_h_delivered_paid_and_balance_per_budget_year() -> None:
    """Design.md case (h), EUR 65.00/h, cap EUR 163,800.00:
    2025: group 2, 17 - 3 = 14 weeks x 40 h = 560 h x 65.00 = 36,400.00; paid 44,200.00 (1 Sep 2025);
          balance 36,400.00 - 44,200.00 = -7,800.00.
    2026: groups 1 and 2, 2 x 23 = 46 weeks x 40 h = 1,840 h x 65.00 = 119,600.00; paid 119,600.00 (1 Feb 2026);
          balance 0.00.
    Total: 2,400 h, delivered 156,000.00, under the cap so all of it counts; paid 163,800.00; balance -7,800.00
    (the school refunds EUR 7,800.00)."""
    doc = final_settlement_document("arr1", venray(), case_h_book(), PAYMENTS, AFTER_END, school_name="Focus")
    assert doc["by_budget_year"] == [
        {"year": 2025, "minutes": 560 * 60, "delivered_cents": 3_640_000, "capped_cents": 3_640_000,
         "paid_cents": 4_420_000, "balance_cents": -780_000},
        {"year": 2026, "minutes": 1840 * 60, "delivered_cents": 11_960_000, "capped_cents": 11_960_000,
         "paid_cents": 11_960_000, "balance_cents": 0},
    ]
    assert (doc["delivered_cents"], doc["capped_cents"], doc["over_cap_cents"], doc["paid_cents"],
            doc["balance_cents"]) == (15_600_000, 15_600_000, 0, 16_380_000, -780_000)
    assert (doc["final_settlement_id"], doc["version"], doc["supersedes"], doc["issued_on"]) == \
        ("fs:arr1:1", 1, None, "2026-11-29")
    assert doc["minutes"] == 2400 * 60 and doc["registrations"] == (14 + 46) * 5
    assert doc["school_id"] == "focus" and doc["school_name"] == "Focus" and doc["cap_cents"] == 16_380_000


def test_the_cap_counts_years_in_date_order_and_cuts_the_year_that_crosses_it() -> None:
    """Three budget years, cap EUR 100,000.00, EUR 65.00/h, 40 h weeks = EUR 2,600.00 a week:
    2025: 14 weeks = 36,400.00, running 36,400.00, under the cap: counts in full.
    2026: 46 weeks = 119,600.00, running 156,000.00: crosses the cap, counts 100,000.00 - 36,400.00 = 63,600.00.
    2027: 10 weeks = 26,000.00, running 182,000.00: the cap was already reached, counts 0.00.
    Delivered 182,000.00, within the cap 100,000.00 (= 36,400 + 63,600 + 0), over the cap 82,000.00.
    Paid 44,200.00 (2025) + 50,000.00 (2026): balance 2025 -7,800.00, 2026 +13,600.00, 2027 0.00;
    total 100,000.00 - 94,200.00 = +5,800.00 = -7,800 + 13,600 (still to pay to the school)."""
    arr = venray(end=dt.date(2027, 7, 31), cap_cents=10_000_000)
    book = book_of(*case_h_book_events(), *weeks("g1", dt.date(2027, 1, 4), 10))
    payments = [Payment("a", dt.date(2025, 9, 1), 4_420_000), Payment("b", dt.date(2026, 2, 1), 5_000_000)]
    doc = final_settlement_document("arr1", arr, book, payments, AFTER_END.replace(year=2027))
    assert [(r["year"], r["delivered_cents"], r["capped_cents"], r["paid_cents"], r["balance_cents"])
            for r in doc["by_budget_year"]] == [
        (2025, 3_640_000, 3_640_000, 4_420_000, -780_000),
        (2026, 11_960_000, 6_360_000, 5_000_000, 1_360_000),
        (2027, 2_600_000, 0, 0, 0),
    ]
    assert (doc["delivered_cents"], doc["capped_cents"], doc["over_cap_cents"], doc["paid_cents"],
            doc["balance_cents"]) == (18_200_000, 10_000_000, 8_200_000, 9_420_000, 580_000)


def test_years_by_running_total_and_a_cap_inside_a_rounded_cent() -> None:
    """One minute at EUR 65.00/h is 108.33.. cents. One minute on 31 Dec 2025, one on 1 Jan 2026: delivered
    R(216.67) = 217 cents; 2025 R(108.33) = 108, 2026 217 - 108 = 109. Cap 150 cents: 2025 108 in full,
    2026 150 - 108 = 42; over the cap 67."""
    arr = venray(cap_cents=150)
    book = book_of(logged("a", 1, day=dt.date(2025, 12, 31)), logged("b", 1, day=dt.date(2026, 1, 1)))
    doc = final_settlement_document("arr1", arr, book, [], AFTER_END)
    assert [(r["year"], r["delivered_cents"], r["capped_cents"]) for r in doc["by_budget_year"]] == \
        [(2025, 108, 108), (2026, 109, 42)]
    assert (doc["delivered_cents"], doc["capped_cents"], doc["over_cap_cents"], doc["balance_cents"]) == \
        (217, 150, 67, 150)


def test_capped_running_edges() -> None:
    assert capped_running({2025: 500, 2026: 500}, 1000) == {2025: 500, 2026: 500}  # exactly the cap
    assert capped_running({2025: 1200, 2026: 300}, 1000) == {2025: 1000, 2026: 0}  # crossed in the first year
    assert capped_running({2025: 0, 2026: 0}, 0) == {2025: 0, 2026: 0}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(1, 720)), max_size=30),
       st.lists(st.tuples(st.integers(0, 1000), st.integers(1, 5_000_000)), max_size=4),
       st.integers(0, 2_000_000))
def test_years_always_add_up_to_the_totals(care, paid, cap) -> None:
    start = dt.date(2025, 1, 1)
    arr = venray(start=start, end=dt.date(2027, 12, 31), cap_cents=cap,
                 rates=[{"from": start, "hourly_rate_cents": 6500}])
    book = book_of(*(logged(f"r{i}", minutes, day=start + dt.timedelta(days=d)) for i, (d, minutes) in enumerate(care)))
    payments = [Payment(f"p{i}", start + dt.timedelta(days=d), cents) for i, (d, cents) in enumerate(paid)]
    doc = final_settlement_document("arr1", arr, book, payments, dt.date(2028, 1, 1))
    rows = doc["by_budget_year"]
    assert [r["year"] for r in rows] == [2025, 2026, 2027]
    for key in ("delivered_cents", "capped_cents", "paid_cents", "balance_cents", "minutes"):
        assert sum(r[key] for r in rows) == doc[key]
    assert doc["delivered_cents"] == book.spent_cents
    assert doc["capped_cents"] == min(doc["delivered_cents"], cap) and all(r["capped_cents"] >= 0 for r in rows)
    assert doc["balance_cents"] == doc["capped_cents"] - doc["paid_cents"]


def test_not_before_the_end_date_has_passed() -> None:
    arr = venray()
    with pytest.raises(TooEarly, match="2026-08-01"):
        check_may_issue(arr, VENRAY_END)  # the end day itself is still part of the arrangement
    check_may_issue(arr, VENRAY_END + dt.timedelta(days=1))


def test_versions_repeat_supersede_and_conflicts() -> None:
    v1 = {"final_settlement_id": "fs:a:1", "version": 1, "supersedes": None}
    v2 = {"final_settlement_id": "fs:a:2", "version": 2, "supersedes": "fs:a:1"}
    assert decide([], None) == decide([], None) and decide([], None).existing is None
    assert decide([], None).version == 1
    assert decide([v1], None).existing == v1  # a plain repeat: the issued one, whatever arrived since
    assert decide([v2, v1], None).existing == v2  # the latest
    d = decide([v1], "fs:a:1")
    assert (d.existing, d.version, d.supersedes) == (None, 2, "fs:a:1")
    assert decide([v1, v2], "fs:a:1").existing == v2  # that correction repeated: the same answer
    v3 = {"final_settlement_id": "fs:a:3", "version": 3, "supersedes": "fs:a:2"}
    with pytest.raises(NotLatest, match="fs:a:3"):
        decide([v1, v2, v3], "fs:a:1")  # stale: v2 and v3 came since
    with pytest.raises(UnknownSupersedes):
        decide([v1], "fs:other:1")
    with pytest.raises(UnknownSupersedes):
        decide([], "fs:a:1")


def test_pot_shows_what_changed_after_the_final_settlement() -> None:
    """Settled EUR 156,000.00; then one late registration of 60 minutes at EUR 65.00/h: spent 156,065.00, after the
    final settlement 65.00. Without a final settlement: 0 and no id."""
    arr, book = venray(), case_h_book()
    doc = final_settlement_document("arr1", arr, book, PAYMENTS, AFTER_END)
    assert pot_figures(arr, book, AFTER_END, PAYMENTS)["after_final_settlement_cents"] == 0
    assert pot_figures(arr, book, AFTER_END, PAYMENTS)["final_settlement_id"] is None
    late = book_of(*case_h_book_events(), logged("late", 60, day=dt.date(2026, 7, 1)))
    fig = pot_figures(arr, late, AFTER_END, PAYMENTS, final_settlement=doc)
    assert fig["spent_cents"] == 15_606_500
    assert (fig["final_settlement_id"], fig["after_final_settlement_cents"]) == ("fs:arr1:1", 6_500)
    assert fig["after_final_settlement_display"] == "EUR 65.00"


def test_csv_rows_per_year_and_total_and_the_pdf_letter() -> None:
    doc = final_settlement_document("arr1", venray(), case_h_book(), PAYMENTS, AFTER_END, school_name="SBO Focus")
    lines = final_settlement_csv(doc, lang="en").splitlines()
    assert lines[0].split(",")[6:] == ["year", "hours", "delivered", "capped", "paid", "balance"]
    assert [line.split(",")[6:] for line in lines[1:]] == [
        ["2025", "560.00", "36400.00", "36400.00", "44200.00", "-7800.00"],
        ["2026", "1840.00", "119600.00", "119600.00", "119600.00", "0.00"],
        ["total", "2400.00", "156000.00", "156000.00", "163800.00", "-7800.00"],
    ]
    dutch = final_settlement_csv(doc, dutch=True).splitlines()  # Dutch by default: header and `total` too
    assert dutch[0].split(";")[6:] == ["jaar", "uren", "geleverd", "binnen_plafond", "betaald", "saldo"]
    assert dutch[-1].endswith(";totaal;2400,00;156000,00;156000,00;163800,00;-7800,00")
    reader = PdfReader(io.BytesIO(final_settlement_pdf(doc, "Regio Noord-Limburg")))
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    assert "€ -7.800,00" in text and "Saldo terug te betalen door de school" in text and "€ 156.000,00" in text
    assert "SBO Focus" in text and "fs:arr1:1" in text and "Eindafrekening" in text and "Begrotingsjaar" in text
    english = PdfReader(io.BytesIO(final_settlement_pdf(doc, "Regio Noord-Limburg", lang="en"))).pages[0]
    text = english.extract_text()
    assert "-€7,800.00" in text and "refunded by the school" in text and "€156,000.00" in text


# --- the service on its migrated database ---------------------------------------------------------------------

def registry() -> RegistryCopy:
    copy = RegistryCopy()
    docs = [("municipality", "GM0984", {"name": "Venray"}),
            ("school", "focus", {"name": "Focus", "municipality": "GM0984"}),
            ("group", "focus/g1", {"name": "g1"}),
            ("arrangement", "arr1", {"school_id": "focus", "group_ids": ["g1"], "start": "2025-08-01",
                                     "end": "2026-07-31", "rates": [{"from": "2025-08-01", "hourly_rate_cents": 6500}],
                                     "cap_cents": 16_380_000, "settlement": {"key": "residence_hours"}})]
    for version, (kind, key, doc) in enumerate(docs, start=1):
        copy.apply(kind, key, doc, version)
    return copy


async def test_service_issues_once_per_version_with_its_event(tmp_path: Path) -> None:
    engine = await migrated_books(tmp_path, "budget")
    clock = {"today": VENRAY_END}
    woken: list[int] = []
    svc = BudgetService(engine, registry(), None, lambda: woken.append(1), clock=lambda: clock["today"])
    kernel = offline_kernel(svc, engine, books.metadata)
    svc.outbox = kernel.outbox
    try:
        # 2 x 480 minutes on 2025-09-01 at EUR 65.00/h = 16 h = EUR 1,040.00.
        await kernel.apply_events(topics.CARE_LOGGED, [logged("a", 480, day=dt.date(2025, 9, 1)),
                                                       logged("b", 480, day=dt.date(2025, 9, 2))])
        with pytest.raises(TooEarly):
            await svc.issue_final_settlement("arr1")
        with pytest.raises(UnknownArrangement):
            await svc.issue_final_settlement("nope")
        clock["today"] = AFTER_END
        first, created = await svc.issue_final_settlement("arr1")
        assert created and first["delivered_cents"] == 104_000 and first["balance_cents"] == 104_000
        await kernel.apply_events(topics.CARE_LOGGED, [logged("late", 60, day=dt.date(2026, 7, 1))])
        again, created = await svc.issue_final_settlement("arr1")
        assert not created and again == first  # later care does not change an issued document
        pot = await svc.pot("arr1")
        assert (pot["final_settlement_id"], pot["after_final_settlement_cents"]) == ("fs:arr1:1", 6_500)
        second, created = await svc.issue_final_settlement("arr1", supersedes="fs:arr1:1")
        assert created and (second["version"], second["supersedes"], second["delivered_cents"]) == \
            (2, "fs:arr1:1", 110_500)
        assert (await svc.issue_final_settlement("arr1", supersedes="fs:arr1:1")) == (second, False)
        assert (await svc.pot("arr1"))["after_final_settlement_cents"] == 0
        assert [d["version"] for d in await svc.final_settlements("arr1")] == [1, 2]
        assert await svc.final_settlement("fs:arr1:1") == first and await svc.final_settlement("fs:x:1") is None
        outbox = kernel.outbox
        async with engine.connect() as conn:
            rows = (await conn.execute(select(outbox.c.topic, outbox.c.key, outbox.c.value)
                                       .where(outbox.c.topic == topics.FINAL_SETTLEMENTS).order_by(outbox.c.seq))).all()
        events = [parse_event(r.value) for r in rows]
        assert [(e.event_id, e.balance_cents, e.document) for e in events] == \
            [("final-settlement:fs:arr1:1", 104_000, first), ("final-settlement:fs:arr1:2", 110_500, second)]
        assert all(r.key == b"arr1" for r in rows) and woken
    finally:
        await engine.dispose()

    # The issued documents are decisions, not in any topic budget consumes: the replay command keeps them.
    with pytest.raises(ReplayRefused, match="1 final settlement|2 final settlement"):
        await _empty(f"sqlite+aiosqlite:///{tmp_path / 'budget.db'}", "budget")
    engine = await migrated_books(tmp_path, "budget")
    try:
        async with engine.connect() as conn:
            assert len((await conn.execute(select(books.final_settlements))).all()) == 2
    finally:
        await engine.dispose()


def test_replay_still_empties_budget_without_final_settlements(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        engine = await migrated_books(tmp_path, "budget")
        await engine.dispose()
        return await _empty(f"sqlite+aiosqlite:///{tmp_path / 'budget.db'}", "budget")

    assert "final_settlements" in asyncio.run(scenario())
