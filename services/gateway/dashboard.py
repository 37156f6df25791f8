"""Gateway routes: the web pages. `/dashboard` (the coordinator's live budget dashboard, English) and `/app`
(a page per role, Dutch): plain HTML, CSS and JavaScript files in services/gateway/static/, no build step and
nothing fetched from elsewhere (the machines have no internet).

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

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

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


@router.get("/dashboard")
async def dashboard() -> FileResponse:
    return _file("dashboard.html")


@router.get("/app")
async def app_index() -> FileResponse:
    return _file("index.html")


@router.get("/app/static/{name}")
async def app_static(name: str) -> FileResponse:
    # One flat directory: a name with a path separator or a leading dot is nothing of ours.
    if "/" in name or "\\" in name or name.startswith("."):
        raise HTTPException(404, "not found")
    return _file(name)


@router.get("/app/{page}")
async def app_page(page: str) -> FileResponse:
    if page not in PAGES:
        raise HTTPException(404, "not found")
    return _file(PAGES[page])
