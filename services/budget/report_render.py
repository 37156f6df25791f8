"""Accountability report rendering: a long-format CSV and a multi-page PDF with charts (reportlab.graphics: no
new dependency). The document comes from `services.budget.report.report_document` and is the single source of
every figure; these functions only lay it out. Pure: strings and bytes in memory.

Language: Dutch by default, English with `lang="en"`. Every human text goes through `_()` below, with the English
text as the message id and the Dutch in `_NL`: one place, shaped like gettext, so the project's i18n catalogue
(shared/i18n.py, being added at the same time) can take these messages over by replacing `_`.
"""
from __future__ import annotations

import csv
import datetime as dt
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
from shared.money import format_decimal, format_euro, format_euro_nl

LANGS = ("nl", "en")

# -- every human text of the report, English message id -> Dutch ----------------------------------------------
_NL = {
    "Accountability report": "Verantwoordingsrapportage",
    "quarterly": "kwartaalrapportage", "annual": "jaarrapportage", "final": "eindrapportage",
    "Report": "Rapportage", "Period": "Periode", "Issue date": "Datum van uitgifte", "Arrangements": "Regelingen",
    "Totals": "Totalen", "Arrangement": "Regeling", "School": "School", "Term": "Looptijd", "Cap": "Plafond",
    "Registrations": "Registraties", "Hours": "Uren", "Spent": "Besteed", "Planned (installments)":
    "Gepland (termijnen)", "Planned (capacity)": "Gepland (capaciteit)", "Paid": "Betaald",
    "Individual equivalent": "Individueel equivalent", "Savings against individual decisions":
    "Besparing t.o.v. individuele beschikkingen", "Pupils reached": "Bereikte leerlingen",
    "Pupils with care on 3 or more days": "Leerlingen met zorg op 3 of meer dagen", "Care workers":
    "Zorgmedewerkers", "Non-resident share (minutes)": "Aandeel niet-inwoners (minuten)",
    "Non-resident share (pupils)": "Aandeel niet-inwoners (leerlingen)", "Per budget year": "Per begrotingsjaar",
    "Budget year": "Begrotingsjaar", "Per group": "Per groep", "Group": "Groep", "Planned hours": "Geplande uren",
    "Delivered hours": "Geleverde uren", "Delivery": "Levering", "Per task category": "Per taakcategorie",
    "Task category": "Taakcategorie", "Per funding law": "Per financieringswet", "Funding law": "Financieringswet",
    "Hours per week per group": "Uren per week per groep", "Spent against planned per budget year":
    "Besteed tegenover gepland per begrotingsjaar", "Capacity gaps": "Capaciteitstekorten", "Week": "Week",
    "Weeks in which a group received less than {ratio} of its planned hours:":
    "Weken waarin een groep minder dan {ratio} van de geplande uren kreeg:",
    "none": "geen", "hours": "uren", "euros": "euro", "unknown": "onbekend", "unspecified": "niet opgegeven", "to": "t/m",
    "Amounts in euros, hours with two decimals. Every figure is reproducible from the registrations, the plan and "
    "the payments; an issued report never changes. Spent is the exact cost rounded once over the running total, "
    "so quarters add up to their year.":
    "Bedragen in euro's, uren met twee decimalen. Elk cijfer is te herleiden tot de registraties, de planning en "
    "de betalingen; een uitgegeven rapportage verandert nooit. Besteed is de exacte kostprijs, eenmaal afgerond "
    "over het lopende totaal, zodat de kwartalen optellen tot hun jaar.",
    # CSV headers
    "report_id": "rapport_id", "arrangement_id": "regeling", "section": "onderdeel", "key": "sleutel",
    "figure": "grootheid", "value": "waarde",
}


def _(text: str, lang: str = "nl") -> str:
    return _NL.get(text, text) if lang == "nl" else text


def _date(iso: str, lang: str) -> str:
    day = dt.date.fromisoformat(iso)
    return day.strftime("%d-%m-%Y") if lang == "nl" else iso


def _euro(cents: int | None, lang: str) -> str:
    if cents is None:
        return "-"
    return format_euro_nl(cents) if lang == "nl" else format_euro(cents)


def _hours(minutes: int, lang: str) -> str:
    hundredths = (minutes * 100 * 2 + 60) // (60 * 2)
    return format_decimal(hundredths, decimal_comma=lang == "nl")


def _share(value: float | None, lang: str) -> str:
    if value is None:
        return "-"
    text = f"{value * 100:.1f} %"
    return text.replace(".", ",") if lang == "nl" else text


def _group(name: str, lang: str) -> str:
    return name or _("unknown", lang)


# -- CSV ------------------------------------------------------------------------------------------------------

CSV_FIELDS = ("report_id", "arrangement_id", "section", "key", "figure", "value")
_SECTIONS = (("by_group", "group", "group_id"), ("by_week", "week", "week"),
             ("by_task_category", "task_category", "task_category"), ("by_funding", "funding", "funding"),
             ("by_budget_year", "budget_year", "year"))


