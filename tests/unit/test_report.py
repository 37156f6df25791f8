"""Accountability reports (design.md section 12): the pure document with hand-derived figures, the request rules
(periods, "the same request", not ended, outside the term), the CSV, the PDF (text and a chart rendered to an
image), the service on a migrated SQLite database (stored once, a repeat answers it) and the replay refusal."""
from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any

import orjson
import pypdfium2 as pdfium
import pytest
from pypdf import PdfReader

from ops.replay import ReplayRefused, _empty
from services.budget import books
from services.budget.domain import LoggedFacts, Payment
from services.budget.report import (Invalid, NotEnded, PotInput, ReportIdTaken, answer_for, check_may_issue,
                                    report_document, report_id_for, resolve_request)
from services.budget.report_render import report_csv, report_pdf
from services.budget.service import BudgetService, UnknownArrangement
from shared.registry import RegistryCopy
from shared.schemas import Arrangement
from tests.unit.service_books import migrated_books

VENRAY, HORST = "GM0984", "GM1507"
START, END = dt.date(2026, 1, 1), dt.date(2026, 12, 31)


def arrangement(**overrides: Any) -> Arrangement:
    data: dict[str, Any] = {
        "school_id": "focus", "group_ids": ["g1"], "start": START, "end": END,
        "rates": [{"from": START, "hourly_rate_cents": 6000}],  # EUR 60.00/h = 100 cents a minute
        "individual_rate_cents": 9000,  # EUR 90.00/h = 150 cents a minute
        "cap_cents": 1_000_000,
        "installments": [{"due": "2026-01-15", "amount_cents": 500_000}, {"due": "2026-07-01", "amount_cents": 500_000}],
        "plan": [{"group_id": "g1", "from": "2026-01-01", "minutes_per_week": 600}],  # 10 h a week
        "settlement": {"key": "residence_hours"},
    }
    data.update(overrides)
    return Arrangement.model_validate(data)


def fact(rid: str, day: dt.date, minutes: int, pupils: dict[str, str], worker: str, rate: int = 6000) -> LoggedFacts:
    return LoggedFacts(registration_id=rid, arrangement_id="arr1", date=day, minutes=minutes,
                       cost_cent_minutes=minutes * rate, task_category=2, funding="jeugdwet",
                       residences=tuple(pupils.values()), host_municipality=VENRAY, group_id="g1",
                       pupils=tuple(pupils), care_worker=worker)


def q1_facts() -> list[LoggedFacts]:
    """Four weeks from Monday 5 January 2026: Monday 240 min for p1 (Venray) and p2 (Horst) by anna, Wednesday
    120 min for p1 by bert: 360 min a week; plus Monday 6 April (Q2) 60 min for p3 (Venray) by anna."""
    out = []
    for week in range(4):
        monday = dt.date(2026, 1, 5) + dt.timedelta(weeks=week)
        out.append(fact(f"mon{week}", monday, 240, {"p1": VENRAY, "p2": HORST}, "anna"))
        out.append(fact(f"wed{week}", monday + dt.timedelta(days=2), 120, {"p1": VENRAY}, "bert"))
    out.append(fact("apr", dt.date(2026, 4, 6), 60, {"p3": VENRAY}, "anna"))
    return out


def pot(arr: Arrangement | None = None, facts: list[LoggedFacts] | None = None) -> PotInput:
    return PotInput("arr1", arr or arrangement(), q1_facts() if facts is None else facts,
                    [Payment("pay1", dt.date(2026, 2, 1), 500_000)], None, "SO Spectrum")


def issue(kind: str, today: dt.date = dt.date(2027, 1, 5), **period: Any) -> dict[str, Any]:
    arrs = {"arr1": arrangement()}
    request = resolve_request(kind, ["arr1"], arrs, **period)
    check_may_issue(request, arrs, today)
    return report_document(report_id_for(request), request, [pot()], today)


