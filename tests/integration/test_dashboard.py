"""The coordinator's dashboard in a real headless Chromium against the real stack: log in through the form,
see every pot with its status colour, and the DOM text through `--dump-dom`.

Needs Debian's chromium (`make system-deps`); without it these tests fail saying so, they do not skip.
"""
from __future__ import annotations

import io
import secrets
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tests.integration.browser import Page, dump_dom
from tests.integration.budget_helpers import put_arrangement, wait_pot
from tests.integration.client import Api, Region

pytestmark = pytest.mark.stack

STATUS_RGB = {"ok": (0x2E, 0x7D, 0x32), "warning": (0xF9, 0xA8, 0x25), "exceeded": (0xC6, 0x28, 0x28)}
# One hour at EUR 65 (6,500 cents) against these caps: 6.5%, 81% and 108% of the cap.
CAPS = {"ok": 100_000, "warning": 8_000, "exceeded": 6_000}
# The "ok" pot plans 300 minutes for g1 in the week of Monday 2 March 2026 (the registrations' day): 5 school
# days x 60 = 300 min = 5.0 h planned to date; the first registration delivers 1.0 h of it (20%, below the
# capacity alert ratio 0.5: shown red), the second 1.5 h more (2.5 h, 50%).
PLAN = [{"group_id": "g1", "from": "2026-03-02", "until": "2026-03-06", "minutes_per_week": 300}]


def _pots_in_each_status(api: Api) -> dict[str, Region]:
    regions = {}
    for status, cap in CAPS.items():
        region = Region(api).build(pupils_per_group=1)
        put_arrangement(region, cap_cents=cap, **({"plan": PLAN} if status == "ok" else {}))
        assert api.post("/hours", json=region.registration(f"dash-{secrets.token_hex(4)}")).status_code == 202
        regions[status] = region
    for status, region in regions.items():
        pot = wait_pot(api, region.arrangement_id, lambda p: p["registrations"] == 1)
        assert pot["status"] == status
    return regions


def _near(pixel: tuple[int, ...], rgb: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], rgb))


