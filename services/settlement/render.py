"""Statement rendering: CSV (one row per line) and a one-page PDF letter (design.md sections 4 and 5).

The statement dict comes from `services.settlement.domain.close_period` and is the single source of every
figure; these functions only lay it out, in the reader's language (`lang`: Dutch by default, English on
request; shared/i18n.py), line descriptions put in words at read time (services/settlement/describe.py).
Pure: strings and bytes in memory, no files.
"""
from __future__ import annotations

import csv
import io
from typing import Any, Mapping
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from services.settlement.describe import localise
from shared.i18n import Translator, translator
from shared.i18n import csv_header as i18n_csv_header
from shared.money import format_decimal
from shared.settlement_keys import KEYS

CSV_FIELDS = (
    "statement_id", "municipality", "period_start", "period_end", "kind", "description", "basis_unit",
    "basis_value", "amount", "registration_id", "original_period_start", "original_period_end",
    "absorbed_from", "non_participating", "funder", "pupils",
)



def csv_header(lang: str | None = None) -> list[str]:
    """The CSV header row in `lang` (the columns are CSV_FIELDS, in that order)."""
    return i18n_csv_header(CSV_FIELDS, lang)


def kind_label(kind: str, tr: Translator) -> str:
    _ = tr._
    labels = {"care": _("Care"), "absorbed": _("Absorbed"), "correction": _("Correction"),
              "education_contribution": _("Education contribution"), "contribution": _("Contribution")}
    return labels.get(kind, kind)


def _basis_value(value: str, dutch: bool) -> str:
    return value.replace(".", ",") if dutch else value


def statement_csv(statement: Mapping[str, Any], dutch: bool = False, lang: str | None = None) -> str:
    """One row per statement line, header row of column names in `lang` (CSV_FIELDS in English), descriptions
    in `lang`; the other cells are codes and figures, the same in every language.

    Default: ',' separator and '.' decimals. `dutch=True`: ';' separator and decimal comma, which is what
    Excel with Dutch regional settings opens correctly. Amounts are euros without thousands separators, so
    they sum to the statement's total.
    """
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";" if dutch else ",")
    writer.writerow(csv_header(lang))
    statement = localise(statement, lang)
    for line in statement["lines"]:
        writer.writerow([
            statement["statement_id"],
            statement.get("municipality") or "",
            statement["period_start"],
            statement["period_end"],
            line["kind"],
            line["description"],
            line["basis"]["unit"],
            _basis_value(line["basis"]["value"], dutch),
            format_decimal(line["amount_cents"], decimal_comma=dutch),
            line.get("registration_id") or "",
            line.get("original_period_start") or "",
            line.get("original_period_end") or "",
            line.get("absorbed_from") or "",
            "true" if line.get("non_participating") else "false",
            statement.get("funder") or statement.get("municipality") or "",
            " ".join(line.get("pupils") or ()),
        ])
    return out.getvalue()


# --- PDF -------------------------------------------------------------------------------------------

_STYLES = getSampleStyleSheet()
_BODY = ParagraphStyle("body", parent=_STYLES["Normal"], fontName="Helvetica", fontSize=9, leading=11)
_SMALL = ParagraphStyle("small", parent=_BODY, fontSize=8, leading=9.5)
_TITLE = ParagraphStyle("title", parent=_BODY, fontName="Helvetica-Bold", fontSize=15, leading=18)
_HEADING = ParagraphStyle("heading", parent=_BODY, fontName="Helvetica-Bold", fontSize=10.5, leading=13)
_RIGHT = ParagraphStyle("right", parent=_SMALL, alignment=2)

_CONTENT_WIDTH = A4[0] - 40 * mm


def _p(text: str, style: ParagraphStyle = _BODY) -> Paragraph:
    return Paragraph(escape(text), style)


def _is_funder(statement: Mapping[str, Any]) -> bool:
    """A statement to a funder other than a municipality (schema version 2 onwards)."""
    return statement.get("funder_kind", "municipality") != "municipality"


def _municipality_label(statement: Mapping[str, Any]) -> str:
    if _is_funder(statement):
        name, code = statement.get("funder_name"), statement["funder"]
    else:
        name, code = statement.get("municipality_name"), statement["municipality"]
    return f"{name} ({code})" if name else code


def _unit(unit: str, tr: Translator) -> str:
    """A basis unit (attributed_minutes, pupil_days, ...) in words."""
    _ = tr._
    units = {"attributed_minutes": _("attributed minutes"), "pupil_days": _("pupil-days"),
             "youth_population": _("youth population"), "share_weight": _("share weight"),
             "norm_minutes": _("norm minutes"), "minutes": _("minutes"), "share": _("share"),
             "cents": _("cents")}
    return units.get(unit, unit.replace("_", " "))


