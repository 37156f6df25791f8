"""Statement rendering: CSV in both dialects and the one-page PDF letter agree with the JSON statement.

Documents are Dutch by default (shared/i18n.py); the English letter is checked beside the Dutch one.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal
from typing import Any

import pytest
from pypdf import PdfReader

from services.settlement.domain import ArrangementContext, CareLine, close_period
from services.settlement.describe import localise
from services.settlement.render import CSV_FIELDS, csv_header, statement_csv, statement_pdf
from shared.i18n import translator
from shared.money import cent_minutes_to_cents, format_euro_nl
from shared.schemas import Arrangement, Municipality

D = dt.date
VENRAY = "GM0984"
HORST = "GM1507"
SWF = "GM1900"  # Súdwest-Fryslân: a name with a comma and non-ASCII letters below
REGION = "Regio Noord-Limburg"
ISSUED = D(2026, 1, 15)


def context(key: str = "residence_hours", **settlement: Any) -> ArrangementContext:
    arrangement = Arrangement.model_validate({
        "school_id": "focus", "group_ids": ["g1"], "start": "2025-01-01", "end": "2025-12-31",
        "rates": [{"from": "2025-01-01", "hourly_rate_cents": 6500}], "cap_cents": 10**9,
        "settlement": {"key": key, **settlement},
    })
    munis = {
        VENRAY: Municipality(name="Venray", youth_population=8000),
        HORST: Municipality.model_validate({"name": "Horst aan de Maas", "youth_population": 7000,
                                            "participation": [{"from": "2025-01-01", "until": "2025-01-15"}]}),
        SWF: Municipality(name="Súdwest-Fryslân, gemeente", youth_population=5000),
    }
    return ArrangementContext("venray-2025", arrangement, VENRAY, munis, (), school_name="Focus-Spectrum")


def care(rid: str, day: dt.date, minutes: int, rate: int, *residences: str, known: int = 0) -> CareLine:
    return CareLine(rid, day, minutes * rate, minutes, tuple((f"p{i}", m) for i, m in enumerate(residences)),
                    "listed", known_since_close=known)


def statements_by_municipality(result: Any) -> dict[str, dict[str, Any]]:
    return {s["municipality"]: s for s in result.statements}


@pytest.fixture(scope="module")
def venray_statement() -> dict[str, Any]:
    """Host statement with care, an absorbed part, and an education contribution line."""
    lines = [care("r1", D(2025, 1, 10), 60, 6500, HORST, SWF, VENRAY),
             care("r2", D(2025, 1, 20), 45, 6511, HORST, VENRAY)]
    result = close_period(context(education_contribution_cents=1000), lines, [], D(2025, 1, 1), D(2025, 1, 31),
                          ISSUED)
    return statements_by_municipality(result)[VENRAY]


@pytest.fixture(scope="module")
def many_corrections() -> dict[str, Any]:
    """Horst's February statement: 80 January registrations voided after close, plus February care."""
    ctx = context()
    january = [care(f"jan-{i:03d}", D(2025, 1, 1 + i % 15), 37, 6500, HORST) for i in range(80)]
    first = close_period(ctx, january, [], D(2025, 1, 1), D(2025, 1, 31), ISSUED)
    lines = [line.voided_at(1) for line in january] + [care("feb", D(2025, 2, 3), 600, 6500, HORST, known=1)]
    horst = Municipality(name="Horst aan de Maas")  # participating again
    ctx = ArrangementContext(ctx.arrangement_id, ctx.arrangement, VENRAY, {**ctx.municipalities, HORST: horst})
    second = close_period(ctx, lines, [first.close], D(2025, 2, 1), D(2025, 2, 28), ISSUED)
    return statements_by_municipality(second)[HORST]


def parse_csv(text: str, dutch: bool, lang: str = "nl") -> list[dict[str, str]]:
    """Rows keyed by CSV_FIELDS, whatever language the header row is in (checked against csv_header)."""
    reader = csv.reader(io.StringIO(text), delimiter=";" if dutch else ",")
    header = next(reader)
    assert header == csv_header(lang) and len(header) == len(CSV_FIELDS)
    return [dict(zip(CSV_FIELDS, row)) for row in reader]


