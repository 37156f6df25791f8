"""The gateway's batch fast path gives exactly what the per-registration path gave: the same validation
results, the same content hashes, the same hours.submitted bytes, the same rows (services/gateway/parsing.py,
services/gateway/service.py `Intake.submit`, shared/events.py `hours_submitted_encoder`, shared/outbox.py
`insert_rows`)."""
from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from services.gateway import books
from services.gateway.parsing import parse_batch, validate_item, validate_items
from services.gateway.service import Intake
from shared import topics
from shared.db import create_tables, make_engine
from shared.events import HoursSubmitted, hours_submitted_encoder, submission_event_id
from shared.db import insert_rows
from shared.outbox import OutgoingEvent, enqueue
from shared.schemas import REGISTRATIONS, Registration, content_hash_of
from shared.timeutil import today

UTC = dt.timezone.utc
RECEIVED = dt.datetime(2026, 3, 2, 9, 30, 5, 123456, tzinfo=UTC)


def doc(rid: str = "r-1", **over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"registration_id": rid, "school_id": "focus", "group_id": "g1", "date": "2025-09-15",
                         "minutes": 60, "care_worker": "Anja", "task_category": 4}
    d.update(over)
    return {k: v for k, v in d.items() if v is not ...}


VARIETY = [
    doc(),
    doc("r-2", funding="jeugdwet", pupils=["p1", "p2"]),
    doc("R.3:x_y-z", funding="education", pupils=[]),
    doc("r-4", minutes=1, task_category=1, date=today().isoformat()),
    doc("r-5", minutes=720, task_category=11, funding="wlz", pupils=[f"p{i}" for i in range(200)]),
    doc("r-6", care_worker='Jörg "J" \\ Ödön 😀 <b>&amp;</b>\n\ttab', pupils=["123456789"]),
    doc("r-7", care_worker="x" * 200, school_id="s" * 64, group_id="G.1:2_3-4"),
    doc("x" * 64, date="2000-02-29", funding=None, pupils=None),
    doc("r-9", date="2025-09-15T00:00:00"),  # a datetime at midnight is a date to pydantic: dumped as 2025-09-15
    dict(reversed(list(doc("r-10", funding="zvw", pupils=["b", "a"]).items()))),
]
RECEIVED_AT = [RECEIVED, RECEIVED.replace(microsecond=0), dt.datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
               dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))]


def registrations(docs: list[dict[str, Any]]) -> list[Registration]:
    return [Registration.model_validate(d) for d in docs]


# -- event bytes and content hash --------------------------------------------------------------------

@pytest.mark.parametrize("received_at", RECEIVED_AT)
@pytest.mark.parametrize("registry_version", [0, 7, 2**40])
def test_encoder_bytes_equal_the_model_bytes(received_at: dt.datetime, registry_version: int) -> None:
    regs = registrations(VARIETY)
    encode = hours_submitted_encoder(registry_version, received_at)
    for reg, dumped in zip(regs, REGISTRATIONS.dump_python(regs, mode="json")):
        expected = HoursSubmitted(event_id=submission_event_id(reg.registration_id), registration=reg,
                                  registry_version=registry_version, received_at=received_at).to_bytes()
        assert encode(submission_event_id(reg.registration_id), dumped) == expected
        assert encode(submission_event_id(reg.registration_id), reg.model_dump(mode="json")) == expected


def test_event_bytes_are_the_wire_format_consumers_read() -> None:
    reg = Registration.model_validate(doc("r-0002"))
    encoded = hours_submitted_encoder(7, RECEIVED)("submitted:r-0001", reg.model_dump(mode="json"))
    assert encoded == (
        b'{"schema_version":1,"event_id":"submitted:r-0001","type":"hours.submitted","registration":'
        b'{"registration_id":"r-0002","school_id":"focus","group_id":"g1","date":"2025-09-15","minutes":60,'
        b'"care_worker":"Anja","task_category":4,"funding":null,"pupils":null},"registry_version":7,'
        b'"received_at":"2026-03-02T09:30:05.123456Z"}')