def test_quarterly_figures_by_hand() -> None:
    doc = issue("quarterly", period="2026-Q1")
    assert (doc["period_start"], doc["period_end"], doc["period"]) == ("2026-01-01", "2026-03-31", "2026-Q1")
    s = doc["arrangements"][0]
    # 8 registrations in Q1, 4 x (240 + 120) = 1,440 minutes at 100 cents a minute = EUR 1,440.00; the
    # individual equivalent 1,440 x 150 = EUR 2,160.00, savings EUR 720.00.
    assert (s["registrations"], s["minutes"], s["spent_cents"]) == (8, 1440, 144_000)
    assert (s["individual_equivalent_cents"], s["savings_cents"]) == (216_000, 72_000)
    # Planned: the installment due 15 January (EUR 5,000.00); paid: the payment of 1 February. Planned capacity:
    # Q1 2026 has 22 + 20 + 22 = 64 weekdays (no calendar), 600 / 5 = 120 min each: 7,680 min = EUR 7,680.00.
    assert (s["planned_cents"], s["paid_cents"], s["planned_capacity_cents"]) == (500_000, 500_000, 768_000)
    assert s["by_group"] == [{"group_id": "g1", "minutes": 1440, "spent_cents": 144_000, "registrations": 8,
                              "planned_minutes": 7680, "planned_cents": 768_000, "delivery_ratio": 1440 / 7680,
                              "care_workers": 2}]
    # p1 on 8 days, p2 on 4: both on 3 or more days. Non-resident minutes: half of each Monday's 240 (p2 lives
    # in Horst): 4 x 120 = 480 of 1,440 attributed = 1/3; pupils: p2 of p1, p2 = 1/2.
    assert (s["pupils_reached"], s["pupils_3_or_more_days"], s["care_workers"]) == (2, 2, 2)
    assert (s["non_resident_minutes"], s["attributed_minutes"]) == (480, 1440)
    assert s["non_resident_share"] == pytest.approx(1 / 3) and s["non_resident_pupil_share"] == 0.5
    # Weeks W01 (Thu 1 - Sun 4 January) .. W14 (Mon 30 - Tue 31 March): 14 rows; the 4 weeks with care have
    # 360 of 600 planned (>= half), the other 10 (W01 plans 2 days: 240) are capacity gaps.
    assert [w["week"] for w in s["by_week"]][:2] == ["2026-W01", "2026-W02"] and len(s["by_week"]) == 14
    assert s["by_week"][0]["planned_minutes"] == 240 and s["by_week"][1]["minutes_by_group"] == {"g1": 360}
    assert sum(w["spent_cents"] for w in s["by_week"]) == 144_000
    assert len(s["capacity_gaps"]) == 10 and s["capacity_gaps"][0] == {
        "group_id": "g1", "week": "2026-W01", "planned_minutes": 240, "delivered_minutes": 0}
    assert s["by_task_category"] == [{"task_category": 2, "minutes": 1440, "spent_cents": 144_000}]
    assert s["by_funding"] == [{"funding": "jeugdwet", "minutes": 1440, "spent_cents": 144_000}]
    assert s["by_budget_year"] == [{"year": 2026, "from": "2026-01-01", "until": "2026-03-31", "planned_cents": 500_000,
                                    "planned_capacity_cents": 768_000, "spent_cents": 144_000, "paid_cents": 500_000,
                                    "minutes": 1440, "individual_equivalent_cents": 216_000, "savings_cents": 72_000}]
    assert doc["totals"]["spent_cents"] == 144_000 and doc["totals"]["pupils_reached"] == 2


def test_quarters_add_up_to_the_year_and_the_final_report() -> None:
    quarters = [issue("quarterly", period=f"2026-Q{q}") for q in range(1, 5)]
    annual = issue("annual", period="2026")
    final = issue("final")
    # The year adds the April hour (60 min, EUR 60.00) and the 1 July installment; p3 reached once.
    assert annual["totals"]["spent_cents"] == 150_000 and annual["totals"]["minutes"] == 1500
    assert annual["totals"]["planned_cents"] == 1_000_000 and annual["totals"]["paid_cents"] == 500_000
    assert annual["arrangements"][0]["pupils_reached"] == 3
    assert annual["arrangements"][0]["pupils_3_or_more_days"] == 2
    for figure in ("spent_cents", "minutes", "planned_cents", "paid_cents", "planned_capacity_cents", "savings_cents"):
        assert sum(q["totals"][figure] for q in quarters) == annual["totals"][figure], figure
    assert final["period"] == "2026-01-01/2026-12-31"
    assert final["totals"] == annual["totals"] and final["arrangements"] == annual["arrangements"]


