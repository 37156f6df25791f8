"""Funders other than municipalities through the real stack (design.md section 9): the Wlz office gets Wlz care
in full, per registration; a law the arrangement routes to nobody is rejected by the hours service; the
Midden-Limburg waterfall; funder tokens read only their own statements; bad funder input gets a 4xx naming it.
"""
from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import httpx
import pytest

from tests.integration.client import Api
from tests.integration.test_settlement import School, new_codes, settlement, wait_applied

pytestmark = pytest.mark.stack

D = dt.date


def funder(api: Api, kind: str, name: str) -> str:
    funder_id = f"{kind.split('_')[0].upper()}-{secrets.token_hex(3)}"
    reply = api.put(f"/funders/{funder_id}", {"name": name, "kind": kind})
    assert reply.status_code == 200, reply.text
    return funder_id


def send(school: School, registrations: list[dict[str, Any]]) -> None:
    reply = school.api.post("/hours/batch", json=registrations)
    assert reply.status_code == 200 and reply.json()["rejected"] == [], reply.text


def statements_by_funder(api: Api, reply: httpx.Response) -> dict[str, dict[str, Any]]:
    out = {}
    for summary in reply.json()["statements"]:
        full = api.get(f"/statements/{summary['statement_id']}")
        assert full.status_code == 200, full.text
        statement = full.json()
        assert statement["total_cents"] == summary["total_cents"] == sum(l["amount_cents"] for l in statement["lines"])
        out[summary["funder"]] = statement
    return out


def test_e_wlz_care_goes_to_the_wlz_office_per_pupil_and_untagged_care_to_the_residence(api: Api) -> None:
    venray, horst = new_codes(2)
    wlz = funder(api, "wlz_office", "Zorgkantoor Noord-Limburg")
    school = School(api, venray, {venray: ("Venray", None), horst: ("Horst aan de Maas", None)},
                    {"key": "residence_hours", "frameworks": {"wlz": wlz}})
    school.pupil("p-horst", [(horst, D(2025, 1, 1), None)]).pupil("p-venray", [(venray, D(2025, 1, 1), None)])
    school.arrangement()
    tag = secrets.token_hex(3)
    region = school.region
    send(school, [region.registration(f"wlz-{tag}", day=D(2025, 3, 3), minutes=90, funding="wlz", pupils=["p-horst"]),
                  region.registration(f"jw-{tag}", day=D(2025, 3, 4), minutes=60, pupils=["p-venray"])])
    wait_applied(api.stack, school.arrangement_id, 2)

    reply = school.close(D(2025, 3, 1), D(2025, 3, 31))
    assert reply.status_code == 201, reply.text
    # 90 min x EUR 65.00/h = EUR 97.50 to the Wlz office, 60 min = EUR 65.00 to Venray, Horst nothing.
    assert {s["funder"]: s["total_cents"] for s in reply.json()["statements"]} == {wlz: 9750, venray: 6500}
    statements = statements_by_funder(api, reply)
    office = statements[wlz]
    assert (office["funder_kind"], office["funder_name"], office["municipality"]) == \
        ("wlz_office", "Zorgkantoor Noord-Limburg", None)
    assert [(l["registration_id"], l["pupils"], l["date"], l["minutes"], l["amount_cents"]) for l in office["lines"]] \
        == [(f"wlz-{tag}", ["p-horst"], "2025-03-03", "90", 9750)]
    assert statements[venray]["funder_kind"] == "municipality" and statements[venray]["municipality"] == venray
    assert settlement(api.stack, "/internal/invariant", arrangement_id=school.arrangement_id)["ok"]

    # The Wlz office's own token: its statement (JSON, CSV, PDF) and nothing else.
    with api.as_token(api.token_for("funder", wlz)) as office_api:
        assert [s["statement_id"] for s in office_api.get("/statements").json()] == [office["statement_id"]]
        assert office_api.get(f"/statements/{office['statement_id']}").status_code == 200
        csv_reply = office_api.get(f"/statements/{office['statement_id']}", params={"format": "csv"})
        assert csv_reply.status_code == 200 and "p-horst" in csv_reply.text and "97.50" in csv_reply.text
        assert office_api.get(f"/statements/{office['statement_id']}", params={"format": "pdf"}).content[:4] == b"%PDF"
        assert office_api.get(f"/statements/{statements[venray]['statement_id']}").status_code == 404  # no leak
        assert office_api.get("/statements", params={"funder": venray}).status_code == 403
        assert office_api.post("/hours/batch", json=[]).status_code == 403
        assert office_api.get(f"/funders/{wlz}").json()["kind"] == "wlz_office"
    with api.as_token(api.token_for("municipality", venray)) as municipality:
        assert municipality.get(f"/statements/{office['statement_id']}").status_code == 404
    listed = api.get("/statements", params={"funder": wlz})
    assert [s["statement_id"] for s in listed.json()] == [office["statement_id"]]


