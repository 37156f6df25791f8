"""Gateway service layer: reference-data writes and registration intake, each one transaction with its
outbox rows, so a 200/202 means the fact is in the gateway's database and will reach Kafka."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.gateway import books
from shared import topics
from shared.events import (RegistryChanged, VoidRequested, hours_submitted_encoder, submission_event_id,
                           void_event_id)
from shared.db import driver_value, insert_rows
from shared.outbox import OutgoingEvent, enqueue
from shared.schemas import REGISTRATIONS, Arrangement, Registration, content_hash_of
from shared.settlement_keys import KEYS
from shared.timeutil import intervals_overlap


class Conflict(Exception):
    """The request contradicts what is stored (HTTP 409)."""


class NotFound(Exception):
    """A referenced entity does not exist (HTTP 404)."""


class Invalid(Exception):
    """A reference in the body does not hold (HTTP 422); `field` names the body field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


async def registry_doc(conn: AsyncConnection, kind: str, key: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(books.registry_entities.c.doc)
                              .where(books.registry_entities.c.kind == kind, books.registry_entities.c.key == key))
           ).first()
    return orjson.loads(row.doc) if row else None


async def current_registry_version(conn: AsyncConnection) -> int:
    row = (await conn.execute(select(books.registry_meta.c.version).where(books.registry_meta.c.id == 1))).first()
    return row.version if row else 0


