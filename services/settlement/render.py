"""Statement rendering: CSV (one row per line) and a one-page PDF letter (design.md sections 4 and 5).

The statement dict comes from `services.settlement.domain.close_period` and is the single source of every
figure; these functions only lay it out. Pure: strings and bytes in memory, no files.
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

from shared.money import format_decimal, format_euro_nl
from shared.settlement_keys import KEYS

CSV_FIELDS = (
    "statement_id", "municipality", "period_start", "period_end", "kind", "description", "basis_unit",
    "basis_value", "amount", "registration_id", "original_period_start", "original_period_end",
    "absorbed_from", "non_participating", "funder", "pupils",
)

KIND_LABELS = {
    "care": "Care",
    "absorbed": "Absorbed",
    "correction": "Correction",
    "education_contribution": "Education contribution",
    "contribution": "Contribution",
}


def _basis_value(value: str, dutch: bool) -> str:
    return value.replace(".", ",") if dutch else value


def statement_csv(statement: Mapping[str, Any], dutch: bool = False) -> str:
    """One row per statement line, header row of field names.

    Default: ',' separator and '.' decimals. `dutch=True`: ';' separator and decimal comma, which is what
    Excel with Dutch regional settings opens correctly. Amounts are euros without thousands separators, so
    they sum to the statement's total.
    """
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";" if dutch else ",")
    writer.writerow(CSV_FIELDS)
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


def _nl_number(value: str) -> str:
    return value.replace(".", ",")


def _basis_text(statement: Mapping[str, Any]) -> str:
    """The split basis in words, figures in Dutch notation."""
    basis = statement["basis"]
    key = basis["key"]
    unit = basis["unit"].replace("_", " ")
    if _is_funder(statement):
        parts = []
        if statement.get("frameworks"):
            parts.append(f"Care registered under {', '.join(statement['frameworks'])} is charged in full to this "
                         "funder, one line per registration.")
        for c in statement.get("contributions") or ():
            parts.append(f"Contribution {c.get('label') or ''} of {format_euro_nl(c['amount_cents'])}: "
                         f"{format_euro_nl(c['applied_cents'])} used so far, first statements first, before "
                         "the municipalities pay the rest.")
        return " ".join(parts) + (f" This close, all funders together: charged "
                                  f"{format_euro_nl(basis['close_total_cents'])}.")
    if KEYS[key].host_pays_all if key in KEYS else False:
        text = (f"Key host_pays: the host municipality pays all care ({_nl_number(basis['total_count'])} "
                f"attributed minutes); the residence breakdown below is for information only.")
    else:
        text = (f"Key {key}: this municipality {_nl_number(basis['municipality_count'])} of "
                f"{_nl_number(basis['total_count'])} {unit} (share {_nl_number(basis['share'])}); "
                f"participating {basis['participating_days']} of {basis['period_days']} days of the period.")
    rates = ", ".join(format_euro_nl(rate) for rate in basis.get("hourly_rates_cents", []))
    if rates:
        text += f" Hourly rate(s): {rates}."
    text += (f" This close, all municipalities together: care {format_euro_nl(basis['close_care_cost_cents'])}, "
             f"corrections {format_euro_nl(basis['close_corrections_cost_cents'])}, charged "
             f"{format_euro_nl(basis['close_total_cents'])}.")
    if basis.get("education_contribution_total_cents"):
        text += (f" Education contribution {format_euro_nl(basis['education_contribution_total_cents'])} in "
                 f"total, deducted from the first statements first, before the split.")
    if statement.get("absorbed_from"):
        text += (" Absorbed by the host for municipalities not participating: "
                 f"{', '.join(statement['absorbed_from'])}.")
    if statement.get("non_participating"):
        text += " Marked lines: this municipality did not participate on those days (policy: bill)."
    return text


def _line_rows(statement: Mapping[str, Any], max_lines: int) -> list[list[Any]]:
    lines = list(statement["lines"])
    shown, hidden = (lines, []) if len(lines) <= max_lines else (lines[:max_lines - 1], lines[max_lines - 1:])
    rows: list[list[Any]] = [[_p("Kind", _SMALL), _p("Description", _SMALL), _p("Basis", _SMALL),
                              _p("Amount", _RIGHT)]]
    for line in shown:
        kind = KIND_LABELS.get(line["kind"], line["kind"])
        if line.get("non_participating"):
            kind += " *"
        basis = f"{_nl_number(line['basis']['value'])} {line['basis']['unit'].replace('_', ' ')}"
        rows.append([_p(kind, _SMALL), _p(line["description"], _SMALL), _p(basis, _SMALL),
                     _p(format_euro_nl(line["amount_cents"]), _RIGHT)])
    if hidden:
        # One page is the promise; the full list is in the JSON and CSV of the same statement.
        rows.append([_p("Other", _SMALL),
                     _p(f"{len(hidden)} further lines, listed in the CSV and JSON of this statement", _SMALL),
                     _p("", _SMALL), _p(format_euro_nl(sum(l["amount_cents"] for l in hidden)), _RIGHT)])
    return rows


def _story(statement: Mapping[str, Any], region_name: str, max_lines: int) -> list[Any]:
    school = statement.get("school_name")
    school_text = f"{school} ({statement['school_id']})" if school else statement["school_id"]
    meta = [
        ["Funder" if _is_funder(statement) else "Municipality", _municipality_label(statement)],
        ["Statement id", statement["statement_id"]],
        ["Issue date", statement["issued_on"]],
        ["Arrangement", statement["arrangement_id"]],
        ["School", school_text],
        ["Period", f"{statement['period_start']} to {statement['period_end']}"],
        ["Settlement key", statement["key"]],
    ]
    meta_table = Table([[_p(k, _SMALL), _p(v, _BODY)] for k, v in meta], colWidths=[32 * mm, None])
    meta_table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"),
                                    ("BOTTOMPADDING", (0, 0), (-1, -1), 1), ("TOPPADDING", (0, 0), (-1, -1), 1)]))

    lines_table = Table(_line_rows(statement, max_lines),
                        colWidths=[30 * mm, _CONTENT_WIDTH - 30 * mm - 32 * mm - 28 * mm, 32 * mm, 28 * mm],
                        repeatRows=1)
    lines_table.setStyle(TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black),
        ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.lightgrey),
        ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
    ]))
    deductions = [[_p("Education contribution deducted", _BODY),
                   _p(format_euro_nl(statement.get("education_contribution_cents", 0)), _RIGHT)]]
    if statement.get("contributions_deducted_cents"):
        deductions.append([_p("Paid by contributions (waterfall) deducted", _BODY),
                           _p(format_euro_nl(statement["contributions_deducted_cents"]), _RIGHT)])
    total_table = Table(
        [*deductions,
         [Paragraph("<b>Total to pay</b>" if statement["total_cents"] >= 0 else "<b>Total to receive (credit)</b>",
                    _BODY),
          Paragraph(f"<b>{escape(format_euro_nl(statement['total_cents']))}</b>", _RIGHT)]],
        colWidths=[_CONTENT_WIDTH - 40 * mm, 40 * mm])
    total_table.setStyle(TableStyle([("LINEABOVE", (0, -1), (-1, -1), 0.8, colors.black)]))

    story: list[Any] = [
        _p(region_name, _TITLE),
        _p("Settlement statement: care in school time (zorg in onderwijstijd)", _HEADING),
        Spacer(1, 4 * mm),
        meta_table,
        Spacer(1, 4 * mm),
        _p("Lines", _HEADING),
        lines_table,
        Spacer(1, 2 * mm),
        total_table,
        Spacer(1, 4 * mm),
        _p("Split basis", _HEADING),
        _p(_basis_text(statement), _SMALL),
    ]
    breakdown = statement.get("breakdown") or []
    if breakdown:
        rows = [[_p("Residence", _SMALL), _p("Attributed minutes", _SMALL), _p("Participating", _SMALL),
                 _p("Cost (information)", _RIGHT)]]
        for row in breakdown[:max_lines]:
            label = f"{row['municipality_name']} ({row['municipality']})" if row.get("municipality_name") \
                else row["municipality"]
            rows.append([_p(label, _SMALL), _p(_nl_number(row["attributed_minutes"]), _SMALL),
                         _p("yes" if row["participating"] else "no", _SMALL),
                         _p(format_euro_nl(row["cost_cents"]), _RIGHT)])
        table = Table(rows, colWidths=[70 * mm, 35 * mm, 30 * mm, None])
        table.setStyle(TableStyle([("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black)]))
        story += [Spacer(1, 3 * mm), _p("Residence breakdown (not charged separately)", _HEADING), table]
    story += [
        Spacer(1, 5 * mm),
        _p("Amounts in euros. Every figure is reproducible from the registrations; an issued statement never "
           "changes: later registrations and voids for this period appear as correction lines on a later "
           f"statement. Lines marked * concern days the municipality did not participate. "
           f"Statement {statement['statement_id']}, issued {statement['issued_on']}.", _SMALL),
    ]
    return story


def _build(statement: Mapping[str, Any], region_name: str, max_lines: int) -> tuple[bytes, int]:
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=20 * mm, rightMargin=20 * mm, topMargin=18 * mm,
                            bottomMargin=18 * mm, title=f"Settlement statement {statement['statement_id']}",
                            author=region_name, subject=f"Statement for {_municipality_label(statement)}")
    doc.build(_story(statement, region_name, max_lines))
    return buffer.getvalue(), doc.page


def statement_pdf(statement: Mapping[str, Any], region_name: str) -> bytes:
    """A one-page A4 letter a finance department files: who, what period, the lines, the total, the basis.

    If all lines do not fit on one page, the last rows are folded into one "further lines" row with their
    sum, so the page still adds up to the total (the CSV and JSON list every line).
    """
    # More than ~30 rows never fit; start there so a statement with hundreds of corrections renders fast.
    max_lines = min(max(len(statement["lines"]), len(statement.get("breakdown") or []), 1), 30)
    while True:
        pdf, pages = _build(statement, region_name, max_lines)
        if pages == 1 or max_lines <= 2:
            return pdf
        max_lines -= 1 if max_lines <= 12 else max_lines // 4
