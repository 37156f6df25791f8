"""Bad input at the gateway, over real HTTP: every refusal is a 4xx whose `detail` says what was wrong, valid
batch items are kept and invalid ones reported by index, nothing hangs or answers 500.

What test_gateway_api.py (415 for XML, 413 by Content-Length on a batch, a BOM + `;` + decimal-comma CSV
row, single-registration field errors) and tests/unit/test_batch_parsing.py (the parser itself) already
cover is not repeated here.
"""
from __future__ import annotations

import datetime as dt
import secrets
from typing import Any, Iterator

import httpx
import orjson
import pytest

from shared.timeutil import today
from tests.integration.client import Api, Region

pytestmark = pytest.mark.stack

MiB = 1024 * 1024
BSN = "123456782"  # 9 digits passing the 11-check
NOT_BSN = "123456789"  # 9 digits failing it: an acceptable pseudonym


@pytest.fixture(scope="module")
def region(shared_stack) -> Iterator[Region]:  # noqa: ANN001
    with Api(shared_stack) as api:
        yield Region(api).build(pupils_per_group=2)


def rid() -> str:
    return f"bad-{secrets.token_hex(5)}"


def detail(reply: httpx.Response) -> Any:
    assert reply.headers["content-type"].startswith("application/json"), reply.text[:200]
    found = reply.json()["detail"]
    assert found, reply.text
    return found


def messages(reply: httpx.Response) -> str:
    found = detail(reply)
    return found if isinstance(found, str) else " | ".join(f"{e['field']}: {e['msg']}" for e in found)


def by_index(batch: dict[str, Any]) -> dict[int, dict[str, str]]:
    """{index: {field: message}} of a batch answer's rejected items."""
    return {r["index"]: {e["field"]: e["message"] for e in r["errors"]} for r in batch["rejected"]}


# -- size ---------------------------------------------------------------------------------------------

