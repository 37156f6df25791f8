"""Accountability report rendering: a long-format CSV and a multi-page PDF with charts (reportlab.graphics: no
new dependency). The document comes from `services.budget.report.report_document` and is the single source of
every figure; these functions only lay it out. Pure: strings and bytes in memory.

Language: Dutch by default, English with `lang="en"`, through the project's gettext catalogue (shared/i18n.py:
texts marked `tr._("...")` / `tr.pgettext(...)`, Dutch in shared/locale/nl/LC_MESSAGES/zorgpot.po); amounts and
dates in the language's notation (`€ 1.234,56`, `29-11-2026`).
"""
from __future__ import annotations

import csv
import io
from typing import Any, Mapping, Sequence

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.platypus import KeepTogether, PageBreak, SimpleDocTemplate, Spacer, Table, TableStyle

from services.settlement.render import _BODY, _CONTENT_WIDTH, _HEADING, _RIGHT, _SMALL, _TITLE, _p
from shared.i18n import Translator, translator
from shared.money import format_decimal


def _kind(tr: Translator, kind: str) -> str:
    return {"quarterly": tr.pgettext("report kind", "quarterly report"),
            "annual": tr.pgettext("report kind", "annual report"),
            "final": tr.pgettext("report kind", "final report")}.get(kind, kind)


def _euro(tr: Translator, cents: int | None) -> str:
    return "-" if cents is None else tr.money(cents)


def _span(tr: Translator, start: str, end: str) -> str:
    return tr._("{start} to {end}").format(start=tr.date(start), end=tr.date(end))


def _hours(tr: Translator, minutes: int) -> str:
    """Minutes as hours with two decimals (exact for whole quarter hours, else rounded half-up)."""
    hundredths = (minutes * 100 * 2 + 60) // (60 * 2)
    return format_decimal(hundredths, decimal_comma=tr.lang == "nl")


def _share(tr: Translator, value: float | None) -> str:
    if value is None:
        return "-"
    text = f"{value * 100:.1f} %"
    return text.replace(".", ",") if tr.lang == "nl" else text


def _group(tr: Translator, name: str) -> str:
    return name or tr._("unknown")


def _funding(tr: Translator, name: str) -> str:
    return tr.pgettext("report funding", "unspecified") if name == "unspecified" else name


# -- CSV ------------------------------------------------------------------------------------------------------

CSV_FIELDS = ("report_id", "arrangement_id", "section", "key", "figure", "value")
_SECTIONS = (("by_group", "group", "group_id"), ("by_week", "week", "week"),
             ("by_task_category", "task_category", "task_category"), ("by_funding", "funding", "funding"),
             ("by_budget_year", "budget_year", "year"))


def csv_header(lang: str | None = None) -> list[str]:
    tr = translator(lang)
    names = {"report_id": tr.pgettext("report csv column", "report_id"),
             "arrangement_id": tr.pgettext("report csv column", "arrangement_id"),
             "section": tr.pgettext("report csv column", "section"),
             "key": tr.pgettext("report csv column", "key"),
             "figure": tr.pgettext("report csv column", "figure"),
             "value": tr.pgettext("report csv column", "value")}
    return [names[f] for f in CSV_FIELDS]


def _csv_value(figure: str, value: Any, comma: bool) -> tuple[str, str]:
    """`x_cents` becomes `x_eur` in euros (decimal comma in Dutch); shares with 4 decimals."""
    if value is None:
        return figure.removesuffix("_cents") + ("_eur" if figure.endswith("_cents") else ""), ""
    if figure.endswith("_cents"):
        return figure.removesuffix("_cents") + "_eur", format_decimal(int(value), decimal_comma=comma)
    if isinstance(value, float):
        text = f"{value:.4f}"
        return figure, text.replace(".", ",") if comma else text
    return figure, str(value)


