"""The gateway's HTTP contract: authentication, tenant scoping, errors that name the problem."""
from __future__ import annotations

import secrets

import httpx
import pytest

from tests.integration.client import Api, Region

pytestmark = pytest.mark.stack


def test_health_is_open_and_everything_else_needs_a_token(api: Api) -> None:
    base = api.stack.gateway_url
    assert httpx.get(f"{base}/health").status_code == 200
    for method, path in (("GET", "/hours/x"), ("POST", "/hours"), ("POST", "/tokens"),
                         ("PUT", "/municipalities/GM0984")):
        reply = httpx.request(method, f"{base}/api/v1{path}", json={})
        assert reply.status_code == 401, (path, reply.status_code)
        assert reply.headers["www-authenticate"] == "Bearer"
        bad = httpx.request(method, f"{base}/api/v1{path}", json={}, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and "invalid" in bad.json()["detail"]


def test_tokens_are_scoped_and_revocation_is_immediate(api: Api) -> None:
    region = Region(api).build()
    other = Region(api).build()
    school_token = api.token_for("school", region.school_id)
    with api.as_token(school_token) as school:
        assert school.post("/hours", json=region.registration(f"own-{secrets.token_hex(3)}")).status_code == 202
        foreign = school.post("/hours", json=other.registration(f"foreign-{secrets.token_hex(3)}"))
        assert foreign.status_code == 403 and "own school" in foreign.json()["detail"]
        # Coordinator-only resources.
        assert school.put("/municipalities/GM0984", {"name": "x"}).status_code == 403
        assert school.post("/tokens", json={"role": "coordinator"}).status_code == 403
        # Another school's registration is indistinguishable from a missing one.
        rid = f"theirs-{secrets.token_hex(3)}"
        assert api.post("/hours", json=other.registration(rid)).status_code == 202
        assert school.get(f"/hours/{rid}").status_code == 404
        assert school.post(f"/hours/{rid}/void", json={"reason": "x"}).status_code == 404
        # Its own groups it may manage, another school's not.
        assert school.put(f"/schools/{region.school_id}/groups/g9", {"name": "new"}).status_code == 200
        assert school.put(f"/schools/{other.school_id}/groups/g9", {"name": "x"}).status_code == 403
        # A batch item for another school is reported, the rest kept.
        mixed = school.post("/hours/batch", json=[region.registration(f"mix-{secrets.token_hex(3)}"),
                                                   other.registration(f"mix-{secrets.token_hex(3)}")]).json()
        assert mixed["accepted"] == 1 and mixed["rejected"][0]["index"] == 1
    token_reply = api.post("/tokens", json={"role": "school", "subject": region.school_id}).json()
    with api.as_token(token_reply["token"]) as revoked:
        assert revoked.get(f"/hours/{'x'}").status_code == 404
        assert api.http.delete(f"/tokens/{token_reply['id']}").status_code == 204
        assert revoked.get("/hours/x").status_code == 401
    municipality = api.token_for("municipality", "GM0984")
    with api.as_token(municipality) as town:
        assert town.post("/hours", json=region.registration("m-1")).status_code == 403


def test_validation_errors_name_each_field(api: Api) -> None:
    region = Region(api).build()
    reply = api.post("/hours", json=region.registration("bad id with spaces", minutes=0, task_category=12,
                                                           pupils=["111222333"], date="2999-01-01"))
    assert reply.status_code == 422
    problems = {e["field"]: e["msg"] for e in reply.json()["detail"]}
    assert set(problems) >= {"registration_id", "minutes", "task_category", "pupils", "date"}
    assert "education tasks" in problems["task_category"]
    assert "BSN" in problems["pupils"]
    assert "future" in problems["date"]
    # Reference data: a school in an unknown municipality, a pupil in an unknown group.
    school = api.put(f"/schools/s-{secrets.token_hex(3)}", {"name": "x", "municipality": "GM9999"})
    assert school.status_code == 422 and "GM9999" in school.json()["detail"][0]["msg"]
    pupil = api.put(f"/schools/{region.school_id}/pupils/p-x", {
        "group_id": "nope", "enrolled_from": "2025-08-01", "residence": [{"municipality": "GM0984", "from": "2025-08-01"}]})
    assert pupil.status_code == 422 and pupil.json()["detail"][0]["field"] == "group_id"
    bsn_pupil = api.put(f"/schools/{region.school_id}/pupils/123456782", {
        "group_id": "g1", "enrolled_from": "2025-08-01", "residence": [{"municipality": "GM0984", "from": "2025-08-01"}]})
    assert bsn_pupil.status_code == 422 and "BSN" in bsn_pupil.text
    bad_code = api.put("/municipalities/AB1234", {"name": "x"})
    assert bad_code.status_code == 422


def test_overlapping_arrangement_for_a_group_is_refused(api: Api) -> None:
    region = Region(api).build()
    reply = api.put(f"/arrangements/second-{region.school_id}", {
        "school_id": region.school_id, "group_ids": ["g1"], "start": "2026-01-01", "end": "2026-12-31",
        "rates": [{"from": "2026-01-01", "hourly_rate_cents": 7000}], "cap_cents": 100,
        "settlement": {"key": "host_pays"}})
    assert reply.status_code == 409 and "g1" in reply.json()["detail"]


def test_batch_body_problems_are_clear(api: Api) -> None:
    region = Region(api).build()
    unsupported = api.post("/hours/batch", content=b"<xml/>", headers={"content-type": "application/xml"})
    assert unsupported.status_code == 415 and "content type" in unsupported.json()["detail"]
    not_array = api.post("/hours/batch", json={"registration_id": "x"})
    assert not_array.status_code == 422 and "array" in not_array.json()["detail"]
    broken = api.post("/hours/batch", content=b"[{", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "JSON" in broken.json()["detail"]
    too_big = api.post("/hours/batch", content=b" " * (9 * 1024 * 1024), headers={"content-type": "application/json"})
    assert too_big.status_code == 413 and "limit" in too_big.json()["detail"]
    csv_body = ("\ufeffregistration_id;school_id;group_id;date;minutes;care_worker;task_category\n"
                f"csv-{secrets.token_hex(3)};{region.school_id};g1;2026-03-02;60,0;cw;4\n").encode()
    semicolons = api.post("/hours/batch", content=csv_body, headers={"content-type": "text/csv"})
    assert semicolons.status_code == 200 and semicolons.json()["accepted"] == 1, semicolons.text
