"""Language of documents and pages (design.md section 12): Dutch by default, English on request.

Texts are written in English in the code, marked for extraction (`_("...")`, `pgettext(context, "...")`), and
translated through a gettext catalogue managed with Babel: `shared/locale/nl/LC_MESSAGES/zorgpot.po` (extraction
config `babel.cfg`; README "Language" says how to update it). The catalogue is compiled from the `.po` in memory
the first time a language is asked for (Babel's pofile/mofile), so there is no build step and no `.mo` to get
out of date; a message without a Dutch translation falls back to its English source text (and
tests/unit/test_i18n.py fails on it).

Only human text and documents are localised: JSON figures stay cents and ISO dates.
"""
from __future__ import annotations

import datetime as dt
import gettext
import io
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal

DEFAULT_LANGUAGE = "nl"
LANGUAGES = ("nl", "en")
LOCALE_DIR = Path(__file__).resolve().parent / "locale"  # package data: installed with `shared`
DOMAIN = "zorgpot"
_LOCALES = {"nl": "nl_NL", "en": "en_GB"}
# Dates in documents: Dutch 29-11-2026; English keeps ISO 8601 (unambiguous, and what issued texts say).
_DATE_PATTERNS = {"nl": "dd-MM-yyyy", "en": "yyyy-MM-dd"}


def language(value: str | None) -> str:
    """A supported language for `value` ("en", "en-GB", "NL", ...); anything else is the default, Dutch."""
    primary = (value or "").strip().lower().replace("_", "-").split("-")[0]
    return primary if primary in LANGUAGES else DEFAULT_LANGUAGE


def negotiate(lang: str | None = None, accept_language: str | None = None) -> str:
    """`?lang=` wins; else the first supported language of an `Accept-Language` header by quality; else Dutch."""
    if lang:
        return language(lang)
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag))
    for _, _, tag in sorted(ranked):
        primary = tag.lower().split("-")[0]
        if primary in LANGUAGES:
            return primary
    return DEFAULT_LANGUAGE


@lru_cache(maxsize=None)
def _catalogue(lang: str) -> gettext.NullTranslations:
    if lang == "en":  # the source language
        return gettext.NullTranslations()
    with open(LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po", "rb") as po:
        catalog = read_po(po, locale=lang, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries are left out, as msgfmt does
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


@dataclass(frozen=True)
class Translator:
    """Texts and figures in one language. `_` and `pgettext` are the names Babel extracts."""
    lang: str

    @property
    def locale(self) -> str:
        return _LOCALES[self.lang]

    def _(self, message: str) -> str:
        return _catalogue(self.lang).gettext(message)

    gettext = _

    def pgettext(self, context: str, message: str) -> str:
        return _catalogue(self.lang).pgettext(context, message)

    def money(self, cents: int) -> str:
        """`123456` -> `€ 1.234,56` (nl) or `€1,234.56` (en). A plain space: searchable, copyable text."""
        return format_currency(Decimal(cents) / 100, "EUR", locale=self.locale).replace("\xa0", " ")

    def date(self, value: str | dt.date) -> str:
        """An ISO date as `29-11-2026` (nl) or `2026-11-29` (en)."""
        day = dt.date.fromisoformat(value) if isinstance(value, str) else value
        return format_date(day, _DATE_PATTERNS[self.lang], locale=self.locale)

    def number(self, value: str | int | Decimal) -> str:
        """An exact decimal as text ("37.5", "0.333333") in the language's notation, every digit kept."""
        number = Decimal(str(value))
        places = max(0, -number.as_tuple().exponent) if isinstance(number.as_tuple().exponent, int) else 0
        return format_decimal(number, format="#,##0." + "0" * places if places else "#,##0",
                              locale=self.locale, group_separator=False)


def _column_names(tr: Translator) -> dict[str, str]:
    """Every document's CSV column names, spelled out once so Babel extracts them (context "csv column")."""
    names = ("statement_id", "municipality", "period_start", "period_end", "kind", "description", "basis_unit",
             "basis_value", "amount", "registration_id", "original_period_start", "original_period_end",
             "absorbed_from", "non_participating", "funder", "pupils", "final_settlement_id", "arrangement_id",
             "school_id", "version", "issued_on", "supersedes", "year", "hours", "delivered", "capped", "paid",
             "balance")
    translated = (
        tr.pgettext("csv column", "statement_id"), tr.pgettext("csv column", "municipality"),
        tr.pgettext("csv column", "period_start"), tr.pgettext("csv column", "period_end"),
        tr.pgettext("csv column", "kind"), tr.pgettext("csv column", "description"),
        tr.pgettext("csv column", "basis_unit"), tr.pgettext("csv column", "basis_value"),
        tr.pgettext("csv column", "amount"), tr.pgettext("csv column", "registration_id"),
        tr.pgettext("csv column", "original_period_start"), tr.pgettext("csv column", "original_period_end"),
        tr.pgettext("csv column", "absorbed_from"), tr.pgettext("csv column", "non_participating"),
        tr.pgettext("csv column", "funder"), tr.pgettext("csv column", "pupils"),
        tr.pgettext("csv column", "final_settlement_id"), tr.pgettext("csv column", "arrangement_id"),
        tr.pgettext("csv column", "school_id"), tr.pgettext("csv column", "version"),
        tr.pgettext("csv column", "issued_on"), tr.pgettext("csv column", "supersedes"),
        tr.pgettext("csv column", "year"), tr.pgettext("csv column", "hours"),
        tr.pgettext("csv column", "delivered"), tr.pgettext("csv column", "capped"),
        tr.pgettext("csv column", "paid"), tr.pgettext("csv column", "balance"),
    )
    return dict(zip(names, translated))


def csv_header(fields: tuple[str, ...], lang: str | None = None) -> list[str]:
    """A CSV header row in `lang`: each column's name (fields are the English names) translated."""
    names = _column_names(translator(lang))
    missing = [field for field in fields if field not in names]
    if missing:
        raise KeyError(f"CSV columns without a name in shared/i18n.py: {missing}")
    return [names[field] for field in fields]


# A page text in the gateway's static HTML (services/gateway/static/*.html): `{{English text}}`, whitespace
# collapsed; the gateway puts in the translation (services/gateway/dashboard.py). The pages' scripts mark theirs
# `_("English text")` and get the translations from the page (babel.cfg extracts both).
PAGE_TEXT = re.compile(r"\{\{(.+?)\}\}", re.S)


def page_text(raw: str) -> str:
    return " ".join(raw.split())


def extract_page(fileobj, keywords, comment_tags, options):  # noqa: ANN001, ANN201 (Babel's extractor signature)
    """Babel extraction method for the pages' HTML (babel.cfg): every `{{...}}` text, without context."""
    text = fileobj.read().decode("utf-8")
    for match in PAGE_TEXT.finditer(text):
        yield text.count("\n", 0, match.start()) + 1, "_", page_text(match.group(1)), []


@lru_cache(maxsize=None)
def translator(lang: str | None = None) -> Translator:
    """The translator for a language; unknown or missing languages get Dutch."""
    return Translator(language(lang))


__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "PAGE_TEXT", "Translator", "csv_header", "extract_page", "language",
           "negotiate", "page_text", "translator"]