class RegistryWriter:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    async def get(self, kind: str, key: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            return await registry_doc(conn, kind, key)

    async def view(self, kind: str, key: str, id_field: str) -> dict[str, Any]:
        """The document as GET returns it (`{id_field: key, **doc}`); NotFound naming it when there is none."""
        doc = await self.get(kind, key)
        if doc is None:
            raise NotFound(f"{kind} {key!r} not found")
        return {id_field: key, **doc}

    async def put(self, kind: str, key: str, doc: dict[str, Any], school_id: str | None = None) -> int:
        """Store the full new state and publish it; returns the registry version."""
        async with self.engine.begin() as conn:
            await self._check_references(conn, kind, key, doc)
            version = await self._bump(conn)
            payload = orjson.dumps(doc)
            existing = await registry_doc(conn, kind, key)
            if existing is None:
                await conn.execute(books.registry_entities.insert().values(
                    kind=kind, key=key, school_id=school_id, version=version, doc=payload))
            else:
                await conn.execute(update(books.registry_entities)
                                   .where(books.registry_entities.c.kind == kind, books.registry_entities.c.key == key)
                                   .values(version=version, doc=payload, school_id=school_id))
            event = RegistryChanged(event_id=f"registry:{version}", version=version, kind=kind, key=key, doc=doc)
            await enqueue(conn, books.outbox, [OutgoingEvent(topics.REGISTRY, key.encode(), event.to_bytes())])
        return version

    async def _bump(self, conn: AsyncConnection) -> int:
        updated = await conn.execute(update(books.registry_meta).where(books.registry_meta.c.id == 1)
                                     .values(version=books.registry_meta.c.version + 1))
        if updated.rowcount == 0:
            await conn.execute(books.registry_meta.insert().values(id=1, version=1))
            return 1
        return await current_registry_version(conn)

    async def _check_references(self, conn: AsyncConnection, kind: str, key: str, doc: dict[str, Any]) -> None:
        if kind == "school":
            if await registry_doc(conn, "municipality", doc["municipality"]) is None:
                raise Invalid("municipality", f"municipality {doc['municipality']} is not registered; "
                                              "PUT /municipalities/{code} first")
        elif kind in ("group", "pupil"):
            school_id = key.split("/", 1)[0]
            if await registry_doc(conn, "school", school_id) is None:
                raise NotFound(f"school {school_id!r} is not registered")
            if kind == "pupil" and await registry_doc(conn, "group", f"{school_id}/{doc['group_id']}") is None:
                raise Invalid("group_id", f"group {doc['group_id']!r} is not registered for school {school_id!r}")
        elif kind == "arrangement":
            await self._check_arrangement(conn, key, Arrangement.model_validate(doc))
        elif kind == "board":
            await self._check_board(conn, key, doc)

    async def _check_board(self, conn: AsyncConnection, board_id: str, doc: dict[str, Any]) -> None:
        """A board's schools are registered, listed once, and belong to no other board (a board token reads
        its schools' pots: a school in two boards would show its pots to both)."""
        seen: set[str] = set()
        for school_id in doc["school_ids"]:
            if school_id in seen:
                raise Invalid("school_ids", f"school {school_id!r} is listed more than once")
            seen.add(school_id)
            if await registry_doc(conn, "school", school_id) is None:
                raise Invalid("school_ids", f"school {school_id!r} is not registered")
        rows = (await conn.execute(select(books.registry_entities.c.key, books.registry_entities.c.doc)
                                   .where(books.registry_entities.c.kind == "board",
                                          books.registry_entities.c.key != board_id))).all()
        for row in rows:
            shared_schools = seen & set(orjson.loads(row.doc)["school_ids"])
            if shared_schools:
                raise Conflict(f"school(s) {sorted(shared_schools)} already belong to board {row.key!r}; "
                               "a school belongs to one board")

    async def _check_arrangement(self, conn: AsyncConnection, arrangement_id: str, arr: Arrangement) -> None:
        if await registry_doc(conn, "school", arr.school_id) is None:
            raise Invalid("school_id", f"school {arr.school_id!r} is not registered")
        for group_id in arr.group_ids:
            if await registry_doc(conn, "group", f"{arr.school_id}/{group_id}") is None:
                raise Invalid("group_ids", f"group {group_id!r} is not registered for school {arr.school_id!r}")
        if arr.calendar_id is not None and await registry_doc(conn, "calendar", arr.calendar_id) is None:
            raise Invalid("calendar_id", f"calendar {arr.calendar_id!r} is not registered: "
                                         f"PUT /calendars/{arr.calendar_id} first")
        if arr.norm_id is not None and await registry_doc(conn, "norm", arr.norm_id) is None:
            raise Invalid("norm_id", f"norm {arr.norm_id!r} is not registered: PUT /norms/{arr.norm_id} first")
        policy = arr.settlement
        key = KEYS[policy.key]
        for code in key.named_municipalities(policy):
            municipality = await registry_doc(conn, "municipality", code)
            if municipality is None:
                raise Invalid("settlement", f"municipality {code} is not registered")
            if key.needs_youth_population and municipality.get("youth_population") is None:
                raise Invalid("settlement", f"key {key.name} needs youth_population of municipality {code}")
        for funder in sorted(policy.funders()):
            if await registry_doc(conn, "funder", funder) is None:
                raise Invalid("settlement", f"funder {funder!r} is not registered: PUT /funders/{funder} first")
        previous = await registry_doc(conn, "arrangement", arrangement_id)
        if previous is not None and previous["school_id"] != arr.school_id:
            raise Conflict(f"arrangement {arrangement_id!r} belongs to school {previous['school_id']!r}; "
                           "an arrangement cannot move to another school")
        rows = (await conn.execute(select(books.registry_entities.c.key, books.registry_entities.c.doc)
                                   .where(books.registry_entities.c.kind == "arrangement",
                                          books.registry_entities.c.school_id == arr.school_id))).all()
        for row in rows:
            if row.key == arrangement_id:
                continue
            other = Arrangement.model_validate(orjson.loads(row.doc))
            shared_groups = set(other.group_ids) & set(arr.group_ids)
            if shared_groups and intervals_overlap(other.start, other.end, arr.start, arr.end):
                raise Conflict(f"arrangement {row.key!r} already covers group(s) {sorted(shared_groups)} between "
                               f"{other.start} and {other.end}; a group can be in one pot at a time")


@dataclass
class IntakeResult:
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    conflicts: list[tuple[int, str]] = field(default_factory=list)  # (index, registration_id)


_KNOWN_HASHES = (select(books.submissions.c.registration_id, books.submissions.c.content_hash)
                 .where(books.submissions.c.registration_id.in_(bindparam("ids", expanding=True))))
_SUBMISSION_COLUMNS = ("registration_id", "school_id", "content_hash", "received_at")


class Intake:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    async def submit(self, items: list[tuple[int, Registration]]) -> IntakeResult:
        """Record new registrations and their outbox events in one transaction; classify the rest."""
        result = IntakeResult()
        if not items:
            return result
        now = dt.datetime.now(dt.timezone.utc)
        # Each registration dumped once (the whole batch in one call): the dump gives its content hash and
        # goes into its event as it is, identical to what content_hash() and HoursSubmitted.to_bytes() make.
        docs = REGISTRATIONS.dump_python([reg for _, reg in items], mode="json")
        digests = [content_hash_of(doc) for doc in docs]
        async with self.engine.begin() as conn:
            version = await current_registry_version(conn)
            ids = list({reg.registration_id for _, reg in items})
            known: dict[str, str] = {}
            for start in range(0, len(ids), 500):
                rows = (await conn.execute(_KNOWN_HASHES, {"ids": ids[start:start + 500]})).all()
                known.update({r.registration_id: r.content_hash for r in rows})
            encode = hours_submitted_encoder(version, now)
            received_at = driver_value(conn, books.submissions.c.received_at, now)
            new_rows: list[tuple[str, str, str, Any]] = []
            outgoing: list[OutgoingEvent] = []
            for (index, reg), doc, digest in zip(items, docs, digests):
                rid = reg.registration_id
                seen = known.get(rid)
                if seen is not None:
                    if seen == digest:
                        result.duplicates.append(rid)
                    else:
                        result.conflicts.append((index, rid))
                    continue
                known[rid] = digest
                new_rows.append((rid, reg.school_id, digest, received_at))
                outgoing.append(OutgoingEvent(topics.HOURS_SUBMITTED, reg.school_id.encode(),
                                              encode(submission_event_id(rid), doc)))
                result.accepted.append(rid)
            if new_rows:
                await insert_rows(conn, books.submissions, _SUBMISSION_COLUMNS, new_rows)
                await enqueue(conn, books.outbox, outgoing)
        return result

    async def lookup(self, registration_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(books.submissions)
                                      .where(books.submissions.c.registration_id == registration_id))).first()
        return dict(row._mapping) if row else None

    async def void(self, registration_id: str, reason: str) -> bool:
        """Request a void; False when one was already requested (idempotent)."""
        now = dt.datetime.now(dt.timezone.utc)
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(books.submissions)
                                      .where(books.submissions.c.registration_id == registration_id))).first()
            if row is None:
                raise NotFound(registration_id)
            if row.void_requested_at is not None:
                return False
            version = await current_registry_version(conn)
            await conn.execute(update(books.submissions).where(books.submissions.c.registration_id == registration_id)
                               .values(void_reason=reason, void_requested_at=now))
            event = VoidRequested(event_id=void_event_id(registration_id), registration_id=registration_id,
                                  school_id=row.school_id, reason=reason, registry_version=version, received_at=now)
            await enqueue(conn, books.outbox,
                          [OutgoingEvent(topics.HOURS_SUBMITTED, row.school_id.encode(), event.to_bytes())])
        return True
