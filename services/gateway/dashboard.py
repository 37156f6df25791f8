"""Gateway routes: the web pages. `/dashboard` (the coordinator's live budget dashboard) and `/app` (a page per
role): plain HTML, CSS and JavaScript files in services/gateway/static/, no build step and nothing fetched from
elsewhere (the machines have no internet).

Language (design.md section 12): Dutch by default, English with `?lang=en` on the page's URL or the browser's
`Accept-Language` (services/gateway/language.py). The texts are English in the static files, translated through
the gettext catalogue (shared/i18n.py): the HTML's `{{English text}}` is replaced here, and the page carries the
translations of its scripts' `_("English text")` as a JSON data block (`<script type="application/json"
id="messages">`, data, not script, so the Content-Security-Policy stays as it is) that i18n.js reads. The
scripts keep `?lang=` when they move between pages and pass the page's language to downloads (`&lang=`).

The pages hold no data. `/app` asks for a token, keeps it in sessionStorage (gone when the tab closes), finds
out what the token may do by asking the JSON API with it and opens the page of its role:

- `/app/school`: upload a CSV or NDJSON file to POST /api/v1/hours/batch in batches of 200 rows with a progress
  bar, every rejected row with its field and message, the status of the uploaded registrations, the school's pots;
- `/app/statements` (a municipality or another funder): its statements with PDF and CSV downloads, and the
  webhook delivery status where the API shows it;
- `/app/coordinator`: the pots (the dashboard's board), closing a period, statements with delivery status,
  alerts and dead letters.

A token can also be handed over in the URL fragment (`/app#token=...`; the fragment never reaches the server,
and the page removes it at once). Every page is served with a Content-Security-Policy that allows only the
scripts of this directory; the pages call only this origin.
"""
from __future__ import annotations

import html
import io
import json
import re
from functools import lru_cache
from pathlib import Path

from babel.messages.extract import extract
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse, Response

from services.gateway.language import document_language
from shared.i18n import PAGE_TEXT, page_text, translator

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).parent / "static"
PAGES = {"school": "school.html", "statements": "statements.html", "coordinator": "coordinator.html"}
MEDIA = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
HEADERS = {
    "Cache-Control": "no-store",
    # Style attributes carry the bars' widths; scripts only from files of this directory, no inline script.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "connect-src 'self'; img-src 'self' data: blob:; form-action 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _file(name: str) -> FileResponse:
    path = STATIC / name
    if path.suffix not in MEDIA or not path.is_file():
        raise HTTPException(404, "not found")
    return FileResponse(path, media_type=MEDIA[path.suffix], headers=HEADERS)


# A part two pages share (the pots board of /dashboard and /app/coordinator), one directory, no nesting.
INCLUDE = re.compile(r"<!--include ([A-Za-z0-9-]+\.html)-->")


@lru_cache(maxsize=None)
def _script_messages(lang: str) -> str:
    """The scripts' texts (`_("...")` in static/*.js) and their translations, as JSON for the page."""
    if lang == "en":  # the source language: i18n.js shows the text as written
        return "{}"
    tr = translator(lang)
    texts: set[str] = set()
    for path in sorted(STATIC.glob("*.js")):
        texts.update(message for _, message, _, _ in extract("javascript", io.BytesIO(path.read_bytes()),
                                                             keywords={"_": None}) if isinstance(message, str))
    # "<" escaped: the block must not be able to end its <script> element.
    return json.dumps({text: tr._(text) for text in sorted(texts)}, ensure_ascii=False).replace("<", "\\u003c")


@lru_cache(maxsize=None)
def _render(name: str, lang: str) -> bytes:
    tr = translator(lang)
    text = INCLUDE.sub(lambda m: (STATIC / m.group(1)).read_text(encoding="utf-8").rstrip("\n"),
                       (STATIC / name).read_text(encoding="utf-8"))
    text = PAGE_TEXT.sub(lambda m: html.escape(tr._(page_text(m.group(1))), quote=True), text)
    text = text.replace('<html lang="en">', f'<html lang="{lang}">', 1)
    block = f'<script type="application/json" id="messages">{_script_messages(lang)}</script>\n'
    return text.replace("<script src=", block + "<script src=", 1).encode("utf-8")


def _page(name: str, lang: str) -> Response:
    return Response(_render(name, lang), media_type=MEDIA[".html"],
                    headers={**HEADERS, "Content-Language": lang, "Vary": "Accept-Language"})


@router.get("/dashboard")
async def dashboard(lang: str = Depends(document_language)) -> Response:
    return _page("dashboard.html", lang)


@router.get("/app")
async def app_index(lang: str = Depends(document_language)) -> Response:
    return _page("index.html", lang)


@router.get("/app/static/{name}")
async def app_static(name: str) -> FileResponse:
    # One flat directory: a name with a path separator or a leading dot is nothing of ours.
    if "/" in name or "\\" in name or name.startswith("."):
        raise HTTPException(404, "not found")
    return _file(name)


@router.get("/app/{page}")
async def app_page(page: str, lang: str = Depends(document_language)) -> Response:
    if page not in PAGES:
        raise HTTPException(404, "not found")
    return _page(PAGES[page], lang)