NL = translator("nl")


def to_cents(amount: str, dutch: bool) -> int:
    if dutch:
        assert "." not in amount
        amount = amount.replace(",", ".")
    return int(Decimal(amount) * 100)


# --- CSV -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dutch", [False, True])
def test_csv_parses_and_sums_to_total(venray_statement: dict[str, Any], dutch: bool) -> None:
    rows = parse_csv(statement_csv(venray_statement, dutch=dutch), dutch)
    assert len(rows) == len(venray_statement["lines"])
    assert [r["kind"] for r in rows] == [l["kind"] for l in venray_statement["lines"]]
    assert [to_cents(r["amount"], dutch) for r in rows] == [l["amount_cents"] for l in venray_statement["lines"]]
    assert sum(to_cents(r["amount"], dutch) for r in rows) == venray_statement["total_cents"]
    assert {r["statement_id"] for r in rows} == {venray_statement["statement_id"]}


def test_csv_dialects_differ_in_separator_and_decimal_mark(venray_statement: dict[str, Any]) -> None:
    international = statement_csv(venray_statement)
    dutch = statement_csv(venray_statement, dutch=True)
    assert international.splitlines()[0].count(",") == len(CSV_FIELDS) - 1
    assert dutch.splitlines()[0].count(";") == len(CSV_FIELDS) - 1
    absorbed_row = next(r for r in parse_csv(dutch, True) if r["kind"] == "absorbed")
    assert absorbed_row["absorbed_from"] == HORST
    assert "," in absorbed_row["basis_value"] and "," in absorbed_row["amount"]
    care_row = next(r for r in parse_csv(international, False) if r["kind"] == "care")
    assert care_row["non_participating"] == "false" and care_row["basis_unit"] == "attributed_minutes"


def test_csv_of_corrections_names_the_original_period(many_corrections: dict[str, Any]) -> None:
    rows = parse_csv(statement_csv(many_corrections, dutch=True), True)
    corrections = [r for r in rows if r["kind"] == "correction"]
    assert len(corrections) == 80
    assert {(r["original_period_start"], r["original_period_end"]) for r in corrections} == {
        ("2025-01-01", "2025-01-31")}
    assert corrections[0]["registration_id"] == "jan-000"
    assert sum(to_cents(r["amount"], True) for r in rows) == many_corrections["total_cents"]


def test_csv_quotes_descriptions_with_separators() -> None:
    ctx = context()
    ctx.municipalities[SWF] = Municipality.model_validate({
        "name": "Súdwest-Fryslân, gemeente", "participation": [{"from": "2026-01-01"}]})
    result = close_period(ctx, [care("r", D(2025, 3, 3), 60, 6500, SWF)], [], D(2025, 3, 1), D(2025, 3, 31), ISSUED)
    statement = statements_by_municipality(result)[VENRAY]
    for dutch in (False, True):
        rows = parse_csv(statement_csv(statement, dutch=dutch), dutch)
        assert [r["description"] for r in rows] == [l["description"] for l in localise(statement, "nl")["lines"]]
        assert "Súdwest-Fryslân, gemeente" in rows[0]["description"] and rows[0]["absorbed_from"] == SWF
        assert sum(to_cents(r["amount"], dutch) for r in rows) == statement["total_cents"] == 6500


# --- PDF -------------------------------------------------------------------------------------------------

def pdf_text(pdf: bytes) -> tuple[int, str]:
    reader = PdfReader(io.BytesIO(pdf))
    return len(reader.pages), "\n".join(page.extract_text() for page in reader.pages)


