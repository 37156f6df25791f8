"""Final settlement rendering: CSV (one row per budget year and a total row) and a one-page PDF letter.

The document dict comes from `services.budget.final_settlement.final_settlement_document` and is the single
source of every figure; these functions only lay it out, with the statement renderer's PDF styles and money
formats (services/settlement/render.py), so both letters look alike, in the reader's language (`lang`: Dutch
by default, English on request; shared/i18n.py). Pure: strings and bytes in memory.
"""
from __future__ import annotations

import csv
import io
from typing import Any, Mapping
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from services.settlement.render import _BODY, _CONTENT_WIDTH, _HEADING, _RIGHT, _SMALL, _TITLE, _p
from shared.i18n import Translator, translator
from shared.i18n import csv_header as i18n_csv_header
from shared.money import format_decimal

CSV_FIELDS = (
    "final_settlement_id", "arrangement_id", "school_id", "version", "issued_on", "supersedes", "year", "hours",
    "delivered", "capped", "paid", "balance",
)


def _hours(minutes: int, dutch: bool) -> str:
    """Minutes as hours with two decimals (exact for whole quarter hours, else rounded half-up)."""
    hundredths = (minutes * 100 * 2 + 60) // (60 * 2)
    return format_decimal(hundredths, decimal_comma=dutch)


def csv_header(lang: str | None = None) -> list[str]:
    """The CSV header row in `lang` (the columns are CSV_FIELDS, in that order)."""
    return i18n_csv_header(CSV_FIELDS, lang)


def final_settlement_csv(doc: Mapping[str, Any], dutch: bool = False, lang: str | None = None) -> str:
    """One row per budget year, then a row with year `total`; amounts are euros without thousands separators,
    so the year rows sum to the total row. `dutch=True`: ';' separator and decimal comma. The header row and
    the word `total` are in `lang`; the other cells are codes and figures."""
    tr = translator(lang)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";" if dutch else ",")
    writer.writerow(csv_header(tr.lang))
    head = [doc["final_settlement_id"], doc["arrangement_id"], doc["school_id"], doc["version"], doc["issued_on"],
            doc.get("supersedes") or ""]

    def money(cents: int) -> str:
        return format_decimal(cents, decimal_comma=dutch)

    for row in doc["by_budget_year"]:
        writer.writerow(head + [row["year"], _hours(row["minutes"], dutch), money(row["delivered_cents"]),
                                money(row["capped_cents"]), money(row["paid_cents"]), money(row["balance_cents"])])
    writer.writerow(head + [tr.pgettext("final settlement csv year", "total"), _hours(doc["minutes"], dutch), money(doc["delivered_cents"]),
                            money(doc["capped_cents"]), money(doc["paid_cents"]), money(doc["balance_cents"])])
    return out.getvalue()


def _balance_words(cents: int, tr: Translator) -> str:
    if cents > 0:
        return tr._("Balance still to pay to the school")
    if cents < 0:
        return tr._("Balance to be refunded by the school")
    return tr._("Balance: nothing to pay or refund")


