"""A statement line's `description`, in words, from the line's structured fields (docs/architecture.md).

The domain keeps figures and facts on a line (kind, registration, dates, the period the care covers, who was
absorbed, which contribution); the words are chosen here, in the reader's language, when a statement is read.
The English text is also what a statement stores as issued (`description`), because webhook receivers and
older readers have that field: `describe_line(..., translator("en"))` at issue time.

Lines of statements issued before their lines carried these fields (schema version 2 and older) keep the
description they were issued with, in every language: `renderable` says which lines can be put in words again.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

from services.settlement.routing import UNKNOWN_RESIDENCE
from shared.i18n import Translator, translator

# The fields a line of each kind needs before it can be described again (absent on older statements).
_NEEDS: dict[str, tuple[str, ...]] = {
    "care": ("coverage_start",),
    "framework_care": ("date", "minutes", "pupils"),
    "absorbed": ("coverage_start", "absorbed_from_name"),
    "correction": ("date", "late_void"),
    "contribution": ("contribution_label", "contribution_funder_name"),
    "education_contribution": (),
}


def _split_words(key: str, tr: Translator) -> str:
    """How the care of a period is split under a settlement key, as a care line says it."""
    _ = tr._
    words = {
        "residence_hours": _("for resident pupils, per care day"),
        "residence_pupils": _("pro rata to pupil-days"),
        "youth_share": _("pro rata to youth population"),
        "fixed_shares": _("pro rata to agreed shares"),
        "host_pays": _("for all pupils (host pays)"),
        "per_pupil_norm": _("at the norm per school day of each collective pupil below the care-need threshold"),
    }
    return words.get(key, key)


def _shape(line: Mapping[str, Any]) -> str:
    return "framework_care" if line["kind"] == "care" and line.get("registration_id") else line["kind"]


def renderable(line: Mapping[str, Any]) -> bool:
    """Whether the line carries what `describe_line` needs (lines of older statements may not)."""
    return all(field in line for field in _NEEDS.get(_shape(line), ("-",)))


def _period(tr: Translator, start: str, end: str) -> str:
    return tr._("{start}..{end}").format(start=tr.date(start), end=tr.date(end))


def describe_line(line: Mapping[str, Any], statement: Mapping[str, Any], tr: Translator) -> str:
    """The line in words. `statement` gives the settlement `key` and the `period_end` the care runs to."""
    _ = tr._
    kind = _shape(line)
    if kind == "framework_care":
        return _("Registration {registration_id} of {date}: {minutes} minutes for {pupils}").format(
            registration_id=line["registration_id"], date=tr.date(line["date"]), minutes=tr.number(line["minutes"]),
            pupils=", ".join(line["pupils"]))
    if kind == "contribution":
        label = line["contribution_label"] or line["contribution_funder_name"]
        own = line.get("contribution_funder") == statement.get("funder") and \
            statement.get("funder_kind", "municipality") != "municipality"
        if own and Decimal(line["exact_cents"]) > 0:
            return _("Contribution {label} towards the care cost before the municipalities "
                     "(first statements first)").format(label=label)
        return _("Contribution {label} ({funder}) deducted").format(label=label,
                                                                      funder=line["contribution_funder_name"])
    if kind in ("care", "absorbed"):
        coverage = _period(tr, line["coverage_start"], statement["period_end"])
        if line["coverage_start"] < statement["period_start"]:
            coverage = _("{period} (includes days before the period that no close covered)").format(period=coverage)
        if kind == "absorbed":
            code = line["absorbed_from"]
            whom = _("pupils without a recorded residence") if code == UNKNOWN_RESIDENCE else \
                " ".join(part for part in (code, line["absorbed_from_name"]) if part)
            return _("Absorbed by the host: care {coverage} for {whom}, not participating").format(
                coverage=coverage, whom=whom)
        text = _("Care {coverage} {split}").format(coverage=coverage, split=_split_words(statement["key"], tr))
        if line.get("non_participating"):
            text += _(" (municipality not participating on these days: billed per policy)")
        return text
    if kind == "correction":
        template = _("Correction for closed period {period}: registration {registration_id} of {date} voided after "
                     "close") if line["late_void"] else \
            _("Correction for closed period {period}: registration {registration_id} of {date} registered after "
              "close")
        text = template.format(period=_period(tr, line["original_period_start"], line["original_period_end"]),
                               registration_id=line["registration_id"], date=tr.date(line["date"]))
        if line.get("absorbed_from"):
            text += _(" (absorbed for {code}, not participating)").format(code=line["absorbed_from"])
        if line.get("non_participating"):
            text += _(" (not participating: billed per policy)")
        return text
    return _("Education contribution deducted (first statements first)")


def localise(statement: Mapping[str, Any], lang: str | None) -> dict[str, Any]:
    """The statement with every describable line's `description` in `lang` (figures untouched)."""
    tr = translator(lang)
    lines = [{**line, "description": describe_line(line, statement, tr)} if renderable(line) else dict(line)
             for line in statement["lines"]]
    return {**statement, "lines": lines, "language": tr.lang}


__all__ = ["describe_line", "localise", "renderable"]