def test_content_hash_of_the_batch_dump_is_the_content_hash() -> None:
    regs = registrations(VARIETY)
    for reg, dumped in zip(regs, REGISTRATIONS.dump_python(regs, mode="json")):
        # The formula the gateway's ledger and the hours service have always stored: it must not drift.
        original = hashlib.sha256(orjson.dumps(reg.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()
        assert content_hash_of(dumped) == reg.content_hash() == original
    pinned = Registration.model_validate(doc("r-0001", funding="jeugdwet", pupils=["p1", "p2"]))
    assert pinned.content_hash() == "26452467e5aac602a5c1697a250f63b61d3565e51199e9be3c2cc180400d0a7d"


registration_docs = st.fixed_dictionaries(
    {"registration_id": st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True),
     "school_id": st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True),
     "group_id": st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True),
     "date": st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2025, 12, 31)).map(dt.date.isoformat),
     "minutes": st.integers(1, 720),
     "care_worker": st.text(min_size=1, max_size=200),
     "task_category": st.integers(1, 11)},
    optional={"funding": st.sampled_from(["jeugdwet", "wlz", "zvw", "wmo", "education", None]),
              "pupils": st.none() | st.lists(st.from_regex(r"p[a-z0-9]{0,8}", fullmatch=True), max_size=5,
                                             unique=True)})


@settings(max_examples=150, deadline=None)
@given(docs=st.lists(registration_docs, min_size=1, max_size=5),
       received_at=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1),
                                timezones=st.just(UTC)),
       registry_version=st.integers(0, 2**53))
def test_encoder_and_hash_equal_the_models_for_any_registration(docs: list[dict[str, Any]], received_at: dt.datetime,
                                                                 registry_version: int) -> None:
    regs = registrations(docs)
    encode = hours_submitted_encoder(registry_version, received_at)
    for reg, dumped in zip(regs, REGISTRATIONS.dump_python(regs, mode="json")):
        event_id = submission_event_id(reg.registration_id)
        assert encode(event_id, dumped) == HoursSubmitted(event_id=event_id, registration=reg,
                                                          registry_version=registry_version,
                                                          received_at=received_at).to_bytes()
        assert content_hash_of(dumped) == reg.content_hash()


# -- validation: one call for the batch, per item when anything is wrong -------------------------------

def per_item(raw_items: list[Any]) -> list[Any]:
    return [validate_item(i, raw) for i, raw in enumerate(raw_items)]


def test_valid_batch_validated_at_once_equals_per_item() -> None:
    assert validate_items(list(VARIETY)) == per_item(list(VARIETY))
    assert validate_items([]) == []


@pytest.mark.parametrize("bad", [
    doc("r-bad", minutes=0, task_category=12),
    doc("r-bad", minutes=True),
    doc("r-bad", date="2999-01-01"),
    {"registration_id": 12345},
    doc("r-bad", extra="field"),
    doc("r-bad", pupils=["p1", "p1"]),
])
def test_batch_with_an_invalid_item_equals_per_item(bad: dict[str, Any]) -> None:
    items = [*VARIETY[:3], bad, *VARIETY[3:]]
    results = validate_items(items)
    assert results == per_item(items)
    assert results[3].registration is None and results[3].errors
    assert all(r.registration is not None for i, r in enumerate(results) if i != 3)


def test_json_body_fast_path_equals_per_item() -> None:
    body = orjson.dumps([*VARIETY, "not an object", doc("r-x", minutes="60")])
    assert parse_batch(body, "application/json") == per_item(orjson.loads(body))
    good = orjson.dumps(VARIETY)
    assert parse_batch(good, "application/json") == per_item(orjson.loads(good))


# -- Intake.submit: ledger and outbox rows ----------------------------------------------------------------

@pytest.fixture()
async def engine(tmp_path: Path):
    eng = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    await create_tables(eng, books.metadata)
    yield eng
    await eng.dispose()


async def outbox_rows(engine) -> list[Any]:  # noqa: ANN001
    async with engine.connect() as conn:
        return (await conn.execute(select(books.outbox).order_by(books.outbox.c.seq))).all()


