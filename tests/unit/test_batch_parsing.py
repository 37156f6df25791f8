"""Unit tests of batch body parsing: services/gateway/parsing.py `parse_batch` (design.md section 4)."""
from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from services.gateway.parsing import BodyError, ItemResult, parse_batch

DAY = "2025-09-15"
HEADER = "registration_id,school_id,group_id,date,minutes,care_worker,task_category,funding,pupils"


def item(rid: str = "r-1", **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "registration_id": rid, "school_id": "focus", "group_id": "g1", "date": DAY, "minutes": 60,
        "care_worker": "Anja", "task_category": 4,
    }
    doc.update(over)
    return doc


def fields(result: ItemResult) -> set[str]:
    return {e["field"] for e in result.errors}


def ok(result: ItemResult) -> None:
    assert result.errors == [], result.errors
    assert result.registration is not None
    assert result.registration_id == result.registration.registration_id


def bad(result: ItemResult) -> None:
    assert result.registration is None
    assert result.errors
    for e in result.errors:
        assert set(e) == {"field", "message"} and e["message"]
        assert not e["message"].startswith("Value error")


# -- JSON ------------------------------------------------------------------------------------------

def test_json_array_good_and_bad_items():
    body = orjson.dumps([
        item("r-1"),
        item("r-2", minutes=0, task_category=12),
        item("r-3", pupils=["p1", "p2"]),
        {"registration_id": "r-4"},
        "not an object",
        item("r-6", pupils=["111222333"]),
    ])
    results = parse_batch(body, "application/json")
    assert [r.index for r in results] == [0, 1, 2, 3, 4, 5]
    ok(results[0])
    ok(results[2])
    assert results[2].registration.pupils == ["p1", "p2"]

    bad(results[1])
    assert results[1].registration_id == "r-2"
    assert fields(results[1]) == {"minutes", "task_category"}
    assert any("not care" in e["message"] for e in results[1].errors)

    bad(results[3])
    assert results[3].registration_id == "r-4"
    assert fields(results[3]) == {"school_id", "group_id", "date", "minutes", "care_worker", "task_category"}

    bad(results[4])
    assert results[4].registration_id is None
    assert fields(results[4]) == {"item"}

    bad(results[5])
    assert fields(results[5]) == {"pupils"}
    assert "BSN" in results[5].errors[0]["message"]


def test_json_registration_id_not_a_string_is_reported_without_id():
    results = parse_batch(orjson.dumps([item(rid=12345)]), "application/json")
    bad(results[0])
    assert results[0].registration_id is None
    assert fields(results[0]) == {"registration_id"}


def test_json_with_charset_and_empty_content_type():
    body = orjson.dumps([item()])
    ok(parse_batch(body, "application/json; charset=utf-8")[0])
    ok(parse_batch(body, "")[0])
    ok(parse_batch(body, "Application/JSON")[0])


def test_json_empty_array():
    assert parse_batch(b"[]", "application/json") == []


@pytest.mark.parametrize("body", [b'{"registration_id": "r-1"}', b'"x"', b"42", b"null"])
def test_json_not_an_array(body):
    with pytest.raises(BodyError) as exc:
        parse_batch(body, "application/json")
    assert "array" in str(exc.value)


@pytest.mark.parametrize("body", [b"[", b"", b"[{'a': 1}]", b"[1,]"])
def test_invalid_json(body):
    with pytest.raises(BodyError) as exc:
        parse_batch(body, "application/json")
    assert "JSON" in str(exc.value)


def test_body_error_is_value_error():
    assert issubclass(BodyError, ValueError)


# -- NDJSON ----------------------------------------------------------------------------------------

def test_ndjson_broken_line_reported_others_kept():
    lines = [orjson.dumps(item("r-1")), b'{"registration_id": "r-2", ', orjson.dumps(item("r-3", minutes=721)),
             orjson.dumps(item("r-4"))]
    results = parse_batch(b"\n".join(lines) + b"\n", "application/x-ndjson")
    assert [r.index for r in results] == [0, 1, 2, 3]
    ok(results[0])
    bad(results[1])
    assert fields(results[1]) == {"item"}
    assert "line 2" in results[1].errors[0]["message"]
    bad(results[2])
    assert results[2].registration_id == "r-3" and fields(results[2]) == {"minutes"}
    ok(results[3])
    assert results[3].registration.registration_id == "r-4"


@pytest.mark.parametrize("ctype", ["application/x-ndjson", "application/ndjson", "application/jsonlines"])
def test_ndjson_content_types_and_crlf_and_blank_lines(ctype):
    body = orjson.dumps(item("r-1")) + b"\r\n\r\n" + orjson.dumps(item("r-2")) + b"\r\n"
    results = parse_batch(body, ctype)
    assert [r.registration.registration_id for r in results] == ["r-1", "r-2"]


def test_ndjson_line_that_is_not_an_object():
    results = parse_batch(b"[1, 2]\n" + orjson.dumps(item()), "application/x-ndjson")
    bad(results[0])
    assert fields(results[0]) == {"item"}
    ok(results[1])


# -- CSV -------------------------------------------------------------------------------------------

def csv_body(*rows: str, header: str = HEADER, sep: str = ",", bom: bool = False, eol: str = "\n") -> bytes:
    text = eol.join([header.replace(",", sep), *rows]) + eol
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")