def report_csv(doc: Mapping[str, Any], lang: str | None = None) -> str:
    """One figure a row (long format): report_id, arrangement_id ("" for the totals), section (`arrangement`,
    `group`, `week`, `task_category`, `funding`, `budget_year`, `capacity_gap`, `totals`), key (the group id, week,
    ...), figure (the JSON field, `_cents` as `_eur` in euros) and value. Dutch (default): Dutch headers, ';' and
    decimal comma; English: English headers, ',' and decimal point. Cells are codes and figures."""
    tr = translator(lang)
    comma = tr.lang == "nl"
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";" if comma else ",")
    writer.writerow(csv_header(tr.lang))
    rid = doc["report_id"]

    def rows(arrangement_id: str, section: str, key: str, figures: Mapping[str, Any]) -> None:
        for figure, value in figures.items():
            if isinstance(value, (dict, list)):
                if figure == "minutes_by_group":
                    for group, minutes in value.items():
                        writer.writerow([rid, arrangement_id, section, key, f"minutes_group_{group}", minutes])
                continue
            writer.writerow([rid, arrangement_id, section, key, *_csv_value(figure, value, comma)])

    for section in doc["arrangements"]:
        aid = section["arrangement_id"]
        rows(aid, "arrangement", "", section)
        for name, label, key_field in _SECTIONS:
            for row in section[name]:
                rows(aid, label, str(row[key_field]), {k: v for k, v in row.items() if k != key_field})
        for gap in section["capacity_gaps"]:
            rows(aid, "capacity_gap", f"{gap['group_id']}/{gap['week']}",
                 {k: v for k, v in gap.items() if k not in ("group_id", "week")})
    rows("", "totals", "", doc["totals"])
    return out.getvalue()


# -- PDF ------------------------------------------------------------------------------------------------------

_SERIES_COLOURS = (colors.HexColor("#1f77b4"), colors.HexColor("#ff7f0e"), colors.HexColor("#2ca02c"),
                   colors.HexColor("#d62728"), colors.HexColor("#9467bd"), colors.HexColor("#8c564b"))
CHART_HEIGHT = 62 * mm


def _chart(title: str, categories: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], *,
           stacked: bool = False, label_every: int = 1, thousands: str = ".") -> Drawing:
    """A bar chart with its title drawn inside (so it is part of the figure) and a legend under it."""
    width = _CONTENT_WIDTH
    drawing = Drawing(width, CHART_HEIGHT)
    drawing.add(String(0, CHART_HEIGHT - 10, title, fontName="Helvetica-Bold", fontSize=9))
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 40, 32, width - 50, CHART_HEIGHT - 52
    chart.data = [list(values) or [0] for _name, values in series] or [[0]]
    chart.categoryAxis.categoryNames = [c if i % label_every == 0 else "" for i, c in enumerate(categories)] or [""]
    chart.categoryAxis.labels.fontSize = 6
    chart.categoryAxis.labels.angle = 45 if len(categories) > 8 else 0
    chart.categoryAxis.labels.boxAnchor = "ne" if len(categories) > 8 else "n"
    chart.valueAxis.labels.fontSize = 6
    chart.valueAxis.valueMin = 0
    top = max([sum(v) for v in zip(*chart.data)] if stacked else [max(v) for v in chart.data], default=0)
    chart.valueAxis.valueMax = top * 1.1 if top > 0 else 1  # room above the highest bar for its axis label
    chart.valueAxis.labelTextFormat = lambda v: f"{v:,.0f}".replace(",", thousands)
    if stacked:
        chart.categoryAxis.style = "stacked"
    chart.barSpacing = 0 if stacked else 1
    chart.groupSpacing = 2
    for i, _series in enumerate(series):
        chart.bars[i].fillColor = _SERIES_COLOURS[i % len(_SERIES_COLOURS)]
        chart.bars[i].strokeColor = None
    drawing.add(chart)
    legend = Legend()
    legend.x, legend.y = 40, 6
    legend.alignment = "right"
    legend.columnMaximum = 1
    legend.fontSize = 7
    legend.dx = legend.dy = 6
    legend.deltax = 90
    legend.colorNamePairs = [(_SERIES_COLOURS[i % len(_SERIES_COLOURS)], name) for i, (name, _v) in enumerate(series)]
    drawing.add(legend)
    return drawing


