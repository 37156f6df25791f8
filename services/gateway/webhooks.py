"""Statement webhooks: every issued statement is POSTed to its municipality's webhook, signed, until a 2xx.

Runs inside the gateway, because the gateway owns the webhook configuration and its secrets (they never
travel on a Kafka topic that keeps everything forever) and is the place where the coordinator asks for the
delivery status. Two loops, both restart-safe:

* `StatementFeed` reads `settlement.statements` from offset 0 without a consumer group and records one
  `deliveries` row per statement id (insert-or-ignore). Reading from 0 at every start (and again after the
  embedded broker forgot everything, noticed through the broker epoch) costs little - statements are few -
  and means no statement can be skipped: a row is created before anyone could mark anything delivered.
* `Deliverer` POSTs due rows with `X-Zorgpot-Signature: sha256=<hex HMAC-SHA256 of the raw body>`,
  `X-Zorgpot-Statement-Id` and the Standard Webhooks headers (`webhook-id` = the statement id,
  `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`), marks them
  delivered on a 2xx, else counts the attempt, keeps the error and retries after an exponential backoff.
  A delivery still failing `webhook_give_up_hours` after its first failed attempt is given up (`failed`,
  counted in `zorgpot_webhook_give_ups_total`) until the coordinator re-arms it (`rearm`). A crash between the receiver's 2xx and our commit sends the same
  statement again with the same id: receivers deduplicate on `X-Zorgpot-Statement-Id` (at-least-once on the
  wire, exactly once per id for the receiver). A lease (`claimed_until`) keeps two gateway instances from
  sending the same row at the same time.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import logging
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter
from standardwebhooks.webhooks import Webhook
from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from services.gateway import books
from shared import topics
from shared.events import StatementIssued, parse_event
from shared.kafka import EpochWatch, reconnecting, stop_quietly
from shared.settings import Settings

log = logging.getLogger("zorgpot.webhooks")

SIGNATURE_HEADER = "X-Zorgpot-Signature"
STATEMENT_HEADER = "X-Zorgpot-Statement-Id"
LEASE = dt.timedelta(seconds=60)

ATTEMPTS = Counter("zorgpot_webhook_attempts_total", "Statement webhook POSTs, by outcome", ["outcome"])
GIVE_UPS = Counter("zorgpot_webhook_give_ups_total",
                   "Statement deliveries given up after webhook_give_up_hours of failures (status failed)")
WHSEC_PREFIX = "whsec_"


def sign(secret: str, body: bytes) -> str:
    """The signature header value: `sha256=` + hex HMAC-SHA256 of the raw body, keyed with the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_key(secret: str) -> bytes:
    """The Standard Webhooks signing key for a municipality's secret.

    A secret in the spec's own form (`whsec_` + base64) is its decoded bytes, as every Standard Webhooks
    library reads it. Any other (plain) secret is its UTF-8 bytes, the same key `X-Zorgpot-Signature` uses:
    a receiver passes `secret.encode()` to `Webhook(...)`, or the equivalent `whsec_` + base64(secret)."""
    if secret.startswith(WHSEC_PREFIX):
        return base64.b64decode(secret[len(WHSEC_PREFIX):] + "==")
    return secret.encode()


