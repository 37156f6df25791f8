"""Dutch by default, English on request (design.md section 12): the translator, the catalogue, one statement
and one final settlement in both languages (JSON descriptions, CSV header rows, PDF text)."""
from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from pypdf import PdfReader

from services.settlement.describe import describe_line, localise
from services.settlement.domain import ArrangementContext, CareLine, close_period
from services.settlement.render import statement_csv, statement_pdf
from shared.i18n import DEFAULT_LANGUAGE, LOCALE_DIR, language, negotiate, translator
from shared.schemas import Arrangement, Municipality

ROOT = Path(__file__).resolve().parents[2]
D = dt.date


# --- the translator ------------------------------------------------------------------------------------

def test_dutch_by_default_english_on_request_anything_else_dutch() -> None:
    assert DEFAULT_LANGUAGE == "nl"
    assert translator().lang == translator(None).lang == "nl"
    assert translator()._("Total to pay") == "Totaal te betalen"
    assert translator("en")._("Total to pay") == "Total to pay"
    for unknown in ("de", "fr-FR", "", "xx-yy", "english"):
        assert translator(unknown).lang == "nl" and translator(unknown)._("Total to pay") == "Totaal te betalen"
    assert [language(v) for v in ("EN", "en-GB", "en_US", "nl-BE", "NL")] == ["en", "en", "en", "nl", "nl"]
    assert translator("nl").pgettext("csv column", "description") == "omschrijving"
    assert translator("en").pgettext("csv column", "description") == "description"


@pytest.mark.parametrize(("lang", "accept", "expected"), [
    (None, None, "nl"),
    (None, "en", "en"),
    (None, "en-US,en;q=0.9,nl;q=0.8", "en"),
    (None, "nl-NL,nl;q=0.9,en;q=0.8", "nl"),
    (None, "de-DE,de;q=0.9,en;q=0.5", "en"),  # the first supported one by quality
    (None, "en;q=0.2, nl;q=0.7", "nl"),
    (None, "fr, *;q=0.1", "nl"),
    (None, "en;q=0", "nl"),  # q=0: not acceptable
    ("nl", "en", "nl"),  # ?lang= wins over the header
    ("en", "nl", "en"),
    ("xx", "en", "nl"),  # an unknown ?lang= is the default, not the header's
])
def test_negotiation(lang: str | None, accept: str | None, expected: str) -> None:
    assert negotiate(lang, accept) == expected


def test_dutch_money_and_dates() -> None:
    nl, en = translator("nl"), translator("en")
    assert nl.money(123_456) == "€ 1.234,56" and nl.money(9_750) == "€ 97,50" and nl.money(0) == "€ 0,00"
    assert nl.money(-780_000) == "€ -7.800,00" and nl.money(123_456_789) == "€ 1.234.567,89"
    assert en.money(123_456) == "€1,234.56" and en.money(-9_750) == "-€97.50"
    assert nl.date("2026-11-29") == "29-11-2026" and nl.date(D(2026, 1, 5)) == "05-01-2026"
    assert en.date("2026-11-29") == "2026-11-29"
    assert nl.number("37.5") == "37,5" and nl.number("12345.250000") == "12345,250000" and nl.number("60") == "60"
    assert en.number("0.333333") == "0.333333"


def test_the_catalogue_translates_every_marked_text_and_nothing_else() -> None:
    """Every text marked in the code has a Dutch translation (not fuzzy), and the .po holds no stale ones:
    after changing a text, update the catalogue (README "Language")."""
    # The web pages too (babel.cfg): the HTML's {{English text}} and the scripts' _("English text").
    method_map = [("services/gateway/static/*.html", "shared.i18n:extract_page"),
                  ("services/gateway/static/*.js", "javascript"),
                  ("services/**.py", "python"), ("shared/**.py", "python")]
    keywords = {"_": None, "gettext": None, "pgettext": ((1, "c"), 2)}
    marked = {(context, message if isinstance(message, str) else message[0])
              for _, _, message, _, context in extract_from_dir(str(ROOT), method_map, keywords=keywords)}
    assert ("Upload care registrations" in {m for _, m in marked}  # an HTML text
            and "Done: {total} rows, {accepted} received, {duplicates} duplicate, {rejected} rejected."
            in {m for _, m in marked})  # a script's text
    with open(LOCALE_DIR / "nl" / "LC_MESSAGES" / "zorgpot.po", "rb") as po:
        catalog = read_po(po)
    translated = {(m.context, m.id) for m in catalog if m.id and m.string and not m.fuzzy}
    in_po = {(m.context, m.id) for m in catalog if m.id}
    assert sorted(marked - translated, key=str) == [], "texts without a Dutch translation"
    assert sorted(in_po - marked, key=str) == [], "translations of texts the code no longer has"
    cfg = (ROOT / "babel.cfg").read_text()
    assert "[python: services/**.py]" in cfg and "[python: shared/**.py]" in cfg
    assert "page = shared.i18n:extract_page" in cfg and "[page: services/gateway/static/*.html]" in cfg
    assert "[javascript: services/gateway/static/*.js]" in cfg