def test_dashboard_login_shows_every_pot_with_its_status_colour(api: Api, tmp_path: Path) -> None:
    regions = _pots_in_each_status(api)
    with Page() as page:
        page.goto(f"{api.stack.gateway_url}/dashboard?lang=en")  # Dutch by default
        page.wait_for("!document.getElementById('login').hidden")  # no token yet: the login form
        page.type_into("#token", api.token)
        page.click("#login button")
        ours = " && ".join(f"!!document.querySelector('tr.pot[data-arrangement=\"{r.arrangement_id}\"]')"
                           for r in regions.values())
        page.wait_for(ours)
        assert page.evaluate("sessionStorage.getItem('zorgpot.token')") == api.token
        assert page.evaluate("document.getElementById('login').hidden") is True
        rows = {}
        for status, region in regions.items():
            selector = f"tr.pot[data-arrangement=\"{region.arrangement_id}\"]"
            rows[status] = page.evaluate(f"""(() => {{
                const row = document.querySelector('{selector}');
                const r = row.querySelector('.fill').getBoundingClientRect();
                const g1 = row.querySelector('.grp[data-group="g1"]');
                return {{status: row.dataset.status, text: row.innerText, svg: !!row.querySelector('svg polyline.cum'),
                        fill: [r.x + window.scrollX, r.y + window.scrollY, r.width, r.height],
                        group: g1 ? g1.innerText : null, low: !!(g1 && g1.querySelector('.gfig.hot'))}};
            }})()""")
        # The page keeps polling on its own: a registration made now shows up without any reload.
        updated = regions["ok"]
        assert api.post("/hours", json=updated.registration(f"dash-{secrets.token_hex(4)}", minutes=90)).status_code == 202
        wait_pot(api, updated.arrangement_id, lambda p: p["registrations"] == 2)
        page.wait_for(f"document.querySelector('tr.pot[data-arrangement=\"{updated.arrangement_id}\"]')"
                      ".innerText.includes('2 registrations')", timeout=30)
        # Planned against delivered per group follows too: 1.0 + 1.5 = 2.5 h of 5.0 h, 50%: no longer red.
        updated_group = page.evaluate(f"""(() => {{
            const g1 = document.querySelector('tr.pot[data-arrangement="{updated.arrangement_id}"] .grp[data-group="g1"]');
            return {{text: g1.innerText, low: !!g1.querySelector('.gfig.hot')}};
        }})()""")
        assert "g1 2.5 h of 5.0 h planned (50%)" in updated_group["text"] and not updated_group["low"]
        # The bars where they are now (the update may have moved the columns), right before the screenshot.
        for status, region in regions.items():
            rows[status]["fill"] = page.evaluate(f"""(() => {{
                const r = document.querySelector('tr.pot[data-arrangement="{region.arrangement_id}"] .fill')
                    .getBoundingClientRect();
                return [r.x + window.scrollX, r.y + window.scrollY, r.width, r.height];
            }})()""")
        png = page.screenshot()
        page.click("#logout")  # forgets the token and shows the login form again
        page.wait_for("!document.getElementById('login').hidden && document.getElementById('board').hidden")
        assert page.evaluate("sessionStorage.getItem('zorgpot.token')") is None
    (tmp_path / "dashboard.png").write_bytes(png)

    assert "g1 1.0 h of 5.0 h planned (20%)" in rows["ok"]["group"] and rows["ok"]["low"]
    assert "planned to date EUR 325.00 of EUR 325.00" in rows["ok"]["text"]  # 300 min at EUR 65.00
    assert "g1 1.0 h delivered, nothing planned to date" in rows["warning"]["group"] and "no plan" in rows["warning"]["text"]
    for status, row in rows.items():
        assert row["status"] == status
        assert row["svg"], "the weekly chart is drawn"
        assert "EUR 65.00" in row["text"]  # one hour at EUR 65, as the spent figure
        assert {"ok": "within budget", "warning": "warning", "exceeded": "cap exceeded"}[status] in row["text"]
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.width >= 1000 and image.height >= 600
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 50, "the page is not blank"
    for status, row in rows.items():
        x, y, width, height = (int(v) for v in row["fill"])
        assert width > 0 and height > 0, f"{status}: the bar has a fill"
        bar = image.crop((x + 1, y + 1, x + width - 1, y + height - 1))
        colours = Counter(bar.getdata())
        share = sum(n for rgb, n in colours.items() if _near(rgb, STATUS_RGB[status])) / sum(colours.values())
        assert share > 0.8, f"{status}: bar is {colours.most_common(3)}, not {STATUS_RGB[status]}"


def test_dashboard_dom_and_a_clear_message_for_other_tokens(api: Api) -> None:
    regions = _pots_in_each_status(api)
    url = f"{api.stack.gateway_url}/dashboard?lang=en"  # Dutch by default
    served = api.http.get(url)
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/html")
    policy = dict(part.strip().split(" ", 1) for part in served.headers["content-security-policy"].split(";"))
    assert policy["script-src"] == "'self'"  # only its own script files, no inline script
    assert api.http.get(f"{api.stack.gateway_url}/app/static/dashboard.js").headers["content-type"].startswith(
        "text/javascript")

    dom = dump_dom(f"{url}#token={api.token}")
    for status, region in regions.items():
        assert f'data-arrangement="{region.arrangement_id}" data-status="{status}"' in dom
    assert "EUR 65.00" in dom and "Burn ratio" in dom and 'class="chart"' in dom
    assert 'data-group="g1"' in dom and "1.0 h of 5.0 h planned (20%)" in dom  # the ok pot's plan
    assert "live, updated" in dom

    school = api.token_for("school", regions["ok"].school_id)
    municipality = api.token_for("municipality", "GM0984")
    for token, message in ((school, "This is a school token"), (municipality, "A municipality token reads"),
                           ("zp_not-a-token", "That token is not valid")):
        dom = dump_dom(f"{url}#token={token}")
        assert "This dashboard is for the coordinating municipality" in dom or "not valid" in dom
        assert message in dom
        assert '<tbody id="rows"></tbody>' in dom  # nothing of the pots is shown
        assert regions["ok"].arrangement_id not in dom