def hours_per_week_chart(section: Mapping[str, Any], lang: str | None = None) -> Drawing:
    tr = translator(lang)
    weeks = section["by_week"]
    groups = sorted({g for w in weeks for g in w["minutes_by_group"]})
    series = [(tr._("Group {group}").format(group=_group(tr, g)), [w["minutes_by_group"].get(g, 0) / 60 for w in weeks])
              for g in groups]
    return _chart(tr._("Hours per week per group (hours)"), [w["week"][5:] for w in weeks], series, stacked=True,
                  label_every=max(1, len(weeks) // 26), thousands="." if tr.lang == "nl" else ",")


def spent_planned_chart(section: Mapping[str, Any], lang: str | None = None) -> Drawing:
    tr = translator(lang)
    years = section["by_budget_year"]
    series = [(name, [r[field] / 100 for r in years]) for name, field in (
        (tr._("Planned (installments)"), "planned_cents"), (tr._("Planned (capacity)"), "planned_capacity_cents"),
        (tr._("Spent"), "spent_cents"), (tr._("Paid"), "paid_cents"))]
    return _chart(tr._("Spent against planned per budget year (euros)"), [str(r["year"]) for r in years], series,
                  thousands="." if tr.lang == "nl" else ",")


_TABLE_STYLE = TableStyle([
    ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black),
    ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ("VALIGN", (0, 0), (-1, -1), "TOP"),
])


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], first_width: float = 34 * mm) -> Table:
    cells = [[_p(header[0], _SMALL)] + [_p(h, _RIGHT) for h in header[1:]]]
    cells += [[_p(row[0], _SMALL)] + [_p(c, _RIGHT) for c in row[1:]] for row in rows]
    rest = (_CONTENT_WIDTH - first_width) / max(1, len(header) - 1)
    table = Table(cells, colWidths=[first_width] + [rest] * (len(header) - 1), repeatRows=1)
    table.setStyle(_TABLE_STYLE)
    return table


def _pairs(pairs: Sequence[tuple[str, str]]) -> Table:
    table = Table([[_p(k, _SMALL), _p(v, _BODY)] for k, v in pairs], colWidths=[62 * mm, None])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"),
                               ("BOTTOMPADDING", (0, 0), (-1, -1), 1), ("TOPPADDING", (0, 0), (-1, -1), 1)]))
    return table