def test_pdf_is_one_page_with_the_statement_figures(venray_statement: dict[str, Any]) -> None:
    pdf = statement_pdf(venray_statement, REGION)
    assert pdf.startswith(b"%PDF")
    pages, text = pdf_text(pdf)
    assert pages == 1
    for expected in (REGION, "Venray (GM0984)", venray_statement["statement_id"], "venray-2025",
                     "Focus-Spectrum (focus)", "01-01-2025 t/m 31-01-2025", "Datum", "15-01-2026",
                     "residence_hours", "Afrekening zorg in onderwijstijd", "Omschrijving"):
        assert expected in text
    for line in venray_statement["lines"]:
        assert NL.money(line["amount_cents"]) in text
    assert "Totaal te betalen" in text and NL.money(venray_statement["total_cents"]) in text
    assert NL.money(venray_statement["education_contribution_cents"]) in text
    basis = venray_statement["basis"]
    dutch_count = basis["municipality_count"].replace(".", ",")  # the letter uses the decimal comma
    assert f"deze gemeente {dutch_count} van {basis['total_count'].replace('.', ',')}" in text
    assert "€ 65,00" in text and "€ 65,11" in text  # the hourly rates
    assert "GM1507" in text  # absorbed for Horst
    words = " ".join(text.split())  # table cells wrap
    assert "Gedragen door de gastgemeente: zorg 01-01-2025 t/m 31-01-2025 voor GM1507 Horst aan de Maas" in words


def test_pdf_in_english_on_request(venray_statement: dict[str, Any]) -> None:
    pages, text = pdf_text(statement_pdf(venray_statement, REGION, lang="en"))
    assert pages == 1
    for expected in ("2025-01-01 to 2025-01-31", "Issue date", "2026-01-15", "Total to pay", "€65.00", "€65.11",
                     f"this municipality {venray_statement['basis']['municipality_count']} of"):
        assert expected in text
    for line in venray_statement["lines"]:
        assert line["description"][:40] in " ".join(text.split())  # the issued English text
    assert "Afrekening" not in text


def test_pdf_shows_non_ascii_names(venray_statement: dict[str, Any]) -> None:
    ctx = context("youth_share", municipalities=[SWF, VENRAY])
    result = close_period(ctx, [care("r", D(2025, 3, 3), 600, 130_000, VENRAY)], [], D(2025, 3, 1),
                          D(2025, 3, 31), ISSUED)
    statement = statements_by_municipality(result)[SWF]
    pages, text = pdf_text(statement_pdf(statement, "Regio Fryslân"))
    assert pages == 1
    assert "Súdwest-Fryslân, gemeente (GM1900)" in text and "Regio Fryslân" in text
    assert format_euro_nl(statement["total_cents"]) == "€ 5.000,00" and "€ 5.000,00" in text


def test_pdf_with_many_lines_stays_one_page_and_adds_up(many_corrections: dict[str, Any]) -> None:
    assert len(many_corrections["lines"]) == 81
    pages, text = pdf_text(statement_pdf(many_corrections, REGION))
    assert pages == 1
    match = re.search(r"(\d+) verdere regels, opgesomd in de CSV en JSON", text)
    assert match is not None
    hidden = int(match.group(1))
    shown = many_corrections["lines"][:len(many_corrections["lines"]) - hidden]
    for line in shown:
        assert line["registration_id"] is None or line["registration_id"] in text
    # The folded row carries the rest, so the page adds up to the total.
    assert NL.money(many_corrections["total_cents"] - sum(l["amount_cents"] for l in shown)) in text
    assert NL.money(many_corrections["total_cents"]) in text
    # Cumulative rounding: R(C2) - R(C1), not 80 separately rounded credits (those would give 65_000 - 320_666).
    assert many_corrections["total_cents"] == 65_000 - cent_minutes_to_cents(80 * 37 * 6500) == -255_667


def test_pdf_of_a_credit_and_of_host_pays() -> None:
    ctx = context("host_pays")
    lines = [care("r1", D(2025, 1, 10), 60, 6500, HORST, VENRAY)]
    first = close_period(ctx, lines, [], D(2025, 1, 1), D(2025, 1, 31), ISSUED)
    pages, text = pdf_text(statement_pdf(first.statements[0], REGION))
    assert pages == 1 and "Verdeling naar woonplaats" in text and "Horst aan de Maas (GM1507)" in text
    assert "€ 32,50" in text and "€ 65,00" in text
    second = close_period(ctx, [lines[0].voided_at(1)], [first.close], D(2025, 2, 1), D(2025, 2, 28), ISSUED)
    credit = second.statements[0]
    assert credit["total_cents"] == -6500
    pages, text = pdf_text(statement_pdf(credit, REGION))
    assert pages == 1 and "Totaal te ontvangen (creditering)" in text and "€ -65,00" in text