def test_batch_item_count_is_capped(region: Region) -> None:
    body = orjson.dumps([{}] * 10_001)  # 30 kB: under the byte limit, over the item limit
    reply = region.api.post("/hours/batch", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 413
    assert "10001 items" in detail(reply) and "10000" in detail(reply)


def test_body_limit_holds_without_content_length(region: Region) -> None:
    """A chunked upload has no Content-Length for the middleware to check: the batch reader stops it."""
    def chunks() -> Iterator[bytes]:
        for _ in range(9):
            yield b" " * MiB

    reply = region.api.post("/hours/batch", content=chunks(), headers={"content-type": "application/x-ndjson"})
    assert reply.status_code == 413 and "split the batch" in detail(reply)


def test_body_limit_holds_for_a_single_registration(region: Region) -> None:
    reply = region.api.post("/hours", content=b" " * (9 * MiB), headers={"content-type": "application/json"})
    assert reply.status_code == 413 and "limit" in detail(reply)


# -- deep nesting, encodings, empty bodies ------------------------------------------------------------

DEEP = b"[" * 10_000 + b"]" * 10_000


def test_deeply_nested_json_is_refused_not_crashed(region: Region) -> None:
    single = region.api.post("/hours", content=DEEP, headers={"content-type": "application/json"})
    assert single.status_code == 422 and "nested too deeply" in messages(single)
    batch = region.api.post("/hours/batch", content=DEEP, headers={"content-type": "application/json"})
    assert batch.status_code == 422 and "not valid JSON" in messages(batch)
    # In NDJSON the deep line is one bad item; the good line next to it is kept.
    good = region.registration(rid())
    ndjson = region.api.post("/hours/batch", content=DEEP + b"\n" + orjson.dumps(good) + b"\n",
                             headers={"content-type": "application/x-ndjson"})
    assert ndjson.status_code == 200, ndjson.text
    answer = ndjson.json()
    assert answer["received"] == 2 and answer["accepted"] == 1
    assert list(by_index(answer)) == [0] and "line 1" in by_index(answer)[0]["item"]
    # Nesting inside a field of an otherwise fine item is that field's problem.
    nested_field = region.api.post("/hours", json={**region.registration(rid()), "pupils": [[[["x"]]]]})
    assert nested_field.status_code == 422 and {e["field"] for e in detail(nested_field)} == {"pupils.0"}


def test_bodies_that_are_not_utf8(region: Region) -> None:
    latin1 = ('{"registration_id": "x", "care_worker": "J\xf6rg"}').encode("latin-1")
    single = region.api.post("/hours", content=latin1, headers={"content-type": "application/json"})
    assert single.status_code == 422 and "UTF-8" in messages(single)
    batch = region.api.post("/hours/batch", content=b"[" + latin1 + b"]", headers={"content-type": "application/json"})
    assert batch.status_code == 422 and "not valid JSON" in messages(batch)
    csv_body = (f"registration_id,school_id,group_id,date,minutes,care_worker,task_category\n"
                f"{rid()},{region.school_id},g1,2026-03-02,60,J\xf6rg,4\n").encode("latin-1")
    csv = region.api.post("/hours/batch", content=csv_body, headers={"content-type": "text/csv"})
    assert csv.status_code == 422 and "UTF-8" in messages(csv)
    # NDJSON: the one undecodable line is reported, the other kept.
    good = region.registration(rid())
    ndjson = region.api.post("/hours/batch", content=orjson.dumps(good) + b"\n" + latin1 + b"\n",
                             headers={"content-type": "application/x-ndjson"})
    assert ndjson.status_code == 200 and ndjson.json()["accepted"] == 1
    assert list(by_index(ndjson.json())) == [1]


def test_empty_bodies(region: Region) -> None:
    for content_type in ("application/json", None):
        headers = {"content-type": content_type} if content_type else {}
        single = region.api.post("/hours", content=b"", headers=headers)
        assert single.status_code == 422 and "body is empty" in messages(single), (content_type, single.text)
    void = region.api.post(f"/hours/{rid()}/void", content=b"", headers={"content-type": "application/json"})
    assert void.status_code == 422 and "body is empty" in messages(void)
    as_json = region.api.post("/hours/batch", content=b"", headers={"content-type": "application/json"})
    assert as_json.status_code == 422 and "not valid JSON" in messages(as_json)
    as_csv = region.api.post("/hours/batch", content=b"", headers={"content-type": "text/csv"})
    assert as_csv.status_code == 422 and "header row" in messages(as_csv)
    # NDJSON with no lines is an empty batch, said so: nothing received, nothing dropped.
    as_ndjson = region.api.post("/hours/batch", content=b"\n\n", headers={"content-type": "application/x-ndjson"})
    assert as_ndjson.status_code == 200
    assert as_ndjson.json() == {"received": 0, "accepted": 0, "duplicates": 0, "rejected": []}


# -- content types ------------------------------------------------------------------------------------

def test_wrong_content_types_are_415(region: Region) -> None:
    body = orjson.dumps(region.registration(rid()))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        reply = region.api.post("/hours", content=body, headers={"content-type": content_type})
        assert reply.status_code == 415, (content_type, reply.text)
        assert content_type in detail(reply) and "application/json" in detail(reply)
    bare = region.api.post("/hours", content=body)  # no Content-Type at all
    assert bare.status_code == 415 and "(none)" in detail(bare)
    put = region.api.put("/municipalities/GM0984", {"name": "Venray"})  # sanity: JSON is fine
    assert put.status_code == 200
    text_put = region.api.http.put("/municipalities/GM0984", content=b'{"name": "Venray"}',
                                   headers={"content-type": "text/plain"})
    assert text_put.status_code == 415
    for content_type in ("text/plain", "multipart/form-data; boundary=x", "application/octet-stream"):
        batch = region.api.post("/hours/batch", content=b"[" + body + b"]", headers={"content-type": content_type})
        assert batch.status_code == 415 and "unsupported content type" in detail(batch), (content_type, batch.text)
    # JSON with a charset parameter is JSON.
    with_charset = region.api.post("/hours", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert with_charset.status_code == 202, with_charset.text


# -- field values, single and batch -------------------------------------------------------------------

def test_single_registration_boundaries(region: Region) -> None:
    tomorrow = today() + dt.timedelta(days=1)
    cases = {"minutes": {"minutes": 721}, "task_category": {"task_category": 12},
             "date": {"date": tomorrow.isoformat()}, "pupils": {"pupils": ["g1-p0", BSN]}}
    for field, change in cases.items():
        reply = region.api.post("/hours", json={**region.registration(rid()), **change})
        assert reply.status_code == 422, (field, reply.text)
        fields = {e["field"]: e["msg"] for e in detail(reply)}
        assert set(fields) == {field}, fields
    for change in ({"minutes": 720}, {"minutes": 1}, {"task_category": 11}, {"pupils": ["g1-p0", NOT_BSN]},
                   {"date": today().isoformat()}):
        reply = region.api.post("/hours", json={**region.registration(rid()), **change})
        assert reply.status_code == 202, (change, reply.text)


def test_batch_keeps_valid_items_and_reports_each_invalid_one_by_index(region: Region) -> None:
    tomorrow = today() + dt.timedelta(days=1)
    items = [
        region.registration(rid()),                                        # 0 ok
        region.registration(rid(), minutes=0),                             # 1
        region.registration(rid(), minutes=721),                           # 2
        region.registration(rid(), minutes=720),                           # 3 ok
        region.registration(rid(), task_category=12),                      # 4
        region.registration(rid(), day=tomorrow),                          # 5
        region.registration(rid(), day=today()),                           # 6 ok (the hours service judges the date)
        region.registration(rid(), pupils=["g1-p0", BSN]),                 # 7
        region.registration(rid(), pupils=[NOT_BSN]),                      # 8 ok for the gateway
        {**region.registration(rid()), "minutes": "60"},                   # 9 strings are not minutes in JSON
        "not an object",                                                   # 10
        region.registration(rid(), minutes=0, task_category=12),           # 11 two problems, both named
    ]
    reply = region.api.post("/hours/batch", json=items)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    rejected = by_index(answer)
    assert answer["received"] == 12 and answer["accepted"] == 4 and answer["duplicates"] == 0
    assert sorted(rejected) == [1, 2, 4, 5, 7, 9, 10, 11]
    assert set(rejected[1]) == {"minutes"} and set(rejected[2]) == {"minutes"}
    assert "education tasks" in rejected[4]["task_category"]
    assert "future" in rejected[5]["date"]
    assert "BSN" in rejected[7]["pupils"] and BSN in rejected[7]["pupils"]
    assert set(rejected[9]) == {"minutes"}
    assert "JSON object" in rejected[10]["item"]
    assert set(rejected[11]) == {"minutes", "task_category"}
    ids = {r["index"]: r["registration_id"] for r in answer["rejected"]}
    assert ids[1] == items[1]["registration_id"] and ids[10] is None
    # The valid ones were really kept: an identical resend is all duplicates, the invalid ones again reported.
    again = region.api.post("/hours/batch", json=items).json()
    assert again["accepted"] == 0 and again["duplicates"] == 4 and sorted(by_index(again)) == sorted(rejected)


def test_dutch_csv_export_with_bad_rows(region: Region) -> None:
    """What Excel writes in a Dutch locale: BOM, ';', decimal commas, CRLF; bad rows reported by index."""
    tomorrow = today() + dt.timedelta(days=1)
    s = region.school_id
    rows = [f"{rid()};{s};g1;2026-03-02;45,0;cw-1;4;jeugdwet;g1-p0|g1-p1",  # 0 ok
            f"{rid()};{s};g1;2026-03-02;45,5;cw-1;4;;",                    # 1 not whole minutes
            f"{rid()};{s};g1;2026-03-02;0;cw-1;4;;",                       # 2
            f"{rid()};{s};g1;2026-03-02;721;cw-1;4;;",                     # 3
            f"{rid()};{s};g1;2026-03-02;60;cw-1;12;;",                     # 4
            f"{rid()};{s};g1;{tomorrow.isoformat()};60;cw-1;4;;",          # 5
            f"{rid()};{s};g1;2026-03-02;60;cw-1;4;;g1-p0|{BSN}",           # 6
            f"{rid()};{s};g1;02-03-2026;60;cw-1;4;;",                      # 7 a Dutch date spelling
            f"{rid()};{s};g1;2026-03-02;60;cw-1;4;;{NOT_BSN}"]             # 8 ok
    body = ("\ufeffregistration_id;school_id;group_id;date;minutes;care_worker;task_category;funding;pupils\r\n"
            + "\r\n".join(rows) + "\r\n").encode()
    reply = region.api.post("/hours/batch", content=body, headers={"content-type": "text/csv; charset=utf-8"})
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    rejected = by_index(answer)
    assert answer["received"] == 9 and answer["accepted"] == 2
    assert {i: set(f) for i, f in rejected.items()} == {
        1: {"minutes"}, 2: {"minutes"}, 3: {"minutes"}, 4: {"task_category"}, 5: {"date"}, 6: {"pupils"},
        7: {"date"}}
    assert "BSN" in rejected[6]["pupils"]


def test_ndjson_with_blank_and_broken_lines(region: Region) -> None:
    good = [orjson.dumps(region.registration(rid())) for _ in range(2)]
    body = b"\r\n".join([good[0], b"", b"   ", b'{"registration_id": "half', b"[1, 2]", good[1], b"null"]) + b"\r\n"
    reply = region.api.post("/hours/batch", content=body, headers={"content-type": "application/x-ndjson"})
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    # Blank lines are not items; indexes count the items, messages name the line.
    assert answer["received"] == 5 and answer["accepted"] == 2
    rejected = by_index(answer)
    assert sorted(rejected) == [1, 2, 4]
    assert "line 4" in rejected[1]["item"] and "JSON object" in rejected[2]["item"]


def test_other_bodies_that_are_not_what_the_schema_says(region: Region) -> None:
    """Odd JSON the fuzzer reaches only by luck: answered 422 naming the field, never 500."""
    base = region.registration(rid())
    for change, field in (({"minutes": 10**30}, "minutes"), ({"minutes": 60.5}, "minutes"),
                          ({"minutes": True}, "minutes"), ({"date": "2026-02-30"}, "date"),
                          ({"registration_id": "a" * 65}, "registration_id"),
                          ({"registration_id": "ü"}, "registration_id"), ({"extra": 1}, "extra"),
                          ({"school_id": None}, "school_id"), ({"pupils": [None]}, "pupils.0")):
        reply = region.api.post("/hours", json={**base, **change})
        assert reply.status_code == 422, (change, reply.text)
        assert field in {e["field"] for e in detail(reply)}, (change, reply.text)
    nan = region.api.post("/hours", content=orjson.dumps(base).replace(b'"minutes":60', b'"minutes":NaN'),
                          headers={"content-type": "application/json"})
    assert nan.status_code == 422 and {e["field"] for e in detail(nan)} == {"minutes"}
    array = region.api.post("/hours", json=[base])
    assert array.status_code == 422 and "valid dictionary" in messages(array)


def test_nul_characters_in_stored_free_text_are_refused(region: Region) -> None:
    """PostgreSQL text cannot hold U+0000: on that engine these inserts would fail (500). Refused on every
    engine, naming the field."""
    registration = region.registration(rid())
    assert region.api.post("/hours", json=registration).status_code == 202
    void = region.api.post(f"/hours/{registration['registration_id']}/void", json={"reason": "typo\u0000"})
    assert void.status_code == 422 and detail(void)[0]["field"] == "reason" and "NUL" in messages(void)
    token = region.api.post("/tokens", json={"role": "school", "subject": region.school_id, "label": "a\u0000"})
    assert token.status_code == 422 and detail(token)[0]["field"] == "label"
    webhook = region.api.put("/municipalities/GM0984/webhook", {"url": "http://127.0.0.1:9/x",
                                                                "secret": "s" * 16 + "\u0000"})
    assert webhook.status_code == 422 and detail(webhook)[0]["field"] == "secret"
    # The registration was not voided by the refused request.
    assert region.api.post(f"/hours/{registration['registration_id']}/void",
                           json={"reason": "typo"}).status_code == 202
