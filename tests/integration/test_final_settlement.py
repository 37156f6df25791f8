"""The final settlement (afrekening, design.md section 10) through the real stack: worked case (h) to the cent,
refused before the end date, a repeat answers the same document, late care shows on the pot and a superseding
version counts it, CSV and PDF downloads, and who may issue and read."""
from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import pytest
from pypdf import PdfReader

from tests.integration.budget_helpers import wait_pot
from tests.integration.client import Api, Region

pytestmark = pytest.mark.stack


def week_of_care(region: Region, group: str, monday: dt.date) -> list[dict[str, Any]]:
    """40 h of care in one school week: Monday..Friday, 480 minutes a day (a registration is at most 720)."""
    days = [monday + dt.timedelta(days=d) for d in range(5)]
    return [region.registration(f"{group}-{day.isoformat()}", day=day, minutes=480, group=group) for day in days]


def school_weeks(first_monday: dt.date, count: int) -> list[dt.date]:
    return [first_monday + dt.timedelta(weeks=w) for w in range(count)]


def test_case_h_final_settlement_repeat_late_care_and_a_corrected_version(api: Api) -> None:
    """Design.md case (h), Venray, EUR 65.00/h, cap EUR 163,800.00, arrangement 2025-08-01..2026-07-31:
    - group 2 has 17 school weeks in 2025 (Mondays 1 Sep .. 22 Dec) but no care worker in the first 3, so care
      in 14 weeks: 14 x 40 h = 560 h x EUR 65.00 = EUR 36,400.00 delivered in 2025;
    - groups 1 and 2 have 23 school weeks each in 2026 (Mondays 5 Jan .. 8 Jun): 46 x 40 h = 1,840 h x EUR 65.00
      = EUR 119,600.00 delivered in 2026;
    - delivered EUR 156,000.00 (2,400 h), under the cap, so all of it counts;
    - paid EUR 44,200.00 (2025-09-01) + EUR 119,600.00 (2026-02-01) = EUR 163,800.00;
    - balance 2025: 36,400.00 - 44,200.00 = -7,800.00; 2026: 119,600.00 - 119,600.00 = 0.00;
      total 156,000.00 - 163,800.00 = -EUR 7,800.00 (the school refunds EUR 7,800.00)."""
    region = Region(api).build(pupils_per_group=1)
    arr = region.arrangement_id
    items: list[dict[str, Any]] = []
    for monday in school_weeks(dt.date(2025, 9, 1), 17)[3:]:  # group 2, 2025, the first 3 weeks without care
        items += week_of_care(region, "g2", monday)
    for monday in school_weeks(dt.date(2026, 1, 5), 23):
        items += week_of_care(region, "g1", monday) + week_of_care(region, "g2", monday)
    assert len(items) == (14 + 46) * 5
    reply = api.post("/hours/batch", json=items)
    assert reply.status_code == 200 and reply.json()["accepted"] == 300, reply.text
    for payment_id, day, cents in (("ven-1", "2025-09-01", 4_420_000), ("ven-2", "2026-02-01", 11_960_000)):
        paid = api.post(f"/arrangements/{arr}/payments", json={"payment_id": payment_id, "date": day,
                                                                "amount_cents": cents})
        assert paid.status_code == 201, paid.text
    pot = wait_pot(api, arr, lambda p: p["registrations"] == 300 and p["paid_cents"] == 16_380_000)
    assert pot["spent_cents"] == 15_600_000 and pot["final_settlement_id"] is None
    assert pot["after_final_settlement_cents"] == 0

    issued = api.post(f"/arrangements/{arr}/final-settlement")
    assert issued.status_code == 201, issued.text
    doc = issued.json()
    assert doc["by_budget_year"] == [
        {"year": 2025, "minutes": 560 * 60, "delivered_cents": 3_640_000, "capped_cents": 3_640_000,
         "paid_cents": 4_420_000, "balance_cents": -780_000},
        {"year": 2026, "minutes": 1840 * 60, "delivered_cents": 11_960_000, "capped_cents": 11_960_000,
         "paid_cents": 11_960_000, "balance_cents": 0},
    ]
    assert (doc["delivered_cents"], doc["capped_cents"], doc["paid_cents"], doc["balance_cents"]) == \
        (15_600_000, 15_600_000, 16_380_000, -780_000)
    assert (doc["final_settlement_id"], doc["arrangement_id"], doc["version"], doc["supersedes"]) == \
        (f"fs:{arr}:1", arr, 1, None)
    assert doc["school_id"] == region.school_id and dt.date.fromisoformat(doc["issued_on"]) > region.end
    fs1 = doc["final_settlement_id"]

    # Asked again (no body, or an empty one): the same document, 200.
    for again in (api.post(f"/arrangements/{arr}/final-settlement"),
                  api.post(f"/arrangements/{arr}/final-settlement", json={})):
        assert again.status_code == 200 and again.json() == doc, again.text
    pot = wait_pot(api, arr, lambda p: p["final_settlement_id"] == fs1)
    assert pot["after_final_settlement_cents"] == 0

    # Late care: 60 minutes on 2026-07-01 at EUR 65.00/h = EUR 65.00, after the final settlement.
    late = api.post("/hours", json=region.registration("late-1", day=dt.date(2026, 7, 1), minutes=60))
    assert late.status_code == 202, late.text
    assert api.wait_status("late-1", {"accepted", "rejected"})["status"] == "accepted"
    pot = wait_pot(api, arr, lambda p: p["registrations"] == 301)
    assert pot["spent_cents"] == 15_606_500 and pot["after_final_settlement_cents"] == 6_500
    plain = api.post(f"/arrangements/{arr}/final-settlement")  # an issued document never changes
    assert plain.status_code == 200 and plain.json() == doc

    # A corrected version: delivered 156,065.00, balance 156,065.00 - 163,800.00 = -7,735.00; 2026 holds the
    # late care: delivered 119,665.00, balance +65.00.
    bad = api.post(f"/arrangements/{arr}/final-settlement", json={"supersedes": f"fs:{arr}:9"})
    assert bad.status_code == 422 and "supersedes" in bad.text, bad.text
    second = api.post(f"/arrangements/{arr}/final-settlement", json={"supersedes": fs1})
    assert second.status_code == 201, second.text
    v2 = second.json()
    assert (v2["final_settlement_id"], v2["version"], v2["supersedes"]) == (f"fs:{arr}:2", 2, fs1)
    assert (v2["delivered_cents"], v2["paid_cents"], v2["balance_cents"]) == (15_606_500, 16_380_000, -773_500)
    assert [(r["year"], r["delivered_cents"], r["balance_cents"]) for r in v2["by_budget_year"]] == \
        [(2025, 3_640_000, -780_000), (2026, 11_966_500, 6_500)]
    repeat = api.post(f"/arrangements/{arr}/final-settlement", json={"supersedes": fs1})
    assert repeat.status_code == 200 and repeat.json() == v2  # the same correction asked again
    third = api.post(f"/arrangements/{arr}/final-settlement", json={"supersedes": v2["final_settlement_id"]})
    assert third.status_code == 201 and third.json()["version"] == 3
    stale = api.post(f"/arrangements/{arr}/final-settlement", json={"supersedes": fs1})
    assert stale.status_code == 409 and f"fs:{arr}:3" in stale.text, stale.text
    pot = wait_pot(api, arr, lambda p: p["final_settlement_id"] == f"fs:{arr}:3")
    assert pot["after_final_settlement_cents"] == 0

    listed = api.get(f"/arrangements/{arr}/final-settlements").json()
    assert [d["version"] for d in listed["final_settlements"]] == [1, 2, 3]
    assert listed["final_settlements"][0] == doc and api.get(f"/final-settlements/{fs1}").json() == doc

    # CSV: one row per budget year and a total row, euros; PDF: a one-page letter with the balance.
    got = api.get(f"/final-settlements/{fs1}", params={"format": "csv", "lang": "en"})
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(got.text)))
    assert [(r["year"], r["hours"], r["delivered"], r["paid"], r["balance"]) for r in rows] == [
        ("2025", "560.00", "36400.00", "44200.00", "-7800.00"),
        ("2026", "1840.00", "119600.00", "119600.00", "0.00"),
        ("total", "2400.00", "156000.00", "163800.00", "-7800.00"),
    ]
    pdf = api.get(f"/final-settlements/{fs1}", params={"format": "pdf"})
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(pdf.content))
    text = reader.pages[0].extract_text()
    assert len(reader.pages) == 1 and "€ -7.800,00" in text and "€ 156.000,00" in text and fs1 in text
    assert pdf.headers["content-language"] == "nl"  # Dutch by default (design.md section 12)
    for dutch in ("Eindafrekening op basis van ingezette uren", "Begrotingsjaar", "Totaal",
                  "Saldo terug te betalen door de school"):
        assert dutch in text, dutch
    assert got.text.startswith("final_settlement_id,") and api.get(f"/final-settlements/{fs1}", params={
        "format": "csv"}).text.startswith("eindafrekening,regeling,school,versie,datum,vervangt,jaar,uren,")
    english = api.get(f"/final-settlements/{fs1}", params={"format": "pdf"}, headers={"Accept-Language": "en"})
    text = PdfReader(io.BytesIO(english.content)).pages[0].extract_text()
    assert "Balance to be refunded by the school" in text and "-€7,800.00" in text and "Eindafrekening" not in text
    v2_text = PdfReader(io.BytesIO(api.get(f"/final-settlements/{v2['final_settlement_id']}",
                                           params={"format": "pdf"}).content)).pages[0].extract_text()
    assert "€ -7.735,00" in v2_text and fs1 in v2_text  # names the version it replaces

    # Who: the pot's school reads, another school gets 404, a municipality 403; only the coordinator issues.
    school = api.as_token(api.token_for("school", region.school_id))
    assert school.get(f"/final-settlements/{fs1}").json() == doc
    assert school.get(f"/final-settlements/{fs1}", params={"format": "csv"}).status_code == 200
    assert [d["version"] for d in school.get(f"/arrangements/{arr}/final-settlements").json()["final_settlements"]] \
        == [1, 2, 3]
    assert school.post(f"/arrangements/{arr}/final-settlement").status_code == 403
    other = Region(api).build(pupils_per_group=1)
    stranger = api.as_token(api.token_for("school", other.school_id))
    for path in (f"/final-settlements/{fs1}", f"/arrangements/{arr}/final-settlements"):
        assert stranger.get(path).status_code == 404
    assert stranger.get(f"/final-settlements/{fs1}", params={"format": "pdf"}).status_code == 404
    municipality = api.as_token(api.token_for("municipality", "GM0984"))
    assert municipality.get(f"/final-settlements/{fs1}").status_code == 403
    assert municipality.get(f"/arrangements/{arr}/final-settlements").status_code == 403
    assert api.get("/final-settlements/fs:no-such:1").status_code == 404


def test_refused_before_the_end_date_and_for_an_unknown_arrangement(api: Api) -> None:
    """An arrangement that ends today is still running (its end is not before today): 409, nothing issued."""
    today = dt.date.today()
    region = Region(api, start=today - dt.timedelta(days=200), end=today).build(pupils_per_group=1)
    early = api.post(f"/arrangements/{region.arrangement_id}/final-settlement")
    assert early.status_code == 409 and f"ends on {today.isoformat()}" in early.text, early.text
    assert api.get(f"/arrangements/{region.arrangement_id}/final-settlements").json()["final_settlements"] == []
    assert api.post("/arrangements/no-such-arr/final-settlement").status_code == 404
    assert api.post(f"/arrangements/{region.arrangement_id}/final-settlement",
                    json={"supersedes": 5}).status_code == 422