def _csv_value(figure: str, value: Any, lang: str) -> tuple[str, str]:
    """`x_cents` becomes `x_eur` in euros (decimal comma in Dutch); shares with 4 decimals."""
    comma = lang == "nl"
    if value is None:
        return figure.removesuffix("_cents") + ("_eur" if figure.endswith("_cents") else ""), ""
    if figure.endswith("_cents"):
        return figure.removesuffix("_cents") + "_eur", format_decimal(int(value), decimal_comma=comma)
    if isinstance(value, float):
        text = f"{value:.4f}"
        return figure, text.replace(".", ",") if comma else text
    return figure, str(value)


def report_csv(doc: Mapping[str, Any], lang: str = "nl") -> str:
    """One figure a row (long format): report_id, arrangement_id ("" for the totals), section (`arrangement`,
    `group`, `week`, `task_category`, `funding`, `budget_year`, `capacity_gap`, `totals`), key (the group id, week,
    ...), figure (the JSON field, `_cents` as `_eur` in euros) and value. Dutch: Dutch headers, ';' and decimal
    comma; English: the JSON names, ',' and decimal point."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";" if lang == "nl" else ",")
    writer.writerow([_(h, lang) for h in CSV_FIELDS])
    rid = doc["report_id"]

    def rows(arrangement_id: str, section: str, key: str, figures: Mapping[str, Any]) -> None:
        for figure, value in figures.items():
            if isinstance(value, (dict, list)):
                if figure == "minutes_by_group":
                    for group, minutes in value.items():
                        writer.writerow([rid, arrangement_id, section, key, f"minutes_group_{group}", minutes])
                continue
            writer.writerow([rid, arrangement_id, section, key, *_csv_value(figure, value, lang)])

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


def hours_per_week_chart(section: Mapping[str, Any], lang: str = "nl") -> Drawing:
    weeks = section["by_week"]
    groups = sorted({g for w in weeks for g in w["minutes_by_group"]})
    series = [(f"{_('Group', lang)} {_group(g, lang)}", [w["minutes_by_group"].get(g, 0) / 60 for w in weeks])
              for g in groups]
    return _chart(f'{_("Hours per week per group", lang)} ({_("hours", lang)})', [w["week"][5:] for w in weeks],
                  series, stacked=True, label_every=max(1, len(weeks) // 26), thousands="." if lang == "nl" else ",")


def spent_planned_chart(section: Mapping[str, Any], lang: str = "nl") -> Drawing:
    years = section["by_budget_year"]
    series = [(_(name, lang), [r[field] / 100 for r in years]) for name, field in (
        ("Planned (installments)", "planned_cents"), ("Planned (capacity)", "planned_capacity_cents"),
        ("Spent", "spent_cents"), ("Paid", "paid_cents"))]
    return _chart(f'{_("Spent against planned per budget year", lang)} ({_("euros", lang)})',
                  [str(r["year"]) for r in years], series, thousands="." if lang == "nl" else ",")


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


def _key_figures(s: Mapping[str, Any], lang: str) -> list[tuple[str, str]]:
    t = lambda text: _(text, lang)  # noqa: E731
    rows = [(t("Registrations"), str(s["registrations"])), (t("Hours"), _hours(s["minutes"], lang)),
            (t("Spent"), _euro(s["spent_cents"], lang)), (t("Planned (installments)"), _euro(s["planned_cents"], lang)),
            (t("Planned (capacity)"), _euro(s["planned_capacity_cents"], lang)), (t("Paid"), _euro(s["paid_cents"], lang))]
    if s.get("individual_equivalent_cents") is not None:
        rows += [(t("Individual equivalent"), _euro(s["individual_equivalent_cents"], lang)),
                 (t("Savings against individual decisions"), _euro(s["savings_cents"], lang))]
    return rows


def _section_story(s: Mapping[str, Any], lang: str) -> list[Any]:
    t = lambda text: _(text, lang)  # noqa: E731
    school = f"{s['school_name']} ({s['school_id']})" if s.get("school_name") else s["school_id"]
    story: list[Any] = [
        _p(f"{t('Arrangement')} {s['arrangement_id']}", _HEADING),
        _pairs([(t("School"), school),
                (t("Term"), f"{_date(s['start'], lang)} {t('to')} {_date(s['end'], lang)}"),
                (t("Period"), f"{_date(s['from'], lang)} {t('to')} {_date(s['until'], lang)}"),
                (t("Cap"), _euro(s["cap_cents"], lang))]
               + _key_figures(s, lang)
               + [(t("Pupils reached"), str(s["pupils_reached"])),
                  (t("Pupils with care on 3 or more days"), str(s["pupils_3_or_more_days"])),
                  (t("Care workers"), str(s["care_workers"])),
                  (t("Non-resident share (minutes)"), _share(s["non_resident_share"], lang)),
                  (t("Non-resident share (pupils)"), _share(s["non_resident_pupil_share"], lang))]),
        Spacer(1, 3 * mm),
        KeepTogether([hours_per_week_chart(s, lang)]),
        Spacer(1, 2 * mm),
        KeepTogether([spent_planned_chart(s, lang)]),
        Spacer(1, 3 * mm),
        _p(t("Per budget year"), _HEADING),
        _table([t("Budget year"), t("Planned (installments)"), t("Planned (capacity)"), t("Spent"), t("Paid"),
                t("Hours")] + ([t("Savings against individual decisions")] if s["individual_rate_cents"] else []),
               [[str(r["year"]), _euro(r["planned_cents"], lang), _euro(r["planned_capacity_cents"], lang),
                 _euro(r["spent_cents"], lang), _euro(r["paid_cents"], lang), _hours(r["minutes"], lang)]
                + ([_euro(r.get("savings_cents"), lang)] if s["individual_rate_cents"] else [])
                for r in s["by_budget_year"]], first_width=24 * mm),
        Spacer(1, 3 * mm),
        _p(t("Per group"), _HEADING),
        _table([t("Group"), t("Planned hours"), t("Delivered hours"), t("Delivery"), t("Spent"), t("Care workers")],
               [[_group(g["group_id"], lang), _hours(g["planned_minutes"], lang), _hours(g["minutes"], lang),
                 _share(g["delivery_ratio"], lang), _euro(g["spent_cents"], lang), str(g["care_workers"])]
                for g in s["by_group"]]),
        Spacer(1, 3 * mm),
        _p(t("Per task category"), _HEADING),
        _table([t("Task category"), t("Hours"), t("Spent")],
               [[str(r["task_category"]), _hours(r["minutes"], lang), _euro(r["spent_cents"], lang)]
                for r in s["by_task_category"]] or [[t("none"), "", ""]]),
        Spacer(1, 3 * mm),
        _p(t("Per funding law"), _HEADING),
        _table([t("Funding law"), t("Hours"), t("Spent")],
               [[t(r["funding"]), _hours(r["minutes"], lang), _euro(r["spent_cents"], lang)]
                for r in s["by_funding"]] or [[t("none"), "", ""]]),
        Spacer(1, 3 * mm),
        _p(t("Capacity gaps"), _HEADING),
        _p(t("Weeks in which a group received less than {ratio} of its planned hours:").format(
            ratio=_share(s["capacity_alert_ratio"], lang)), _SMALL),
    ]
    gaps = s["capacity_gaps"]
    story.append(_table([t("Group"), t("Week"), t("Planned hours"), t("Delivered hours")],
                        [[_group(g["group_id"], lang), g["week"], _hours(g["planned_minutes"], lang),
                          _hours(g["delivered_minutes"], lang)] for g in gaps])
                 if gaps else _p(t("none"), _SMALL))
    return story


def _story(doc: Mapping[str, Any], region_name: str, lang: str) -> list[Any]:
    t = lambda text: _(text, lang)  # noqa: E731
    totals = doc["totals"]
    story: list[Any] = [
        _p(region_name, _TITLE),
        _p(f"{t('Accountability report')}: {t(doc['kind'])} {doc['period']}", _HEADING),
        Spacer(1, 3 * mm),
        _pairs([(t("Report"), doc["report_id"]),
                (t("Period"), f"{_date(doc['period_start'], lang)} {t('to')} {_date(doc['period_end'], lang)}"),
                (t("Issue date"), _date(doc["issued_on"], lang)),
                (t("Arrangements"), ", ".join(doc["arrangement_ids"]))]),
        Spacer(1, 3 * mm),
        _p(t("Totals"), _HEADING),
        _pairs(_key_figures(totals, lang) + [(t("Pupils reached"), str(totals["pupils_reached"]))]),
        Spacer(1, 3 * mm),
        _p(t("Amounts in euros, hours with two decimals. Every figure is reproducible from the registrations, the "
             "plan and the payments; an issued report never changes. Spent is the exact cost rounded once over the "
             "running total, so quarters add up to their year."), _SMALL),
    ]
    for section in doc["arrangements"]:
        story += [PageBreak(), *_section_story(section, lang)]
    return story


def report_pdf(doc: Mapping[str, Any], region_name: str, lang: str = "nl") -> bytes:
    """A4: a cover page with the totals, then per arrangement its figures, the two charts and the tables."""
    buffer = io.BytesIO()
    pdf = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=20 * mm, rightMargin=20 * mm, topMargin=18 * mm,
                            bottomMargin=18 * mm, title=f"{_('Accountability report', lang)} {doc['report_id']}",
                            author=region_name, subject=f"{_(doc['kind'], lang)} {doc['period']}")
    pdf.build(_story(doc, region_name, lang))
    return buffer.getvalue()


__all__ = ["CSV_FIELDS", "LANGS", "hours_per_week_chart", "report_csv", "report_pdf", "spent_planned_chart"]