async def test_submit_writes_the_model_bytes_and_the_ledger(engine, tmp_path: Path) -> None:  # noqa: ANN001
    regs = registrations(VARIETY)
    result = await Intake(engine).submit(list(enumerate(regs)))
    assert result.accepted == [r.registration_id for r in regs] and not result.duplicates and not result.conflicts

    async with engine.connect() as conn:
        ledger = {row.registration_id: row for row in (await conn.execute(select(books.submissions))).all()}
    rows = await outbox_rows(engine)
    assert len(rows) == len(regs) == len(ledger)
    received_at = ledger[regs[0].registration_id].received_at.replace(tzinfo=UTC)
    assert abs(dt.datetime.now(UTC) - received_at) < dt.timedelta(minutes=5)
    for reg, row in zip(regs, rows):
        stored = ledger[reg.registration_id]
        assert (stored.school_id, stored.content_hash) == (reg.school_id, reg.content_hash())
        assert stored.received_at.replace(tzinfo=UTC) == received_at
        assert stored.void_reason is None and stored.void_requested_at is None
        assert (row.topic, row.key, row.published) == (topics.HOURS_SUBMITTED, reg.school_id.encode(), False)
        assert row.value == HoursSubmitted(event_id=submission_event_id(reg.registration_id), registration=reg,
                                           registry_version=0, received_at=received_at).to_bytes()

    # received_at is stored in the very text SQLAlchemy's own insert writes for the same datetime.
    async with engine.begin() as conn:
        await conn.execute(books.submissions.insert(), {"registration_id": "core-insert", "school_id": "focus",
                                                        "content_hash": "x", "received_at": received_at})
    with sqlite3.connect(tmp_path / "gateway.db") as raw:
        texts = dict(raw.execute("SELECT registration_id, received_at FROM submissions").fetchall())
        types = {t for (t,) in raw.execute("SELECT DISTINCT typeof(value) || typeof(key) || typeof(published) "
                                           "FROM outbox").fetchall()}
    assert texts[regs[0].registration_id] == texts["core-insert"]
    assert types == {"blobblobinteger"}


async def test_submit_classifies_resends_within_and_across_batches(engine) -> None:  # noqa: ANN001
    intake = Intake(engine)
    a, b = Registration.model_validate(doc("a")), Registration.model_validate(doc("b"))
    a_changed = Registration.model_validate(doc("a", minutes=61))
    first = await intake.submit([(0, a), (1, b), (2, a), (3, a_changed)])
    assert (first.accepted, first.duplicates, first.conflicts) == (["a", "b"], ["a"], [(3, "a")])
    again = await intake.submit([(0, b), (1, a_changed), (2, Registration.model_validate(doc("c")))])
    assert (again.accepted, again.duplicates, again.conflicts) == (["c"], ["b"], [(1, "a")])
    events = [orjson.loads(row.value) for row in await outbox_rows(engine)]
    assert [(e["event_id"], e["registration"]["minutes"]) for e in events] == [
        ("submitted:a", 60), ("submitted:b", 60), ("submitted:c", 60)]
    assert (await intake.submit([])).accepted == []


# -- outbox rows through insert_rows -------------------------------------------------------------------------

async def test_enqueue_stores_events_unpublished(engine) -> None:  # noqa: ANN001
    events = [OutgoingEvent("t1", b"k", b'{"a":1}'), OutgoingEvent("t2", None, b"\x00\xff")]
    async with engine.begin() as conn:
        await enqueue(conn, books.outbox, events)
        await enqueue(conn, books.outbox, [])
    rows = await outbox_rows(engine)
    assert [(r.topic, r.key, r.value, r.published) for r in rows] == [
        ("t1", b"k", b'{"a":1}', False), ("t2", None, b"\x00\xff", False)]


async def test_insert_rows_refuses_columns_out_of_table_order(engine) -> None:  # noqa: ANN001
    async with engine.begin() as conn:
        with pytest.raises(ValueError, match="table's order"):
            await insert_rows(conn, books.outbox, ("key", "topic", "value", "published"), [(b"k", "t", b"v", 0)])