def standard_headers(secret: str, message_id: str, body: bytes, at: dt.datetime) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` and `webhook-signature` (Standard Webhooks v1) for one attempt. The
    id stays the same on every attempt (the receiver's idempotency key); the timestamp is the attempt's, so a
    receiver can refuse a replayed old delivery."""
    signature = Webhook(standard_key(secret)).sign(message_id, at, body.decode())
    return {"webhook-id": message_id, "webhook-timestamp": str(int(at.timestamp())), "webhook-signature": signature}


def backoff_s(attempts: int, base: float, cap: float) -> float:
    """Delay before the next attempt after `attempts` failed ones: base, 2 base, 4 base, ... up to cap."""
    return min(cap, base * 2 ** max(0, attempts - 1))


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; everything stored here is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def delivery_view(row: Any) -> dict[str, Any]:
    delivered = _aware(row.delivered_at)
    failed = _aware(row.failed_at)
    if delivered:
        status = "delivered"
    elif failed:
        status = "failed"  # given up after webhook_give_up_hours; POST .../retry re-arms it
    elif not row.webhook_active:
        status = "no_webhook"  # sent as soon as the coordinator sets the municipality's webhook
    else:
        status = "retrying" if row.attempts else "pending"
    return {
        "statement_id": row.statement_id, "municipality": row.municipality, "arrangement_id": row.arrangement_id,
        "status": status,
        "attempts": row.attempts, "last_error": row.last_error,
        "last_attempt_at": _iso(row.last_attempt_at),
        "next_attempt_at": None if delivered or failed else _iso(row.next_attempt_at),
        "delivered_at": _iso(delivered), "delivered_to": row.delivered_to,
        "failing_since": _iso(row.failing_since), "failed_at": _iso(failed),
    }


def _iso(value: dt.datetime | None) -> str | None:
    value = _aware(value)
    return value.isoformat() if value else None


class StatementFeed:
    """settlement.statements -> `deliveries` rows, one per statement id."""

    def __init__(self, engine: AsyncEngine, settings: Settings, on_new) -> None:  # noqa: ANN001
        self.engine = engine
        self.bootstrap = settings.bootstrap()
        self.settings = settings
        self.on_new = on_new
        self._stopping = False

    async def record(self, events: list[StatementIssued]) -> int:
        """Insert-or-ignore one delivery row per statement; returns how many were new."""
        now = now_utc()
        rows = {e.statement_id: {"statement_id": e.statement_id, "municipality": e.municipality,
                                 "arrangement_id": e.arrangement_id, "body": orjson.dumps(e.statement),
                                 "received_at": now, "attempts": 0, "next_attempt_at": now}
                for e in events if e.municipality is not None}  # funders have no webhook (yet)
        if not rows:
            return 0
        dialect = self.engine.dialect.name
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(books.deliveries)
        async with self.engine.begin() as conn:
            result = await conn.execute(insert.on_conflict_do_nothing(index_elements=["statement_id"]),
                                        list(rows.values()))
        return max(result.rowcount or 0, 0)

    async def run(self) -> None:
        await reconnecting("statement feed", self._follow, lambda: self._stopping)

    async def _follow(self) -> None:
        """One session: every partition from offset 0, until stopped or the broker epoch changes."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", metadata_max_age_ms=5000)
        epochs = EpochWatch(self.bootstrap, self.settings)
        try:
            await consumer.start()
            epoch = await epochs.current()
            tps = [TopicPartition(topics.STATEMENTS, p) for p in sorted(await self._partitions(consumer))]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            checked = asyncio.get_running_loop().time()
            while not self._stopping:
                batch = await consumer.getmany(timeout_ms=500, max_records=1000)
                events = []
                for records in batch.values():
                    for record in records:
                        try:
                            event = parse_event(record.value)
                        except Exception as exc:  # noqa: BLE001 - one bad record must not stop deliveries
                            log.error("skipping malformed statement record at offset %s: %s", record.offset, exc)
                            continue
                        if isinstance(event, StatementIssued):
                            events.append(event)
                if events and await self.record(events):
                    self.on_new()
                if asyncio.get_running_loop().time() - checked > 2.0:
                    checked = asyncio.get_running_loop().time()
                    if await epochs.current() != epoch:
                        log.warning("broker epoch changed: reading settlement.statements again from offset 0")
                        return
        finally:
            await stop_quietly(consumer.stop(), epochs.close())

    async def _partitions(self, consumer: AIOKafkaConsumer) -> set[int]:
        while True:
            partitions = consumer.partitions_for_topic(topics.STATEMENTS)
            if partitions:
                return partitions
            await consumer.topics()  # refresh metadata; the topic appears once someone created the topics
            partitions = consumer.partitions_for_topic(topics.STATEMENTS)
            if partitions:
                return partitions
            await asyncio.sleep(1.0)

    def stop(self) -> None:
        self._stopping = True


class Deliverer:
    """POSTs due deliveries to the webhooks, with backoff; one pass at a time."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self._wake = asyncio.Event()
        self._stopping = False
        self._http = httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - database busy or the like: try again shortly
                log.warning("webhook delivery pass failed: %s: %s", type(exc).__name__, exc)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass

    async def deliver_due(self) -> int:
        d, w = books.deliveries, books.webhooks
        now = now_utc()
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(d.c.statement_id, d.c.body, d.c.attempts, d.c.failing_since, w.c.url, w.c.secret)
                .join(w, w.c.municipality == d.c.municipality)
                .where(w.c.active.is_(True), d.c.delivered_at.is_(None), d.c.failed_at.is_(None),
                       or_(d.c.next_attempt_at.is_(None), d.c.next_attempt_at <= now),
                       or_(d.c.claimed_until.is_(None), d.c.claimed_until < now))
                .order_by(d.c.received_at, d.c.statement_id).limit(50))).all()
            await conn.rollback()
        sent = 0
        for row in rows:
            if await self._claim(row.statement_id):
                await self._deliver(row)
                sent += 1
        return sent

    async def _claim(self, statement_id: str) -> bool:
        d = books.deliveries
        now = now_utc()
        async with self.engine.begin() as conn:
            result = await conn.execute(update(d).where(
                d.c.statement_id == statement_id, d.c.delivered_at.is_(None), d.c.failed_at.is_(None),
                or_(d.c.claimed_until.is_(None), d.c.claimed_until < now)).values(claimed_until=now + LEASE))
        return result.rowcount == 1

    async def _deliver(self, row: Any) -> None:
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(row.secret, row.body),
                   STATEMENT_HEADER: row.statement_id, "X-Zorgpot-Event": "statement.issued",
                   "X-Zorgpot-Delivery-Attempt": str(row.attempts + 1), "User-Agent": "zorgpot-webhooks/1",
                   **standard_headers(row.secret, row.statement_id, row.body, now_utc())}
        error: str | None = None
        try:
            reply = await self._http.post(row.url, content=row.body, headers=headers)
            if not 200 <= reply.status_code < 300:
                error = f"HTTP {reply.status_code}: {reply.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
        d = books.deliveries
        now = now_utc()
        attempts = row.attempts + 1
        if error is None:
            # last_error stays: "delivered on attempt 3, after HTTP 500" is what a coordinator wants to see.
            values: dict[str, Any] = {"delivered_at": now, "delivered_to": row.url, "failing_since": None}
            ATTEMPTS.labels("delivered").inc()
        else:
            ATTEMPTS.labels("failed").inc()
            since = _aware(row.failing_since) or now
            if gives_up(since, now, self.settings.webhook_give_up_hours):
                values = {"last_error": error, "failing_since": since, "failed_at": now, "next_attempt_at": None}
                GIVE_UPS.inc()
                log.warning("webhook for %s given up after %d attempts since %s: %s", row.statement_id, attempts,
                            since.isoformat(), error)
            else:
                delay = backoff_s(attempts, self.settings.webhook_backoff_base_s, self.settings.webhook_backoff_max_s)
                values = {"last_error": error, "failing_since": since,
                          "next_attempt_at": now + dt.timedelta(seconds=delay)}
                log.info("webhook for %s failed (attempt %d, next in %.1fs): %s", row.statement_id, attempts, delay,
                         error)
        async with self.engine.begin() as conn:
            await conn.execute(update(d).where(d.c.statement_id == row.statement_id)
                               .values(attempts=attempts, last_attempt_at=now, claimed_until=None, **values))

    async def stop(self) -> None:
        self._stopping = True
        self.wake()
        await self._http.aclose()


def gives_up(failing_since: dt.datetime, now: dt.datetime, give_up_hours: float) -> bool:
    """Whether a delivery failing since `failing_since` is given up after a failed attempt at `now`."""
    return now - failing_since >= dt.timedelta(hours=give_up_hours)


async def rearm(engine: AsyncEngine, statement_id: str) -> str | None:
    """The coordinator's retry: a failed or waiting delivery is due now, with a fresh give-up window.
    Returns the status it had (None: no such delivery); a delivered one is left alone."""
    d = books.deliveries
    now = now_utc()
    async with engine.begin() as conn:
        row = (await conn.execute(select(d.c.delivered_at, d.c.failed_at, d.c.attempts)
                                  .where(d.c.statement_id == statement_id))).first()
        if row is None:
            return None
        if row.delivered_at is not None:
            return "delivered"
        await conn.execute(update(d).where(d.c.statement_id == statement_id, d.c.delivered_at.is_(None))
                           .values(failed_at=None, failing_since=None, next_attempt_at=now))
    return "failed" if row.failed_at is not None else ("retrying" if row.attempts else "pending")


async def delivery_status(engine: AsyncEngine, statement_ids: list[str] | None = None,
                          municipality: str | None = None) -> list[dict[str, Any]]:
    d, w = books.deliveries, books.webhooks
    query = (select(d, w.c.active.label("webhook_active"))
             .select_from(d.outerjoin(w, w.c.municipality == d.c.municipality))
             .order_by(d.c.received_at, d.c.statement_id))
    conditions = []
    if statement_ids is not None:
        conditions.append(d.c.statement_id.in_(statement_ids))
    if municipality:
        conditions.append(d.c.municipality == municipality)
    if conditions:
        query = query.where(and_(*conditions))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [delivery_view(r) for r in rows]
