"""Accountability reports (design.md section 12) through the real stack: a quarterly report over a pot with care, a
plan and a payment, to the minute and cent; the same request again answers the same document (also with the
period as dates); the PDF with its charts and the CSV download; bad input names the field; only the coordinator."""
from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from pypdf import PdfReader

from tests.integration.budget_helpers import put_arrangement, wait_pot
from tests.integration.client import Api, Region

pytestmark = pytest.mark.stack


def test_quarterly_report_repeat_downloads_and_who(api: Api) -> None:
    """Q1 2026 of a Venray-style pot (EUR 65.00/h, individual EUR 96.64/h), two pupils a group (p0 in Horst, p1 in
    Venray, the host), care attributed to the group's enrolled pupils:
    - Mondays 5, 12, 19, 26 January: g1 120 min by cw-1; Wednesdays 7, 14, 21, 28 January: g2 60 min by cw-2;
      720 min = 12 h x EUR 65.00 = EUR 780.00; individual 12 x EUR 96.64 = EUR 1,159.68, savings EUR 379.68;
    - Monday 6 April (Q2): g1 60 min, not in the report;
    - half of every registration is for a Horst pupil: non-resident share 360 / 720 = 0.5; 4 pupils reached, each
      on 4 days; one care worker a group;
    - plan g1 600 min a week from 5 January: 62 weekdays to 31 March x 120 min = 7,440 min, x EUR 65.00 / 60 =
      EUR 8,060.00; the installment due 1 February (EUR 1,000.00) and the payment of 15 February (EUR 500.00)."""
    region = Region(api).build(pupils_per_group=2)
    arr = region.arrangement_id
    put_arrangement(region, installments=[{"due": "2026-02-01", "amount_cents": 100_000}],
                    plan=[{"group_id": "g1", "from": "2026-01-05", "minutes_per_week": 600}])
    items = []
    for week in range(4):
        monday = dt.date(2026, 1, 5) + dt.timedelta(weeks=week)
        items.append(region.registration(f"rep-g1-{week}", day=monday, minutes=120, group="g1"))
        items.append(region.registration(f"rep-g2-{week}", day=monday + dt.timedelta(days=2), minutes=60, group="g2",
                                         care_worker="cw-2"))
    items.append(region.registration("rep-april", day=dt.date(2026, 4, 6), minutes=60, group="g1"))
    reply = api.post("/hours/batch", json=items)
    assert reply.status_code == 200 and reply.json()["accepted"] == 9, reply.text
    paid = api.post(f"/arrangements/{arr}/payments", json={"payment_id": f"{arr}-p1", "date": "2026-02-15",
                                                            "amount_cents": 50_000})
    assert paid.status_code == 201, paid.text
    wait_pot(api, arr, lambda p: p["registrations"] == 9 and p["paid_cents"] == 50_000)

    issued = api.post("/reports", json={"kind": "quarterly", "arrangement_ids": [arr], "period": "2026-Q1"})
    assert issued.status_code == 201, issued.text
    doc = issued.json()
    assert (doc["kind"], doc["period"], doc["period_start"], doc["period_end"]) == \
        ("quarterly", "2026-Q1", "2026-01-01", "2026-03-31")
    s = doc["arrangements"][0]
    assert (s["registrations"], s["minutes"], s["spent_cents"]) == (8, 720, 78_000)
    assert (s["individual_equivalent_cents"], s["savings_cents"]) == (115_968, 37_968)
    assert (s["planned_cents"], s["paid_cents"], s["planned_capacity_cents"]) == (100_000, 50_000, 806_000)
    assert (s["pupils_reached"], s["pupils_3_or_more_days"], s["care_workers"]) == (4, 4, 2)
    assert s["non_resident_share"] == 0.5 and s["non_resident_pupil_share"] == 0.5
    assert [(g["group_id"], g["minutes"], g["spent_cents"], g["planned_minutes"], g["care_workers"])
            for g in s["by_group"]] == [("g1", 480, 52_000, 7440, 1), ("g2", 240, 26_000, 0, 1)]
    assert sum(w["spent_cents"] for w in s["by_week"]) == 78_000
    assert s["by_funding"][0]["minutes"] == 720 and s["by_task_category"] == [
        {"task_category": 2, "minutes": 720, "spent_cents": 78_000}]

    # The same request again, also with the period as its first and last day: 200, the same document.
    for again in ({"kind": "quarterly", "arrangement_ids": [arr, arr], "period": "2026-Q1"},
                  {"kind": "quarterly", "arrangement_ids": [arr], "period_start": "2026-01-01",
                   "period_end": "2026-03-31"}):
        repeat = api.post("/reports", json=again)
        assert repeat.status_code == 200 and repeat.json() == doc, repeat.text
    assert api.get(f"/reports/{doc['report_id']}").json() == doc
    assert doc["report_id"] in [r["report_id"] for r in api.get("/reports").json()["reports"]]

    pdf = api.get(f"/reports/{doc['report_id']}", params={"format": "pdf"})
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "Verantwoordingsrapportage" in text and "Uren per week per groep" in text and "€ 780,00" in text
    got = api.get(f"/reports/{doc['report_id']}", params={"format": "csv"})
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    rows = {(r["regeling"], r["onderdeel"], r["sleutel"], r["grootheid"]): r["waarde"]
            for r in csv.DictReader(io.StringIO(got.text), delimiter=";")}
    assert rows[(arr, "arrangement", "", "spent_eur")] == "780,00"
    english = api.get(f"/reports/{doc['report_id']}", params={"format": "csv", "lang": "en"})
    assert english.headers["content-language"] == "en" and english.text.startswith("report_id,arrangement_id,")

    # Bad input names the field; a period not ended yet is 409; an unknown arrangement 404.
    outside = api.post("/reports", json={"kind": "quarterly", "arrangement_ids": [arr], "period": "2025-Q1"})
    assert outside.status_code == 422 and "period" in outside.text, outside.text
    wrong = api.post("/reports", json={"kind": "quarterly", "arrangement_ids": [arr], "period_start": "2026-01-01",
                                       "period_end": "2026-02-28"})
    assert wrong.status_code == 422 and "period_start" in wrong.text, wrong.text
    today = dt.date.today()
    quarter = (today.month - 1) // 3 + 1
    running = Region(api, start=dt.date(today.year, 3 * quarter - 2, 1), end=dt.date(today.year + 1, 12, 31))
    running.build(pupils_per_group=1)
    current = api.post("/reports", json={"kind": "quarterly", "arrangement_ids": [running.arrangement_id],
                                         "period": f"{today.year}-Q{quarter}"})
    assert current.status_code == 409 and "can be issued from" in current.text, current.text
    assert api.post("/reports", json={"kind": "annual", "arrangement_ids": ["no-such-arr"],
                                      "period": "2026"}).status_code == 404
    taken = api.post("/reports", json={"report_id": doc["report_id"], "kind": "annual", "arrangement_ids": [arr],
                                       "period": "2026"})
    assert taken.status_code == 409, taken.text

    # Only the coordinator: the pot's own school gets 403 for issuing and reading.
    school = api.as_token(api.token_for("school", region.school_id))
    assert school.post("/reports", json={"kind": "quarterly", "arrangement_ids": [arr],
                                         "period": "2026-Q1"}).status_code == 403
    assert school.get(f"/reports/{doc['report_id']}").status_code == 403
    assert school.get("/reports").status_code == 403