def _story(doc: Mapping[str, Any], region_name: str, tr: Translator) -> list[Any]:
    _, money = tr._, tr.money
    school = doc.get("school_name")
    school_text = f"{school} ({doc['school_id']})" if school else doc["school_id"]
    meta = [
        [_("Payee (school)"), school_text],
        [_("Final settlement"), _("{id} (version {version})").format(id=doc["final_settlement_id"],
                                                                     version=doc["version"])],
        [_("Issue date"), tr.date(doc["issued_on"])],
        [_("Arrangement"), _("{id}, {start} to {end}").format(id=doc["arrangement_id"], start=tr.date(doc["start"]),
                                                              end=tr.date(doc["end"]))],
        [_("Cap"), money(doc["cap_cents"])],
    ]
    if doc.get("supersedes"):
        meta.append([_("Replaces"), doc["supersedes"]])
    meta_table = Table([[_p(k, _SMALL), _p(v, _BODY)] for k, v in meta], colWidths=[32 * mm, None])
    meta_table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"),
                                    ("BOTTOMPADDING", (0, 0), (-1, -1), 1), ("TOPPADDING", (0, 0), (-1, -1), 1)]))

    header = [_("Budget year"), _("Hours"), _("Delivered"), _("Within the cap"), _("Paid"), _("Balance")]
    rows: list[list[Any]] = [[_p(header[0], _SMALL)] + [_p(h, _RIGHT) for h in header[1:]]]

    def line(label: str, minutes: int, figures: Mapping[str, Any], bold: bool = False) -> list[Any]:
        cells = [_hours(minutes, tr.lang == "nl")] + [money(figures[k]) for k in
                                           ("delivered_cents", "capped_cents", "paid_cents", "balance_cents")]
        if bold:
            return [Paragraph(f"<b>{escape(label)}</b>", _SMALL)] + [
                Paragraph(f"<b>{escape(c)}</b>", _RIGHT) for c in cells]
        return [_p(label, _SMALL)] + [_p(c, _RIGHT) for c in cells]

    for row in doc["by_budget_year"]:
        rows.append(line(str(row["year"]), row["minutes"], row))
    rows.append(line(_("Total"), doc["minutes"], doc, bold=True))
    year_table = Table(rows, colWidths=[26 * mm, 20 * mm] + [(_CONTENT_WIDTH - 46 * mm) / 4] * 4)
    year_table.setStyle(TableStyle([
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black),
        ("LINEABOVE", (0, -1), (-1, -1), 0.8, colors.black),
        ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
    ]))
    balance_table = Table(
        [[Paragraph(f"<b>{escape(_balance_words(doc['balance_cents'], tr))}</b>", _BODY),
          Paragraph(f"<b>{escape(money(doc['balance_cents']))}</b>", _RIGHT)]],
        colWidths=[_CONTENT_WIDTH - 40 * mm, 40 * mm])
    payments = ", ".join(_("{amount} on {date}").format(amount=money(p["amount_cents"]), date=tr.date(p["date"]))
                         for p in doc.get("payments", []))
    explanation = (
        _("Delivered: the cost of the care registered and accepted for this arrangement ({count} registrations), "
          "{delivered}; counted up to the cap of {cap}: {capped}").format(
            count=doc["registrations"], delivered=money(doc["delivered_cents"]), cap=money(doc["cap_cents"]),
            capped=money(doc["capped_cents"]))
        + (_(" ({amount} over the cap is not payable)").format(amount=money(doc["over_cap_cents"]))
           if doc["over_cap_cents"] else "")
        + ". " + _("Paid: {payments}.").format(payments=payments or _("nothing")) + " "
        + _("Balance = within the cap - paid; positive is still to pay to the school, negative is to be refunded. "
            "Per budget year the cap is applied to the running total in date order: years count in full until the "
            "cap is reached, the year reaching it is cut, later years count nothing."))
    return [
        _p(region_name, _TITLE),
        _p(_("Final settlement on hours delivered (afrekening op basis van ingezette uren)"), _HEADING),
        Spacer(1, 4 * mm),
        meta_table,
        Spacer(1, 4 * mm),
        _p(_("Per budget year"), _HEADING),
        year_table,
        Spacer(1, 3 * mm),
        balance_table,
        Spacer(1, 4 * mm),
        _p(explanation, _SMALL),
        Spacer(1, 4 * mm),
        _p(_("Amounts in euros. Every figure is reproducible from the registrations and payments; an issued final "
             "settlement never changes: care or payments recorded later are settled by a new version that replaces "
             "it. Final settlement {id}, issued {date}.").format(id=doc["final_settlement_id"],
                                                                 date=tr.date(doc["issued_on"])), _SMALL),
    ]


def final_settlement_pdf(doc: Mapping[str, Any], region_name: str, lang: str | None = None) -> bytes:
    """A one-page A4 letter for the school board: payee, arrangement, per budget year and total, the balance."""
    tr = translator(lang)
    buffer = io.BytesIO()
    pdf = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=20 * mm, rightMargin=20 * mm, topMargin=18 * mm,
                            bottomMargin=18 * mm,
                            title=tr._("Final settlement {id}").format(id=doc["final_settlement_id"]),
                            author=region_name,
                            subject=tr._("Final settlement for {school}").format(school=doc["school_id"]),
                            lang=tr.lang)
    pdf.build(_story(doc, region_name, tr))
    return buffer.getvalue()