def test_running_total_rounding_across_quarters() -> None:
    """Three minutes at EUR 65.00/h (108 1/3 cents each): January, April, April. Q1 = round(108.33) = 108;
    Q2 = round(325) - 108 = 217; the year round(325) = 325 = 108 + 217 (each rounded alone: 108 + 108 + 108)."""
    arr = arrangement(rates=[{"from": START, "hourly_rate_cents": 6500}])
    facts = [fact("a", dt.date(2026, 1, 5), 1, {}, "x", 6500), fact("b", dt.date(2026, 4, 6), 1, {}, "x", 6500),
             fact("c", dt.date(2026, 4, 7), 1, {}, "x", 6500)]
    spent = []
    for period in ("2026-Q1", "2026-Q2", "2026"):
        request = resolve_request("annual" if period == "2026" else "quarterly", ["arr1"], {"arr1": arr},
                                  period=period)
        spent.append(report_document("r", request, [pot(arr, facts)], END)["totals"]["spent_cents"])
    assert spent == [108, 217, 325]


def test_request_rules() -> None:
    arrs = {"arr1": arrangement()}
    by_label = resolve_request("quarterly", ["arr1"], arrs, period="2026-Q1")
    by_dates = resolve_request("quarterly", ["arr1", "arr1"], arrs, period_start=dt.date(2026, 1, 1),
                               period_end=dt.date(2026, 3, 31))
    assert by_label == by_dates and report_id_for(by_label) == report_id_for(by_dates)
    assert report_id_for(by_label).startswith("rep-quarterly-2026-Q1-")
    with pytest.raises(Invalid) as bad:
        resolve_request("quarterly", ["arr1"], arrs, period_start=dt.date(2026, 1, 1), period_end=dt.date(2026, 2, 28))
    assert bad.value.field == "period_start"
    for kind, period, field in (("quarterly", "2026-Q5", "period"), ("annual", "2026-Q1", "period"),
                                ("final", "2026", "period"), ("monthly", "2026", "kind")):
        with pytest.raises(Invalid) as bad:
            resolve_request(kind, ["arr1"], arrs, period=period)
        assert bad.value.field == field
    with pytest.raises(Invalid) as bad:
        resolve_request("annual", [], arrs, period="2026")
    assert bad.value.field == "arrangement_ids"
    # Outside the term: 422 naming the period; not ended yet: 409.
    with pytest.raises(Invalid) as bad:
        check_may_issue(resolve_request("quarterly", ["arr1"], arrs, period="2025-Q4"), arrs, dt.date(2027, 1, 1))
    assert bad.value.field == "period"
    with pytest.raises(NotEnded):
        check_may_issue(by_label, arrs, dt.date(2026, 3, 31))
    check_may_issue(by_label, arrs, dt.date(2026, 4, 1))
    # The same id for another request: 409; for the same request: the stored document.
    doc = report_document("mine", by_label, [pot()], dt.date(2026, 4, 1))
    assert answer_for(doc, by_dates, "mine") is doc and answer_for(None, by_label, "mine") is None
    with pytest.raises(ReportIdTaken):
        answer_for(doc, resolve_request("annual", ["arr1"], arrs, period="2026"), "mine")


def test_csv_dutch_and_english() -> None:
    doc = issue("quarterly", period="2026-Q1")
    rows = list(csv.reader(io.StringIO(report_csv(doc)), delimiter=";"))
    assert rows[0] == ["rapport_id", "regeling", "onderdeel", "sleutel", "grootheid", "waarde"]
    figures = {(r[1], r[2], r[3], r[4]): r[5] for r in rows[1:]}
    assert figures[("arr1", "arrangement", "", "spent_eur")] == "1440,00"
    assert figures[("arr1", "arrangement", "", "non_resident_share")] == "0,3333"
    assert figures[("arr1", "group", "g1", "planned_minutes")] == "7680"
    assert figures[("arr1", "week", "2026-W02", "minutes_group_g1")] == "360"
    assert figures[("arr1", "budget_year", "2026", "paid_eur")] == "5000,00"
    assert figures[("", "totals", "", "savings_eur")] == "720,00"
    english = list(csv.reader(io.StringIO(report_csv(doc, lang="en"))))
    assert english[0] == ["report_id", "arrangement_id", "section", "key", "figure", "value"]
    assert ["arr1", "arrangement", "", "spent_eur", "1440.00"] == english[[r[4] for r in english].index("spent_eur")][1:]