def test_csv_with_header():
    body = csv_body(f"r-1,focus,g1,{DAY},60,Anja,4,jeugdwet,p1",
                    f"r-2,focus,g1,{DAY},45,Bert,2,,")
    results = parse_batch(body, "text/csv")
    assert len(results) == 2
    for r in results:
        ok(r)
    first, second = results[0].registration, results[1].registration
    assert first.minutes == 60 and first.task_category == 4 and first.funding == "jeugdwet"
    assert first.pupils == ["p1"] and first.date == dt.date(2025, 9, 15)
    # Empty cells are absent fields, not empty strings.
    assert second.funding is None and second.pupils is None


def test_csv_with_utf8_bom():
    body = csv_body(f"r-1,focus,g1,{DAY},60,Anja,4,,", bom=True)
    results = parse_batch(body, "text/csv; charset=utf-8")
    ok(results[0])
    assert results[0].registration.registration_id == "r-1"


def test_csv_with_semicolon_separator_and_crlf():
    body = csv_body(f"r-1;focus;g1;{DAY};60,0;Anja;4;;p1|p2", sep=";", eol="\r\n")
    results = parse_batch(body, "text/csv")
    ok(results[0])
    assert results[0].registration.minutes == 60
    assert results[0].registration.pupils == ["p1", "p2"]


@pytest.mark.parametrize("cell, expected", [("60", 60), ("60.0", 60), ('"60,0"', 60), (" 60 ", 60)])
def test_csv_minutes_whole_number_spellings(cell, expected):
    results = parse_batch(csv_body(f"r-1,focus,g1,{DAY},{cell},Anja,4,,"), "text/csv")
    ok(results[0])
    assert results[0].registration.minutes == expected


@pytest.mark.parametrize("cell", ['"60,5"', "sixty", "60.5"])
def test_csv_minutes_not_a_whole_number(cell):
    results = parse_batch(csv_body(f"r-1,focus,g1,{DAY},{cell},Anja,4,,"), "text/csv")
    bad(results[0])
    assert fields(results[0]) == {"minutes"}
    assert results[0].registration_id == "r-1"


def test_csv_pupils_cell_split_on_pipe_and_space():
    results = parse_batch(csv_body(f"r-1,focus,g1,{DAY},60,Anja,4,,p1|p2",
                                   f"r-2,focus,g1,{DAY},60,Anja,4,,p1 p2 | p3"), "text/csv")
    assert results[0].registration.pupils == ["p1", "p2"]
    assert results[1].registration.pupils == ["p1", "p2", "p3"]


def test_csv_bsn_in_pupils_cell_rejected():
    results = parse_batch(csv_body(f"r-1,focus,g1,{DAY},60,Anja,4,,p1|123456782"), "text/csv")
    bad(results[0])
    assert fields(results[0]) == {"pupils"} and "BSN" in results[0].errors[0]["message"]


def test_csv_header_in_other_order_and_padded():
    header = "minutes , registration_id,task_category,school_id,group_id,date,care_worker"
    results = parse_batch(csv_body(f"30,r-9,11,focus,g1,{DAY},Anja", header=header), "text/csv")
    ok(results[0])
    assert results[0].registration.minutes == 30 and results[0].registration.task_category == 11


@pytest.mark.parametrize("body", [
    csv_body(f"r-1,focus,g1,{DAY},60,Anja,4,,", header="id,school_id,group_id,date,minutes,care_worker,"
                                                        "task_category,funding,pupils"),
    f"r-1,focus,g1,{DAY},60,Anja,4,,\n".encode(),
    b"",
])
def test_csv_without_registration_id_header(body):
    with pytest.raises(BodyError) as exc:
        parse_batch(body, "text/csv")
    assert "header" in str(exc.value)


def test_csv_not_utf8():
    with pytest.raises(BodyError):
        parse_batch(csv_body(f"r-1,focus,g1,{DAY},60,J\xf6rg,4,,").decode().encode("utf-16"), "text/csv")


def test_csv_row_with_extra_cells_reported_others_kept():
    body = csv_body(f"r-1,focus,g1,{DAY},60,Anja,4,,p1",
                    f"r-2,focus,g1,{DAY},60,Anja,4,,p1,surplus",
                    f"r-3,focus,g1,{DAY},60,Anja,4,,p2")
    results = parse_batch(body, "application/csv")
    assert [r.index for r in results] == [0, 1, 2]
    ok(results[0])
    bad(results[1])
    assert fields(results[1]) == {"item"}
    assert "more cells than the header" in results[1].errors[0]["message"]
    ok(results[2])


def test_csv_row_with_missing_cells_names_missing_fields():
    results = parse_batch(csv_body(f"r-1,focus,g1,{DAY}"), "text/csv")
    bad(results[0])
    assert results[0].registration_id == "r-1"
    assert fields(results[0]) == {"minutes", "care_worker", "task_category"}


def test_csv_bad_row_reports_index_and_fields():
    body = csv_body(f"r-1,focus,g1,{DAY},60,Anja,4,,",
                    "r-2,focus,g1,2099-01-01,0,Anja,12,pgb,")
    results = parse_batch(body, "text/csv")
    ok(results[0])
    bad(results[1])
    assert results[1].index == 1 and results[1].registration_id == "r-2"
    assert fields(results[1]) == {"date", "minutes", "task_category", "funding"}


# -- content type ----------------------------------------------------------------------------------

@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", "multipart/form-data; boundary=x"])
def test_unsupported_content_type(ctype):
    with pytest.raises(BodyError) as exc:
        parse_batch(orjson.dumps([item()]), ctype)
    assert "content type" in str(exc.value)