def _basis_text(statement: Mapping[str, Any], tr: Translator) -> str:
    """The split basis in words, figures in the reader's notation."""
    _, money, number = tr._, tr.money, tr.number
    basis = statement["basis"]
    key = basis["key"]
    if _is_funder(statement):
        parts = []
        if statement.get("frameworks"):
            parts.append(_("Care registered under {frameworks} is charged in full to this funder, one line per "
                           "registration.").format(frameworks=", ".join(statement["frameworks"])))
        for c in statement.get("contributions") or ():
            parts.append(_("Contribution {label} of {amount}: {applied} used so far, first statements first, "
                           "before the municipalities pay the rest.").format(
                label=c.get("label") or "", amount=money(c["amount_cents"]), applied=money(c["applied_cents"])))
        parts.append(_("This close, all funders together: charged {total}.").format(
            total=money(basis["close_total_cents"])))
        return " ".join(parts)
    if KEYS[key].host_pays_all if key in KEYS else False:
        text = _("Key host_pays: the host municipality pays all care ({minutes} attributed minutes); the "
                 "residence breakdown below is for information only.").format(minutes=number(basis["total_count"]))
    else:
        text = _("Key {key}: this municipality {own} of {total} {unit} (share {share}); participating "
                 "{days} of {period_days} days of the period.").format(
            key=key, own=number(basis["municipality_count"]), total=number(basis["total_count"]),
            unit=_unit(basis["unit"], tr), share=number(basis["share"]), days=basis["participating_days"],
            period_days=basis["period_days"])
    rates = ", ".join(money(rate) for rate in basis.get("hourly_rates_cents", []))
    if rates:
        text += " " + _("Hourly rate(s): {rates}.").format(rates=rates)
    text += " " + _("This close, all municipalities together: care {care}, corrections {corrections}, charged "
                    "{total}.").format(care=money(basis["close_care_cost_cents"]),
                                       corrections=money(basis["close_corrections_cost_cents"]),
                                       total=money(basis["close_total_cents"]))
    if basis.get("education_contribution_total_cents"):
        text += " " + _("Education contribution {amount} in total, deducted from the first statements first, "
                        "before the split.").format(amount=money(basis["education_contribution_total_cents"]))
    if statement.get("absorbed_from"):
        text += " " + _("Absorbed by the host for municipalities not participating: {codes}.").format(
            codes=", ".join(statement["absorbed_from"]))
    if statement.get("non_participating"):
        text += " " + _("Marked lines: this municipality did not participate on those days (policy: bill).")
    return text


def _line_rows(statement: Mapping[str, Any], max_lines: int, tr: Translator) -> list[list[Any]]:
    _ = tr._
    lines = list(statement["lines"])
    shown, hidden = (lines, []) if len(lines) <= max_lines else (lines[:max_lines - 1], lines[max_lines - 1:])
    rows: list[list[Any]] = [[_p(_("Kind"), _SMALL), _p(_("Description"), _SMALL), _p(_("Basis"), _SMALL),
                              _p(_("Amount"), _RIGHT)]]
    for line in shown:
        kind = kind_label(line["kind"], tr)
        if line.get("non_participating"):
            kind += " *"
        basis = f"{tr.number(line['basis']['value'])} {_unit(line['basis']['unit'], tr)}"
        rows.append([_p(kind, _SMALL), _p(line["description"], _SMALL), _p(basis, _SMALL),
                     _p(tr.money(line["amount_cents"]), _RIGHT)])
    if hidden:
        # One page is the promise; the full list is in the JSON and CSV of the same statement.
        rows.append([_p(_("Other"), _SMALL),
                     _p(_("{count} further lines, listed in the CSV and JSON of this statement").format(
                         count=len(hidden)), _SMALL),
                     _p("", _SMALL), _p(tr.money(sum(l["amount_cents"] for l in hidden)), _RIGHT)])
    return rows