def _coloured_pixels(pdf: bytes, page: int) -> int:
    """Pixels of the chart bars' colours (blue and orange series) on a page rendered at 72 dpi."""
    image = pdfium.PdfDocument(pdf)[page].render(scale=1).to_pil().convert("RGB")
    return sum(1 for r, g, b in image.getdata() if (abs(r - 31) < 30 and abs(g - 119) < 30 and abs(b - 180) < 30)
               or (abs(r - 255) < 20 and abs(g - 127) < 30 and b < 60))


def test_pdf_dutch_text_and_charts() -> None:
    doc = issue("quarterly", period="2026-Q1")
    pdf = report_pdf(doc, "Regio Noord-Limburg")
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 3  # the cover with the totals, then the arrangement (its tables run on)
    cover, section = reader.pages[0].extract_text(), "".join(page.extract_text() for page in reader.pages[1:])
    assert "Verantwoordingsrapportage: kwartaalrapportage 2026-Q1" in cover
    assert "€ 1.440,00" in cover and "01-01-2026" in cover
    assert "Uren per week per groep" in section and "Besteed tegenover gepland per begrotingsjaar" in section
    assert "Bereikte leerlingen" in section and "33,3 %" in section and "Capaciteitstekorten" in section
    # The charts are drawn: the cover has no coloured pixels, the arrangement's page the bars of both charts.
    assert _coloured_pixels(pdf, 0) == 0
    assert _coloured_pixels(pdf, 1) > 500
    english = PdfReader(io.BytesIO(report_pdf(doc, "Region", lang="en"))).pages[1].extract_text()
    assert "Hours per week per group (hours)" in english and "€1,440.00" in english


async def test_service_stores_once_and_replay_refuses(tmp_path: Path) -> None:
    engine = await migrated_books(tmp_path, "budget")
    registry = RegistryCopy()
    registry.apply("school", "focus", {"name": "SO Spectrum", "municipality": VENRAY}, 1)
    registry.apply("arrangement", "arr1", arrangement().model_dump(mode="json", by_alias=True), 2)
    svc = BudgetService(engine, registry, None, lambda: None, clock=lambda: dt.date(2026, 4, 2))
    try:
        async with engine.begin() as conn:  # the ledger as the kernel leaves it (one row per live registration)
            for f in q1_facts():
                await conn.execute(books.ledger.insert().values(
                    registration_id=f.registration_id, arrangement_id="arr1", cost_cent_minutes=f.cost_cent_minutes,
                    voided=False, facts=orjson.dumps(f.to_dict())))
        doc, created = await svc.issue_report({"kind": "quarterly", "arrangement_ids": ["arr1"], "period": "2026-Q1"})
        assert created and doc["totals"]["spent_cents"] == 144_000 and doc["issued_on"] == "2026-04-02"
        assert doc["arrangements"][0]["school_name"] == "SO Spectrum"
        again, created = await svc.issue_report({"kind": "quarterly", "arrangement_ids": ["arr1"],
                                                 "period_start": "2026-01-01", "period_end": "2026-03-31"})
        assert not created and again == doc
        with pytest.raises(NotEnded):
            await svc.issue_report({"kind": "quarterly", "arrangement_ids": ["arr1"], "period": "2026-Q2"})
        with pytest.raises(UnknownArrangement):
            await svc.issue_report({"kind": "annual", "arrangement_ids": ["nope"], "period": "2025"})
        mine, created = await svc.issue_report({"report_id": "raad-q1", "kind": "quarterly",
                                                "arrangement_ids": ["arr1"], "period": "2026-Q1"})
        assert created and mine["report_id"] == "raad-q1"
        with pytest.raises(ReportIdTaken):
            await svc.issue_report({"report_id": "raad-q1", "kind": "quarterly", "arrangement_ids": ["arr1"],
                                    "period": "2025-Q4"})
        assert sorted(r["report_id"] for r in await svc.reports()) == sorted([doc["report_id"], "raad-q1"])
        assert await svc.report(doc["report_id"]) == doc and await svc.report("nope") is None
    finally:
        await engine.dispose()
    with pytest.raises(ReplayRefused, match="2 report"):
        await _empty(f"sqlite+aiosqlite:///{tmp_path / 'budget.db'}", "budget")
