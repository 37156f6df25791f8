"""The /app pages in a real browser against the real stack: Playwright driving Debian's Chromium (no
`playwright install`: the machines have no internet; tests/integration/browser.py finds the binary).

Each role's main task, clicked through: a school uploads a CSV file with one bad row and sees that row's error and
its registrations' status; a municipality downloads its statement as a PDF; the coordinator closes a period, sees
the statements and issues a quarterly report. Screenshots go to the test's tmp dir, and to docs/ with
ZORGPOT_DOCS_SCREENSHOTS=1 (the README's images).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from pathlib import Path
from typing import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.integration.browser import chromium
from tests.integration.client import Api, Region

pytestmark = pytest.mark.stack

DOCS = Path(__file__).resolve().parents[2] / "docs"
MARCH = {"period_start": "2026-03-01", "period_end": "2026-03-31"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--disable-gpu", "--disable-quic"])
        yield browser
        browser.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True, locale="nl-NL")
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def _login(page: Page, api: Api, token: str, lands_on: str) -> None:
    page.goto(f"{api.stack.gateway_url}/app")
    page.fill("#token", token)
    page.click("#login button")
    page.wait_for_url(f"**/app/{lands_on}")
    assert page.evaluate("sessionStorage.getItem('zorgpot.token')") == token


def _screenshot(page: Page, tmp_path: Path, name: str) -> None:
    png = page.screenshot(full_page=True)
    (tmp_path / name).write_bytes(png)
    if os.environ.get("ZORGPOT_DOCS_SCREENSHOTS") == "1":
        (DOCS / name).write_bytes(png)


def _accepted_care(api: Api, region: Region) -> None:
    """96 minutes for pupil g1-p0 on 2 March 2026, accepted by the hours service."""
    rid = f"web-{secrets.token_hex(4)}"
    assert api.post("/hours", json=region.registration(rid, minutes=96, pupils=["g1-p0"])).status_code == 202
    api.wait_status(rid, {"accepted"})


def test_school_uploads_a_file_and_sees_the_bad_rows_error(api: Api, page: Page, tmp_path: Path) -> None:
    region = Region(api).build(pupils_per_group=2)
    school = api.token_for("school", region.school_id)
    # 205 rows: two batches of the page's 200, the bad one (0 minutes) in the second, on line 204 of the file.
    header = "registration_id,school_id,group_id,date,minutes,care_worker,task_category,funding,pupils"
    prefix = f"up-{secrets.token_hex(3)}"
    lines = [header]
    for i in range(205):
        day = dt.date(2026, 2, 2) + dt.timedelta(days=i % 40)
        minutes = 0 if i == 202 else 30 + i % 4 * 15
        lines.append(f"{prefix}-{i:03d},{region.school_id},g{1 + i % 2},{day},{minutes},PSW-{i % 3},{1 + i % 7},"
                     f"jeugdwet,")
    path = tmp_path / "uren.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    _login(page, api, school, "school")
    expect(page.locator(f'#pots tr.pot[data-arrangement="{region.arrangement_id}"]')).to_be_visible()
    page.set_input_files("#file", str(path))
    page.click("#upload")
    expect(page.locator("#progress-text")).to_contain_text("205 van 205 rijen verstuurd")
    assert page.eval_on_selector("#progress", "p => [p.value, p.max]") == [205, 205]
    bad = page.locator("#errors tr.bad")
    expect(bad).to_have_count(1)
    cells = bad.locator("td").all_inner_texts()
    assert cells[:3] == ["204", f"{prefix}-202", "minutes"], cells
    assert "greater than or equal to 1" in cells[3]
    expect(page.locator("#message")).to_contain_text("204 ontvangen, 0 dubbel, 1 afgewezen")
    # The uploaded registrations' status: every one accepted by the hours service, with its cost.
    expect(page.locator("#registrations-summary")).to_have_text(
        "204 registraties: 204 geaccepteerd; de laatste 50 staan hieronder, de afgewezen altijd", timeout=120_000)
    first = page.locator(f'#registrations tr[data-registration="{prefix}-204"]')
    expect(first).to_have_attribute("data-status", "accepted")
    expect(first).to_contain_text("€")
    _screenshot(page, tmp_path, "app-school.png")

    # The same file again: every row a duplicate, the bad row still refused; nothing counted twice.
    page.click("#upload")
    expect(page.locator("#message")).to_contain_text("0 ontvangen, 204 dubbel, 1 afgewezen")


def test_school_uploads_ndjson_and_a_line_that_is_not_json_is_named(api: Api, page: Page, tmp_path: Path) -> None:
    region = Region(api).build(pupils_per_group=1)
    school = api.token_for("school", region.school_id)
    prefix = f"nd-{secrets.token_hex(3)}"
    good = [json.dumps(region.registration(f"{prefix}-{i}", minutes=45)) for i in range(3)]
    # A blank line (skipped), then a line cut off: line 5 of the file.
    path = tmp_path / "uren.ndjson"
    path.write_text("\n".join([good[0], good[1], "", good[2], good[2][:30]]) + "\n", encoding="utf-8")

    _login(page, api, school, "school")
    page.set_input_files("#file", str(path))
    page.click("#upload")
    expect(page.locator("#progress-text")).to_contain_text("4 van 4 rijen verstuurd: 3 ontvangen")
    bad = page.locator("#errors tr.bad")
    expect(bad).to_have_count(1)
    cells = bad.locator("td").all_inner_texts()
    assert cells[0] == "5" and cells[2] == "item" and cells[3].startswith("not valid JSON:"), cells
    expect(page.locator("#registrations-summary")).to_have_text("3 registraties: 3 geaccepteerd", timeout=60_000)


def test_municipality_downloads_its_statement_pdf(api: Api, page: Page, tmp_path: Path) -> None:
    region = Region(api).build(pupils_per_group=1)
    _accepted_care(api, region)
    close = api.post("/settlements/close", json={"arrangement_id": region.arrangement_id, **MARCH})
    assert close.status_code == 201, close.text
    # g1-p0 lives in Horst aan de Maas (GM1507): its statement carries the care.
    statement = next(s for s in close.json()["statements"] if s["municipality"] == "GM1507")
    token = api.token_for("municipality", "GM1507")

    _login(page, api, token, "statements")
    row = page.locator(f'#statements tr[data-statement="{statement["statement_id"]}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("01-03-2026 t/m 31-03-2026")
    expect(page.locator("#who")).to_have_text("GM1507")
    with page.expect_download() as info:
        row.locator('[data-download="pdf"]').click()
    download = info.value
    assert download.suggested_filename == statement["statement_id"].replace(":", "_") + ".pdf"
    pdf = Path(download.path()).read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000
    expect(page.locator("#message")).to_contain_text("is gedownload")
    with page.expect_download() as info:
        row.locator('[data-download="csv"]').click()
    assert info.value.suggested_filename.endswith(".csv")
    _screenshot(page, tmp_path, "app-municipality.png")
    # Another municipality's statements are not on its page (the API answers only its own).
    assert page.locator("#statements tr[data-statement]").evaluate_all(
        "rows => rows.every(r => r.innerText.includes('GM1507'))")


def test_coordinator_closes_a_period_and_sees_the_statements(api: Api, page: Page, tmp_path: Path) -> None:
    region = Region(api).build(pupils_per_group=1)
    _accepted_care(api, region)

    page.set_viewport_size({"width": 1600, "height": 900})  # the pots board's eight columns
    _login(page, api, api.token, "coordinator")
    expect(page.locator(f'tr.pot[data-arrangement="{region.arrangement_id}"]')).to_be_visible()
    expect(page.locator("#state")).to_contain_text("live, bijgewerkt")
    expect(page.locator(f'#close-arrangement option[value="{region.arrangement_id}"]')).to_have_count(1)
    page.select_option("#close-arrangement", region.arrangement_id)
    page.fill("#close-start", MARCH["period_start"])
    page.fill("#close-end", MARCH["period_end"])
    page.click("#close-button")
    expect(page.locator("#message")).to_contain_text("Periode afgesloten")
    closed = page.locator("#closed-statements tr[data-statement]")
    expect(closed.first).to_be_visible()
    listed = api.get("/statements", params={"arrangement_id": region.arrangement_id}).json()
    assert listed and closed.count() == len(listed)
    for s in listed:
        row = page.locator(f'#closed-statements tr[data-statement="{s["statement_id"]}"]')
        expect(row).to_contain_text(s["municipality"])
        expect(page.locator(f'#statements tr[data-statement="{s["statement_id"]}"]')).to_be_visible()  # all statements
    expect(page.locator("#deadletters tbody tr").first).to_be_visible()

    # A quarterly accountability report over this pot, and its PDF.
    page.select_option("#report-arrangements", [region.arrangement_id])
    page.fill("#report-period", "2026-Q1")
    page.click("#report-button")
    expect(page.locator("#message")).to_contain_text("Rapport uitgebracht")
    report = page.locator("#reports tr[data-report]", has_text=region.arrangement_id)
    expect(report).to_have_count(1)
    expect(report).to_contain_text("01-01-2026 t/m 31-03-2026")
    with page.expect_download() as info:
        report.locator('[data-report-download="pdf"]').click()
    assert Path(info.value.path()).read_bytes().startswith(b"%PDF")
    _screenshot(page, tmp_path, "app-coordinator.png")

    # The same period again: the same statements, said so.
    page.click("#close-button")
    expect(page.locator("#message")).to_contain_text("Deze periode was al afgesloten")


def test_pages_and_files_are_served_without_a_token_and_hold_no_data(api: Api) -> None:
    base = api.stack.gateway_url
    for path in ("/app", "/app/school", "/app/statements", "/app/coordinator", "/dashboard"):
        reply = api.http.get(f"{base}{path}", headers={"Authorization": ""})
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html"), path
        assert "script-src 'self'" in reply.headers["content-security-policy"]
        assert "<script>" not in reply.text  # no inline script
    for path in ("/app/nothing", "/app/static/nothing.js", "/app/static/..%2Fapp.py", "/app/static/.hidden"):
        assert api.http.get(f"{base}{path}").status_code == 404, path
    assert api.http.get(f"{base}/app/static/school.js").headers["content-type"].startswith("text/javascript")


def test_pages_are_dutch_by_default_and_english_on_request(api: Api, browser: Browser, page: Page) -> None:
    """The pages' texts come from the gettext catalogue: Dutch by default, English with ?lang=en or a browser that
    asks for English; ?lang= survives the move from /app to the role's page, and downloads follow the page's
    language, not the browser's."""
    base = api.stack.gateway_url
    region = Region(api).build(pupils_per_group=1)
    _accepted_care(api, region)
    close = api.post("/settlements/close", json={"arrangement_id": region.arrangement_id, **MARCH})
    assert close.status_code == 201, close.text
    statement = next(s for s in close.json()["statements"] if s["municipality"] == "GM1507")
    school, municipality = api.token_for("school", region.school_id), api.token_for("municipality", "GM1507")

    def log_in(p: Page, token: str, query: str, lands_on: str) -> None:
        p.goto(f"{base}/app{query}")
        p.fill("#token", token)
        p.click("#login button")
        p.wait_for_url(f"{base}/app/{lands_on}{query}")

    def csv_header(p: Page) -> str:
        with p.expect_download() as info:
            p.locator(f'tr[data-statement="{statement["statement_id"]}"] [data-download="csv"]').click()
        return Path(info.value.path()).read_text(encoding="utf-8-sig").splitlines()[0]

    # A Dutch browser (the fixture's nl-NL): Dutch, and English with ?lang=en.
    page.goto(f"{base}/app")
    expect(page.locator("#login h2")).to_have_text("Inloggen")
    log_in(page, school, "?lang=en", "school")
    assert page.evaluate("document.documentElement.lang") == "en"
    expect(page.locator("#upload-panel h2").first).to_have_text("Upload care registrations")
    expect(page.locator("#logout")).to_have_text("Log out")
    expect(page.locator("#pots thead")).to_contain_text("Spent of the cap")
    page.goto(f"{base}/app/school")
    expect(page.locator("#upload-panel h2").first).to_have_text("Urenregistraties uploaden")
    expect(page.locator("#pots tr.pot")).to_contain_text("binnen budget")

    # A browser that asks for English (Accept-Language: en-US): English pages, Dutch ones with ?lang=nl, and a
    # Dutch page downloads Dutch documents.
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True, locale="en-US")
    english = context.new_page()
    english.set_default_timeout(60_000)
    try:
        log_in(english, municipality, "", "statements")
        expect(english.locator("#statements thead")).to_contain_text("Statement")
        row = english.locator(f'tr[data-statement="{statement["statement_id"]}"]')
        expect(row).to_contain_text("2026-03-01 to 2026-03-31")
        assert "description" in csv_header(english)
        english.goto(f"{base}/app/statements?lang=nl")
        expect(english.locator("h2")).to_contain_text("Mijn afrekeningen")
        expect(row).to_contain_text("01-03-2026 t/m 31-03-2026")
        header = csv_header(english)
        assert "omschrijving" in header and "description" not in header
        expect(english.locator("#message")).to_contain_text("is gedownload")
    finally:
        context.close()