def _story(statement: Mapping[str, Any], region_name: str, max_lines: int, tr: Translator) -> list[Any]:
    _, money = tr._, tr.money
    school = statement.get("school_name")
    school_text = f"{school} ({statement['school_id']})" if school else statement["school_id"]
    meta = [
        [_("Funder") if _is_funder(statement) else _("Municipality"), _municipality_label(statement)],
        [_("Statement id"), statement["statement_id"]],
        [_("Issue date"), tr.date(statement["issued_on"])],
        [_("Arrangement"), statement["arrangement_id"]],
        [_("School"), school_text],
        [_("Period"), _("{start} to {end}").format(start=tr.date(statement["period_start"]),
                                                   end=tr.date(statement["period_end"]))],
        [_("Settlement key"), statement["key"]],
    ]
    meta_table = Table([[_p(k, _SMALL), _p(v, _BODY)] for k, v in meta], colWidths=[32 * mm, None])
    meta_table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"),
                                    ("BOTTOMPADDING", (0, 0), (-1, -1), 1), ("TOPPADDING", (0, 0), (-1, -1), 1)]))

    lines_table = Table(_line_rows(statement, max_lines, tr),
                        colWidths=[30 * mm, _CONTENT_WIDTH - 30 * mm - 32 * mm - 28 * mm, 32 * mm, 28 * mm],
                        repeatRows=1)
    lines_table.setStyle(TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black),
        ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.lightgrey),
        ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
    ]))
    deductions = [[_p(_("Education contribution deducted"), _BODY),
                   _p(money(statement.get("education_contribution_cents", 0)), _RIGHT)]]
    if statement.get("contributions_deducted_cents"):
        deductions.append([_p(_("Paid by contributions (waterfall) deducted"), _BODY),
                           _p(money(statement["contributions_deducted_cents"]), _RIGHT)])
    total_words = _("Total to pay") if statement["total_cents"] >= 0 else _("Total to receive (credit)")
    total_table = Table(
        [*deductions,
         [Paragraph(f"<b>{escape(total_words)}</b>", _BODY),
          Paragraph(f"<b>{escape(money(statement['total_cents']))}</b>", _RIGHT)]],
        colWidths=[_CONTENT_WIDTH - 40 * mm, 40 * mm])
    total_table.setStyle(TableStyle([("LINEABOVE", (0, -1), (-1, -1), 0.8, colors.black)]))

    story: list[Any] = [
        _p(region_name, _TITLE),
        _p(_("Settlement statement: care in school time (zorg in onderwijstijd)"), _HEADING),
        Spacer(1, 4 * mm),
        meta_table,
        Spacer(1, 4 * mm),
        _p(_("Lines"), _HEADING),
        lines_table,
        Spacer(1, 2 * mm),
        total_table,
        Spacer(1, 4 * mm),
        _p(_("Split basis"), _HEADING),
        _p(_basis_text(statement, tr), _SMALL),
    ]
    breakdown = statement.get("breakdown") or []
    if breakdown:
        rows = [[_p(_("Residence"), _SMALL), _p(_("Attributed minutes"), _SMALL), _p(_("Participating"), _SMALL),
                 _p(_("Cost (information)"), _RIGHT)]]
        for row in breakdown[:max_lines]:
            label = f"{row['municipality_name']} ({row['municipality']})" if row.get("municipality_name") \
                else row["municipality"]
            rows.append([_p(label, _SMALL), _p(tr.number(row["attributed_minutes"]), _SMALL),
                         _p(_("yes") if row["participating"] else _("no"), _SMALL),
                         _p(money(row["cost_cents"]), _RIGHT)])
        table = Table(rows, colWidths=[70 * mm, 35 * mm, 30 * mm, None])
        table.setStyle(TableStyle([("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black)]))
        story += [Spacer(1, 3 * mm), _p(_("Residence breakdown (not charged separately)"), _HEADING), table]
    story += [
        Spacer(1, 5 * mm),
        _p(_("Amounts in euros. Every figure is reproducible from the registrations; an issued statement never "
             "changes: later registrations and voids for this period appear as correction lines on a later "
             "statement. Lines marked * concern days the municipality did not participate. Statement {id}, "
             "issued {date}.").format(id=statement["statement_id"], date=tr.date(statement["issued_on"])), _SMALL),
    ]
    return story


def _build(statement: Mapping[str, Any], region_name: str, max_lines: int, tr: Translator) -> tuple[bytes, int]:
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=20 * mm, rightMargin=20 * mm, topMargin=18 * mm,
                            bottomMargin=18 * mm,
                            title=tr._("Settlement statement {id}").format(id=statement["statement_id"]),
                            author=region_name,
                            subject=tr._("Statement for {whom}").format(whom=_municipality_label(statement)),
                            lang=tr.lang)
    doc.build(_story(statement, region_name, max_lines, tr))
    return buffer.getvalue(), doc.page


def statement_pdf(statement: Mapping[str, Any], region_name: str, lang: str | None = None) -> bytes:
    """A one-page A4 letter a finance department files: who, what period, the lines, the total, the basis.

    If all lines do not fit on one page, the last rows are folded into one "further lines" row with their
    sum, so the page still adds up to the total (the CSV and JSON list every line).
    """
    tr = translator(lang)
    statement = localise(statement, tr.lang)
    # More than ~30 rows never fit; start there so a statement with hundreds of corrections renders fast.
    max_lines = min(max(len(statement["lines"]), len(statement.get("breakdown") or []), 1), 30)
    while True:
        pdf, pages = _build(statement, region_name, max_lines, tr)
        if pages == 1 or max_lines <= 2:
            return pdf
        max_lines -= 1 if max_lines <= 12 else max_lines // 4