# --- a statement in both languages ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def statement() -> dict:
    """Venray's statement: 90 minutes at EUR 65.00/h for a Venray pupil (EUR 97.50), a correction later."""
    arrangement = Arrangement.model_validate({
        "school_id": "focus", "group_ids": ["g1"], "start": "2026-11-01", "end": "2027-07-31",
        "rates": [{"from": "2026-11-01", "hourly_rate_cents": 6500}], "cap_cents": 10**9,
        "settlement": {"key": "residence_hours"}})
    ctx = ArrangementContext("venray-2026", arrangement, "GM0984", {"GM0984": Municipality(name="Venray")}, (),
                             school_name="Focus-Spectrum")
    care = CareLine("fs-anna-1", D(2026, 11, 2), 90 * 6500, 90, (("fs-001", "GM0984"),), "listed")
    first = close_period(ctx, [care], [], D(2026, 11, 1), D(2026, 11, 29), D(2026, 11, 30))
    return first.statements[0]


def test_a_statement_reads_in_dutch_by_default_and_in_english_on_request(statement: dict) -> None:
    issued = statement["lines"][0]["description"]
    assert issued == "Care 2026-11-01..2026-11-29 for resident pupils, per care day"  # stored as issued
    dutch, english = localise(statement, None), localise(statement, "en")
    assert dutch["language"] == "nl" and english["language"] == "en"
    assert dutch["lines"][0]["description"] == "Zorg 01-11-2026 t/m 29-11-2026 voor ingezeten leerlingen, per zorgdag"
    assert english["lines"][0]["description"] == issued
    assert {k: v for k, v in dutch.items() if k not in ("lines", "language")} == \
        {k: v for k, v in statement.items() if k != "lines"}  # figures untouched
    assert [l["amount_cents"] for l in dutch["lines"]] == [l["amount_cents"] for l in statement["lines"]] == [9750]

    header_nl = statement_csv(statement).splitlines()[0]
    header_en = statement_csv(statement, lang="en").splitlines()[0]
    assert header_nl.startswith("afrekening,gemeente,periode_begin,periode_eind,soort,omschrijving,")
    assert header_en.startswith("statement_id,municipality,period_start,period_end,kind,description,")
    assert "Zorg 01-11-2026 t/m 29-11-2026" in statement_csv(statement, dutch=True)

    nl_text = " ".join(PdfReader(io.BytesIO(statement_pdf(statement, "Regio Noord-Limburg"))).pages[0]
                       .extract_text().split())
    for expected in ("Afrekening zorg in onderwijstijd", "Totaal te betalen", "€ 97,50", "Periode",
                     "01-11-2026 t/m 29-11-2026", "Zorg 01-11-2026 t/m 29-11-2026 voor ingezeten leerlingen",
                     "Grondslag van de verdeling", "Uurtarief/-tarieven: € 65,00.", "verzonden 30-11-2026"):
        assert expected in nl_text, expected
    assert "Total to pay" not in nl_text
    en_text = " ".join(PdfReader(io.BytesIO(statement_pdf(statement, "Regio Noord-Limburg", lang="en"))).pages[0]
                       .extract_text().split())
    for expected in ("Settlement statement", "Total to pay", "€97.50", "2026-11-01 to 2026-11-29", issued):
        assert expected in en_text, expected
    assert "Totaal te betalen" not in en_text


def test_every_line_kind_has_dutch_words() -> None:
    """The descriptions of each kind of line, in Dutch, from the line's fields alone."""
    nl = translator("nl")
    about = {"key": "residence_pupils", "period_start": "2026-11-01", "period_end": "2026-11-29",
             "funder": "WLZ", "funder_kind": "wlz_office"}
    cases = [
        ({"kind": "care", "registration_id": "wlz-1", "date": "2026-11-02", "minutes": "37.5",
          "pupils": ["p1", "p2"]}, "Registratie wlz-1 van 02-11-2026: 37,5 minuten voor p1, p2"),
        ({"kind": "care", "coverage_start": "2026-10-01", "non_participating": True},
         "Zorg 01-10-2026 t/m 29-11-2026 (inclusief dagen vóór de periode die nog door geen afsluiting waren "
         "gedekt) naar rato van leerlingdagen (gemeente nam op deze dagen niet deel: in rekening gebracht volgens "
         "de afspraak)"),
        ({"kind": "absorbed", "coverage_start": "2026-11-01", "absorbed_from": "unknown", "absorbed_from_name": None},
         "Gedragen door de gastgemeente: zorg 01-11-2026 t/m 29-11-2026 voor leerlingen zonder vastgelegde "
         "woonplaats, niet deelnemend"),
        ({"kind": "correction", "registration_id": "r9", "date": "2026-10-10", "late_void": False,
          "original_period_start": "2026-10-01", "original_period_end": "2026-10-31", "absorbed_from": "GM1507"},
         "Correctie op afgesloten periode 01-10-2026 t/m 31-10-2026: registratie r9 van 10-10-2026 geregistreerd "
         "na afsluiting (gedragen voor GM1507, niet deelnemend)"),
        ({"kind": "contribution", "contribution_funder": "WLZ", "contribution_label": None,
          "contribution_funder_name": "Zorgkantoor", "exact_cents": "1000"},
         "Bijdrage Zorgkantoor aan de zorgkosten vóór de gemeenten (eerste afrekeningen eerst)"),
        ({"kind": "contribution", "contribution_funder": "WLZ", "contribution_label": "Wlz-deel",
          "contribution_funder_name": "Zorgkantoor", "exact_cents": "-1000"},
         "Bijdrage Wlz-deel (Zorgkantoor) in mindering gebracht"),
        ({"kind": "education_contribution"}, "Onderwijsbijdrage in mindering gebracht (eerste afrekeningen eerst)"),
    ]
    for line, expected in cases:
        assert describe_line(line, about, nl) == expected