def _key_figures(tr: Translator, s: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [(tr._("Registrations"), str(s["registrations"])), (tr._("Hours"), _hours(tr, s["minutes"])),
            (tr._("Spent"), _euro(tr, s["spent_cents"])),
            (tr._("Planned (installments)"), _euro(tr, s["planned_cents"])),
            (tr._("Planned (capacity)"), _euro(tr, s["planned_capacity_cents"])),
            (tr._("Paid"), _euro(tr, s["paid_cents"]))]
    if s.get("individual_equivalent_cents") is not None:
        rows += [(tr._("Individual equivalent"), _euro(tr, s["individual_equivalent_cents"])),
                 (tr._("Savings against individual decisions"), _euro(tr, s["savings_cents"]))]
    return rows


def _section_story(tr: Translator, s: Mapping[str, Any]) -> list[Any]:
    school = f"{s['school_name']} ({s['school_id']})" if s.get("school_name") else s["school_id"]
    savings = bool(s["individual_rate_cents"])
    story: list[Any] = [
        _p(tr._("Arrangement {id}").format(id=s["arrangement_id"]), _HEADING),
        _pairs([(tr._("School"), school), (tr._("Term"), _span(tr, s["start"], s["end"])),
                (tr._("Period"), _span(tr, s["from"], s["until"])), (tr._("Cap"), _euro(tr, s["cap_cents"]))]
               + _key_figures(tr, s)
               + [(tr._("Pupils reached"), str(s["pupils_reached"])),
                  (tr._("Pupils with care on 3 or more days"), str(s["pupils_3_or_more_days"])),
                  (tr._("Care workers"), str(s["care_workers"])),
                  (tr._("Non-resident share (minutes)"), _share(tr, s["non_resident_share"])),
                  (tr._("Non-resident share (pupils)"), _share(tr, s["non_resident_pupil_share"]))]),
        Spacer(1, 3 * mm),
        KeepTogether([hours_per_week_chart(s, tr.lang)]),
        Spacer(1, 2 * mm),
        KeepTogether([spent_planned_chart(s, tr.lang)]),
        Spacer(1, 3 * mm),
        _p(tr._("Per budget year"), _HEADING),
        _table([tr._("Budget year"), tr._("Planned (installments)"), tr._("Planned (capacity)"), tr._("Spent"),
                tr._("Paid"), tr._("Hours")] + ([tr._("Savings against individual decisions")] if savings else []),
               [[str(r["year"]), _euro(tr, r["planned_cents"]), _euro(tr, r["planned_capacity_cents"]),
                 _euro(tr, r["spent_cents"]), _euro(tr, r["paid_cents"]), _hours(tr, r["minutes"])]
                + ([_euro(tr, r.get("savings_cents"))] if savings else [])
                for r in s["by_budget_year"]], first_width=24 * mm),
        Spacer(1, 3 * mm),
        _p(tr._("Per group"), _HEADING),
        _table([tr._("Group"), tr._("Planned hours"), tr._("Delivered hours"), tr._("Delivery"), tr._("Spent"),
                tr._("Care workers")],
               [[_group(tr, g["group_id"]), _hours(tr, g["planned_minutes"]), _hours(tr, g["minutes"]),
                 _share(tr, g["delivery_ratio"]), _euro(tr, g["spent_cents"]), str(g["care_workers"])]
                for g in s["by_group"]]),
        Spacer(1, 3 * mm),
        _p(tr._("Per task category"), _HEADING),
        _table([tr._("Task category"), tr._("Hours"), tr._("Spent")],
               [[str(r["task_category"]), _hours(tr, r["minutes"]), _euro(tr, r["spent_cents"])]
                for r in s["by_task_category"]] or [[tr._("none"), "", ""]]),
        Spacer(1, 3 * mm),
        _p(tr._("Per funding law"), _HEADING),
        _table([tr._("Funding law"), tr._("Hours"), tr._("Spent")],
               [[_funding(tr, r["funding"]), _hours(tr, r["minutes"]), _euro(tr, r["spent_cents"])]
                for r in s["by_funding"]] or [[tr._("none"), "", ""]]),
        Spacer(1, 3 * mm),
        _p(tr._("Capacity gaps"), _HEADING),
        _p(tr._("Weeks in which a group received less than {ratio} of its planned hours:").format(
            ratio=_share(tr, s["capacity_alert_ratio"])), _SMALL),
    ]
    gaps = s["capacity_gaps"]
    story.append(_table([tr._("Group"), tr._("Week"), tr._("Planned hours"), tr._("Delivered hours")],
                        [[_group(tr, g["group_id"]), g["week"], _hours(tr, g["planned_minutes"]),
                          _hours(tr, g["delivered_minutes"])] for g in gaps])
                 if gaps else _p(tr._("none"), _SMALL))
    return story


def _story(tr: Translator, doc: Mapping[str, Any], region_name: str) -> list[Any]:
    totals = doc["totals"]
    story: list[Any] = [
        _p(region_name, _TITLE),
        _p(tr._("Accountability report: {kind} {period}").format(kind=_kind(tr, doc["kind"]), period=doc["period"]),
           _HEADING),
        Spacer(1, 3 * mm),
        _pairs([(tr._("Report"), doc["report_id"]), (tr._("Period"), _span(tr, doc["period_start"], doc["period_end"])),
                (tr._("Issue date"), tr.date(doc["issued_on"])),
                (tr._("Arrangements"), ", ".join(doc["arrangement_ids"]))]),
        Spacer(1, 3 * mm),
        _p(tr._("Totals"), _HEADING),
        _pairs(_key_figures(tr, totals) + [(tr._("Pupils reached"), str(totals["pupils_reached"]))]),
        Spacer(1, 3 * mm),
        _p(tr._("Amounts in euros, hours with two decimals. Every figure is reproducible from the registrations, the "
                "plan and the payments; an issued report never changes. Spent is the exact cost rounded once over "
                "the running total, so quarters add up to their year."), _SMALL),
    ]
    for section in doc["arrangements"]:
        story += [PageBreak(), *_section_story(tr, section)]
    return story


def report_pdf(doc: Mapping[str, Any], region_name: str, lang: str | None = None) -> bytes:
    """A4: a cover page with the totals, then per arrangement its figures, the two charts and the tables."""
    tr = translator(lang)
    buffer = io.BytesIO()
    title = tr._("Accountability report: {kind} {period}").format(kind=_kind(tr, doc["kind"]), period=doc["period"])
    pdf = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=20 * mm, rightMargin=20 * mm, topMargin=18 * mm,
                            bottomMargin=18 * mm, title=title, author=region_name, subject=doc["report_id"])
    pdf.build(_story(tr, doc, region_name))
    return buffer.getvalue()
