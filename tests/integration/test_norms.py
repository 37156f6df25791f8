"""The per-pupil norm (Nijmegen, design.md section 11) through the real stack: PUT /norms, pupils' care need,
an arrangement with key per_pupil_norm; the close charges the norm per collective school day below the
threshold to the pupil's residence; registrations are still taken and only monitor delivery."""
from __future__ import annotations

import datetime as dt
import secrets

import pytest

from tests.integration.client import Api
from tests.integration.test_settlement import School, new_codes, settlement, wait_applied

pytestmark = pytest.mark.stack

D = dt.date


def test_norm_330_minutes_below_720_costs_357_50_for_five_school_days_and_nothing_above(api: Api) -> None:
    nijmegen, beuningen = new_codes(2)
    norm_id = f"norm-{secrets.token_hex(3)}"
    assert api.put(f"/norms/{norm_id}", {"name": "Nijmegen 2025", "versions": [
        {"from": "2025-01-01", "threshold_minutes_per_week": 720, "norm_minutes_per_week": 330}]}).status_code == 200
    school = School(api, nijmegen, {nijmegen: ("Nijmegen", None), beuningen: ("Beuningen", None)},
                    {"key": "per_pupil_norm"})
    for ref, home, need in (("below", beuningen, 300), ("above", nijmegen, 800)):
        # Enrolled Monday 3 March to Friday 7 March 2025: five school days.
        api.ok_put(f"/schools/{school.school_id}/pupils/{ref}", {
            "group_id": "g1", "enrolled_from": "2025-03-03", "enrolled_until": "2025-03-07",
            "residence": [{"municipality": home, "from": "2025-01-01"}],
            "care_need": [{"from": "2025-01-01", "minutes_per_week": need}]})
    body = {"school_id": school.school_id, "group_ids": ["g1"], "start": "2025-01-01", "end": "2025-12-31",
            "rates": [{"from": "2025-01-01", "hourly_rate_cents": 6500}], "cap_cents": 10**9,
            "settlement": {"key": "per_pupil_norm"}}
    missing = api.put(f"/arrangements/{school.arrangement_id}", body)
    assert missing.status_code == 422 and "norm_id" in missing.text
    unknown = api.put(f"/arrangements/{school.arrangement_id}", {**body, "norm_id": "no-such-norm"})
    assert unknown.status_code == 422 and "norm 'no-such-norm' is not registered" in unknown.text
    api.ok_put(f"/arrangements/{school.arrangement_id}", {**body, "norm_id": norm_id})
    # A registration is still taken (delivered care against the norm), but does not change what is charged.
    school.register([(f"nm-{secrets.token_hex(3)}", D(2025, 3, 4), 600, ["below"])])
    wait_applied(api.stack, school.arrangement_id, 1)

    reply = school.close(D(2025, 3, 1), D(2025, 3, 31))
    assert reply.status_code == 201, reply.text
    # 5 school days x 330/5 min = 330 min x EUR 65.00/h = EUR 357.50 to Beuningen; the pupil needing 800 min
    # a week (above the threshold of 720) costs nothing, so Nijmegen gets nothing.
    assert {s["funder"]: s["total_cents"] for s in reply.json()["statements"]} == {beuningen: 35_750}
    statement = api.get(f"/statements/{reply.json()['statements'][0]['statement_id']}").json()
    assert statement["basis"]["unit"] == "norm_minutes" and statement["lines"][0]["basis"]["value"] == "330"
    report = settlement(api.stack, "/internal/invariant", arrangement_id=school.arrangement_id)
    assert report["ok"], report
    # The pot shows the care delivered against the norm: 330 norm minutes (the one pupil below the
    # threshold, five school days), 600 minutes delivered, so a delivery ratio of 600 / 330.
    pot = api.get(f"/pots/{school.arrangement_id}").json()
    assert pot["norm"] == {"norm_id": norm_id, "norm_minutes_to_date": 330, "norm_to_date_cents": 35_750,
                           "delivered_minutes": 600, "delivery_ratio": 600 / 330}