def test_a_law_the_arrangement_routes_to_nobody_is_rejected_naming_it(api: Api) -> None:
    venray, = new_codes(1)
    school = School(api, venray, {venray: ("Venray", None)}, {"key": "residence_hours"})
    school.pupil("p1", [(venray, D(2025, 1, 1), None)]).arrangement()
    rid = f"zvw-{secrets.token_hex(3)}"
    send(school, [school.region.registration(rid, day=D(2025, 3, 3), minutes=30, funding="zvw")])
    status = api.wait_status(rid, {"accepted", "rejected"})
    assert status["status"] == "rejected"
    assert f"funding 'zvw' is not routed by arrangement '{school.arrangement_id}'" in status["reason"]


def test_f_midden_limburg_pays_education_first_then_the_subsidy_then_the_municipalities(api: Api) -> None:
    west, east = new_codes(2)
    education = funder(api, "school_partnership", "Samenwerkingsverband Midden-Limburg")
    bel = funder(api, "subsidy_fund", "BEL-subsidie")
    school = School(api, west, {west: ("Roermond", 7812), east: ("Leudal", 6188)},
                    {"key": "youth_share", "municipalities": [west, east],
                     "contributions": [{"funder": education, "amount_cents": 2_000_000, "label": "onderwijs"},
                                       {"funder": bel, "amount_cents": 10_000_000, "label": "BEL"}]},
                    rate_cents=7000, start=D(2025, 1, 1), end=D(2025, 6, 30))
    school.pupil("p1", [(west, D(2025, 1, 1), None)]).arrangement()
    # EUR 140,000.00 = 200 registrations x 600 min x EUR 70.00/h.
    tag = secrets.token_hex(3)
    school.register([(f"ml-{tag}-{i}", D(2025, 1, 1) + dt.timedelta(days=i % 181), 600, None) for i in range(200)])
    wait_applied(api.stack, school.arrangement_id, 200)
    reply = school.close(D(2025, 1, 1), D(2025, 6, 30))
    assert reply.status_code == 201, reply.text
    # Education EUR 20,000.00, BEL EUR 100,000.00; the residual EUR 20,000.00 by 7812 : 6188 (of 14,000):
    # 20,000.00 x 0.558 = EUR 11,160.00 and x 0.442 = EUR 8,840.00.
    assert {s["funder"]: s["total_cents"] for s in reply.json()["statements"]} == \
        {education: 2_000_000, bel: 10_000_000, west: 1_116_000, east: 884_000}
    statements = statements_by_funder(api, reply)
    assert statements[bel]["contributions"][0]["applied_cents"] == 10_000_000
    # 120,000.00 x 0.558 = 66,960.00 paid by the contributions on West's statement; no education contribution.
    assert (statements[west]["contributions_deducted_cents"], statements[west]["education_contribution_cents"]) \
        == (6_696_000, 0)
    assert settlement(api.stack, "/internal/invariant", arrangement_id=school.arrangement_id)["ok"]


def test_bad_funder_input_is_refused_naming_the_problem(api: Api) -> None:
    venray, = new_codes(1)
    unknown = f"NOBODY-{secrets.token_hex(3)}"
    school = School(api, venray, {venray: ("Venray", None)}, {"key": "residence_hours", "frameworks": {"wlz": unknown}})
    reply = api.put(f"/arrangements/{school.arrangement_id}", {
        "school_id": school.school_id, "group_ids": ["g1"], "start": "2025-01-01", "end": "2025-12-31",
        "rates": [{"from": "2025-01-01", "hourly_rate_cents": 6500}], "cap_cents": 100,
        "settlement": school.policy})
    assert reply.status_code == 422 and f"funder '{unknown}' is not registered" in reply.text
    assert api.put("/funders/GM0984", {"name": "x", "kind": "other"}).status_code == 422
    bad_kind = api.put("/funders/some-fund", {"name": "x", "kind": "bank"})
    assert bad_kind.status_code == 422 and "kind" in bad_kind.text
    token = api.post("/tokens", json={"role": "funder", "subject": unknown})
    assert token.status_code == 422 and "not registered" in token.text
    as_contribution = api.put(f"/arrangements/{school.arrangement_id}", {
        "school_id": school.school_id, "group_ids": ["g1"], "start": "2025-01-01", "end": "2025-12-31",
        "rates": [{"from": "2025-01-01", "hourly_rate_cents": 6500}], "cap_cents": 100,
        "settlement": {"key": "residence_hours", "contributions": [{"funder": venray, "amount_cents": 5}]}})
    assert as_contribution.status_code == 422 and "municipality is paid through the key" in as_contribution.text
