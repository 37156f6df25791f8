"""The stream kernel under faults (shared/kernel.py, design.md section 7).

A SIGKILL inside a batch's transaction and right after its commit, a rebalance between two workers of one
service, a broker restart that leaves the positions recorded under the old epoch above or below the new log,
an additive change to an event, and poison records. Every fault is timed by progress (what the service
reports it has applied: its health's `in_transaction`, `applied_records`, `positions`, or its books), never
by a sleep, and every test ends on exact books: each registration applied once by the hours, budget and
settlement services, and each service's recorded position equal to the end of every partition it consumes.
"""
from __future__ import annotations

import datetime as dt
import secrets
import signal
import threading
import time
from typing import Any, Callable, Iterator

import httpx
import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2

from ops.stack import Stack, start_on_free_ports
from shared import topics
from shared.money import cent_minutes_to_cents
from tests.integration.client import Api, Region
from tests.integration.conftest import database_env
from tests.integration.service_db import query
from tests.integration.topic_reader import read_topic

pytestmark = pytest.mark.stack

STREAM_SERVICES = ("hours", "budget", "settlement")
TOPIC_OF = {"hours": topics.HOURS_SUBMITTED, "budget": topics.CARE_LOGGED, "settlement": topics.CARE_LOGGED}
PRODUCER_OF = {topics.HOURS_SUBMITTED: "gateway", topics.CARE_LOGGED: "hours"}  # whose outbox feeds the topic
COMMIT_DELAY_MS = 300  # each batch's transaction stays open this long: room for a kill timed by progress
WINDOW = 300  # the feed stays at most this many registrations ahead of the service under test


# --- stacks ----------------------------------------------------------------------------------------------

def start(data_dir: Any, **env: str) -> Stack:
    return start_on_free_ports(data_dir, "zp_kernel", env_extra={**database_env(), **env})


@pytest.fixture()
def delayed_stack(tmp_path: Any, database_server: object) -> Iterator[Stack]:
    """A stack of the test's own whose batch transactions stay open COMMIT_DELAY_MS before their commit."""
    stack = start(tmp_path / "stack", ZORGPOT_KERNEL_COMMIT_DELAY_MS=str(COMMIT_DELAY_MS))
    yield stack
    stack.stop_all()


@pytest.fixture(scope="module")
def plain_stack(tmp_path_factory: pytest.TempPathFactory, database_server: object) -> Iterator[Stack]:
    """For the tests that put records of their own on the topics: not the session's shared stack."""
    stack = start(tmp_path_factory.mktemp("kernel"))
    yield stack
    stack.stop_all()


# --- looking at the services -----------------------------------------------------------------------------

def health(stack: Stack, worker: str) -> dict[str, Any] | None:
    """A worker's /internal/health (also when it answers 503: not ready), None while it is down."""
    try:
        return httpx.get(f"{stack.worker_url(worker)}/internal/health", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return None


def internal(stack: Stack, service: str, path: str, **params: Any) -> Any:
    reply = httpx.get(f"{stack.service_url(service)}{path}", params=params, timeout=30)
    reply.raise_for_status()
    return reply.json()


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except (httpx.HTTPError, ValueError, KeyError, OSError) as exc:  # a service (re)starting
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
        time.sleep(0.1)


def db_positions(stack: Stack, service: str) -> dict[str, tuple[str, int]]:
    """The positions recorded in the service's database: "topic:partition" -> (broker epoch, next offset)."""
    rows = query(stack, service, "select topic, partition, epoch, next_offset from consumer_positions")
    return {f"{topic}:{partition}": (epoch, offset) for topic, partition, epoch, offset in rows}


def recorded(stack: Stack, service: str) -> dict[str, int]:
    """The next offsets recorded for the service's own topic (non-zero ones: a partition never applied has no row)."""
    prefix = f"{TOPIC_OF[service]}:"
    return {tp: offset for tp, (_, offset) in db_positions(stack, service).items() if tp.startswith(prefix) and offset}


def applied_total(stack: Stack, service: str) -> int:
    return sum(recorded(stack, service).values())


def nonzero(positions: dict[str, int], topic: str) -> dict[str, int]:
    return {tp: offset for tp, offset in positions.items() if offset and tp.startswith(f"{topic}:")}


def consumer(stack: Stack) -> KafkaConsumer:
    return KafkaConsumer(bootstrap_servers=f"127.0.0.1:{stack.broker_port}", group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", consumer_timeout_ms=1000)


def read_to_end(stack: Stack, topic: str) -> tuple[dict[str, int], list[Any]]:
    """Every record of `topic` as it is (partition, offset, key, value; poison or not), read from offset 0 until
    the broker has no more, and the end of each partition ("topic:partition" -> offset after its last record).

    Read, not asked: Tansu's ListOffsets answers the base offset of a partition's last record batch + 1, not
    the end (100 records produced in one batch end at 1), so it is only a lower bound here. Call it when
    nobody produces to `topic` any more (outbox_drained)."""
    c = consumer(stack)
    try:
        tps = [TopicPartition(topic, p) for p in range({s.name: s.partitions for s in topics.ALL}[topic])]
        at_least = c.end_offsets(tps)
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        found: list[Any] = []
        quiet, deadline = 0, time.monotonic() + 60
        while quiet < 2:
            assert time.monotonic() < deadline, f"{topic}: could not read to the end ({at_least} at least)"
            fetched = [r for records in c.poll(timeout_ms=500, max_records=5000).values() for r in records]
            found.extend(fetched)
            reached = all(c.position(tp) >= at_least.get(tp, 0) for tp in tps)
            quiet = quiet + 1 if reached and not fetched else 0
        return {f"{topic}:{tp.partition}": c.position(tp) for tp in tps}, found
    finally:
        c.close()


def end_offsets(stack: Stack, topic: str) -> dict[str, int]:
    return read_to_end(stack, topic)[0]


def raw_records(stack: Stack, topic: str) -> list[Any]:
    return read_to_end(stack, topic)[1]


def broker_epoch(stack: Stack) -> str:
    """The broker's epoch: the record at offset 0 of zorgpot.epoch (shared/kafka.py)."""
    c = consumer(stack)
    try:
        tp = TopicPartition(topics.EPOCH, 0)
        c.assign([tp])
        c.seek(tp, 0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for records in c.poll(timeout_ms=500, max_records=1).values():
                return records[0].value.decode()
        raise AssertionError("no broker epoch record")
    finally:
        c.close()


def partition_of(key: str) -> int:
    """The partition a keyed record goes to (murmur2, as aiokafka's and kafka-python's default partitioner)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % topics.PARTITIONS


def produce(stack: Stack, topic: str, key: str, values: list[bytes]) -> list[tuple[int, int]]:
    """Produce straight to a topic (no gateway): returns (partition, offset) of each record."""
    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{stack.broker_port}", acks="all")
    try:
        futures = [producer.send(topic, key=key.encode(), value=value) for value in values]
        producer.flush(30)
        return [(m.partition, m.offset) for m in (f.get(timeout=30) for f in futures)]
    finally:
        producer.close()


def produce_in_transaction(stack: Stack, topic: str, key: str, values: list[bytes]) -> list[tuple[int, int]]:
    """Produce in one committed Kafka transaction: its commit marker takes the offset after the records, an
    offset no consumer ever sees (a gap in the log, as Apache Kafka's exactly-once producers leave)."""
    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{stack.broker_port}", acks="all",
                             transactional_id=f"zp-test-{secrets.token_hex(4)}")
    try:
        producer.init_transactions()
        producer.begin_transaction()
        futures = [producer.send(topic, key=key.encode(), value=value) for value in values]
        producer.commit_transaction()
        return [(m.partition, m.offset) for m in (f.get(timeout=30) for f in futures)]
    finally:
        producer.close()


def deadletters(api: Api, **params: str) -> list[dict[str, Any]]:
    reply = api.get("/deadletters", params=params)
    assert reply.status_code == 200, reply.text
    return reply.json()["deadletters"]


# --- the run: registrations through the gateway, paced by the service under test --------------------------

class Feed(threading.Thread):
    """Posts registrations through the gateway (POST /hours/batch, batches of 100, the regions in turn), at
    most WINDOW ahead of `progress()` (records the service under test has applied), until `finish()`. So the
    run is still going whenever a fault is injected, however fast or slow the machine is, and the service
    under test always has records waiting."""

    def __init__(self, api: Api, regions: list[Region], prefix: str, progress: Callable[[], int],
                 batch: int = 100, limit: int = 4000) -> None:
        super().__init__(name=f"feed-{prefix}", daemon=True)
        self.api, self.regions, self.prefix, self.progress = api, regions, prefix, progress
        self.batch, self.limit = batch, limit
        self.sent: list[tuple[Region, dict[str, Any]]] = []
        self.error: BaseException | None = None
        self._finish = threading.Event()
        self._done = 0

    def _applied(self) -> int:
        try:
            self._done = self.progress()
        except Exception:  # noqa: BLE001 - the service's database is busy or restarting: keep the last value
            pass
        return self._done

    def run(self) -> None:
        try:
            n = 0
            while not self._finish.is_set() and len(self.sent) < self.limit:
                if len(self.sent) - self._applied() >= WINDOW:
                    self._finish.wait(0.05)
                    continue
                region = self.regions[(n // self.batch) % len(self.regions)]
                items = [region.registration(f"{self.prefix}-{i}", day=region.start + dt.timedelta(days=i % 300),
                                             minutes=1 + (i * 37) % 600, group="g1" if i % 2 else "g2")
                         for i in range(n, n + self.batch)]
                reply = self.api.post_retrying("/hours/batch", json=items)
                assert reply.status_code == 200, reply.text
                body = reply.json()
                assert body["rejected"] == [] and body["accepted"] + body["duplicates"] == len(items), body
                self.sent.extend((region, item) for item in items)
                n += self.batch
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self) -> list[tuple[Region, dict[str, Any]]]:
        self._finish.set()
        self.join(120)
        assert not self.is_alive(), "the feed did not stop"
        if self.error is not None:
            raise self.error
        return self.sent


# --- exact books -----------------------------------------------------------------------------------------

def expected_books(sent: list[tuple[Region, dict[str, Any]]]) -> dict[str, dict[str, int]]:
    """Per arrangement: registrations, minutes and exact cost (cent-minutes) of what was sent."""
    books: dict[str, dict[str, int]] = {}
    for region, item in sent:
        book = books.setdefault(region.arrangement_id, {"registrations": 0, "minutes": 0, "cost_cent_minutes": 0})
        book["registrations"] += 1
        book["minutes"] += item["minutes"]
        book["cost_cent_minutes"] += item["minutes"] * region.rate_cents
    return books


def seen_books(stack: Stack, arrangement_ids: list[str]) -> dict[str, Any]:
    hours = internal(stack, "hours", "/internal/stats")
    pots = {a: internal(stack, "budget", f"/internal/pots/{a}") for a in arrangement_ids}
    invariant = {a: internal(stack, "settlement", "/internal/invariant", arrangement_id=a)["arrangements"]
                 for a in arrangement_ids}
    return {"hours": hours, "pots": pots, "invariant": {a: items[0] if items else None for a, items in invariant.items()}}


def counts_reached(seen: dict[str, Any], want: dict[str, dict[str, int]], hours: int | None = None) -> bool:
    """Every service has at least what `want` says (hours: `hours` registrations, by default all of them)."""
    total = sum(b["registrations"] for b in want.values()) if hours is None else hours
    return (sum(s["count"] for s in seen["hours"].values()) >= total
            and all(seen["pots"][a]["registrations"] >= b["registrations"] for a, b in want.items())
            and all(seen["invariant"][a] is not None and seen["invariant"][a]["registrations"] >= b["registrations"]
                    for a, b in want.items()))


def outbox_drained(stack: Stack, service: str, epoch: str) -> bool:
    """The service's relay has every outbox row acknowledged by the broker of `epoch` (a relay that has not
    seen a new epoch yet would still republish everything)."""
    return query(stack, service, "select epoch from relay_state") == [(epoch,)] and \
        query(stack, service, "select count(*) from outbox where published = :f", f=False) == [(0,)]


def assert_positions_at_end(stack: Stack, service: str, all_events: bool = True) -> dict[str, int]:
    """Once the topic's producer has published everything: the service's recorded positions are the end of
    every partition of its topic, under the broker's current epoch, and its health says the same; with only
    events on the topic, their sum is the number of records topic_reader reads (plus the offsets that hold
    no record). Returns the ends."""
    topic, epoch = TOPIC_OF[service], broker_epoch(stack)
    producer = PRODUCER_OF[topic]
    wait_for(f"{producer}'s outbox to be published to {topic} under epoch {epoch}",
             lambda: outbox_drained(stack, producer, epoch))
    ends = end_offsets(stack, topic)  # final: nothing else produces to it

    def at_end() -> bool:
        stored = {tp: p for tp, p in db_positions(stack, service).items() if tp.startswith(f"{topic}:")}
        return all(stored.get(tp, (epoch, 0)) == (epoch, end) for tp, end in ends.items()) and len(stored) <= len(ends)

    wait_for(f"{service}'s recorded positions to reach the end of {topic} {ends} under epoch {epoch}", at_end)
    stored = db_positions(stack, service)
    assert {tp: stored[tp] for tp in stored if tp.startswith(f"{topic}:")} == \
        {tp: (epoch, end) for tp, end in ends.items() if end}, (service, stored, ends)
    seen = wait_for(f"{service}'s health", lambda: health(stack, service))
    in_memory = {tp: offset for tp, offset in seen["positions"].items() if tp.startswith(f"{topic}:")}
    assert nonzero(in_memory, topic) == nonzero(ends, topic), (service, in_memory, ends)
    if all_events:
        # Positions count offsets, topic_reader counts records: equal unless the log has offsets without a
        # record (a gap: the embedded broker leaves some when a produce fails around its restart).
        _, records = read_to_end(stack, topic)
        events = read_topic(stack.broker_port, topic, until=lambda evs: len(evs) >= len(records))
        holes = sum(ends.values()) - len(records)
        assert len(events) == len(records) and sum(in_memory.values()) == len(events) + holes, \
            (service, in_memory, len(events), holes)
    return ends


def assert_exactly_once(stack: Stack, api: Api, sent: list[tuple[Region, dict[str, Any]]],
                        timeout: float = 180) -> None:
    """Every registration sent applied exactly once by hours, budget and settlement; every service's
    position at the end of its topic; no dead letters."""
    want = expected_books(sent)
    ids = sorted(want)
    wait_for("every registration to reach hours, budget and settlement",
             lambda: counts_reached(seen_books(stack, ids), want), timeout)
    for service in STREAM_SERVICES:
        assert_positions_at_end(stack, service)
    seen = seen_books(stack, ids)  # everything consumed: these are final
    total = sum(b["registrations"] for b in want.values())
    assert seen["hours"] == {"accepted": {"count": total, "minutes": sum(b["minutes"] for b in want.values()),
                                          "cost_cent_minutes": sum(b["cost_cent_minutes"] for b in want.values())}}
    for aid, book in want.items():
        pot = seen["pots"][aid]
        assert (pot["registrations"], pot["minutes"], pot["spent_cents"]) == \
            (book["registrations"], book["minutes"], cent_minutes_to_cents(book["cost_cent_minutes"])), (aid, pot, book)
        item = seen["invariant"][aid]
        assert item["ok"] and (item["registrations"], item["voided"], item["cost_cent_minutes"]) == \
            (book["registrations"], 0, book["cost_cent_minutes"]), (aid, item, book)
    recon = internal(stack, "budget", "/internal/reconciliation")
    assert recon["discrepancy_cents"] == 0, recon
    # Every care.logged record on the topic is one registration's event (or a republication of it), no other.
    _, records = read_to_end(stack, topics.CARE_LOGGED)
    assert {orjson.loads(r.value)["event_id"] for r in records} == {f"logged:{i['registration_id']}" for _, i in sent}
    assert deadletters(api) == []


# --- faults ----------------------------------------------------------------------------------------------

def restart(stack: Stack, worker: str) -> None:
    stack.start(worker)
    wait_for(f"{worker} ready again", lambda: (health(stack, worker) or {}).get("ready"), 120)


def kill_inside_transaction(stack: Stack, service: str, after: int, attempts: int = 3) -> dict[str, Any]:
    """SIGKILL `service` just after it is seen opening a batch's transaction (health: in_transaction turns
    true) with at least `after` records applied, and check the kill landed inside it: the positions in its
    database are those it reported then, so the batch in flight was not committed. A kill that came too late
    (the machine stalled for most of the commit delay) is a kill after a commit: the service is restarted and
    the next transaction is tried. Returns the health seen before the kill that landed inside."""
    for _ in range(attempts):
        was_open = True  # count only a transaction seen opening: the kill then has nearly all the delay to land
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, f"{service} never opened a transaction after {after} records"
            seen = health(stack, service)
            if seen is None:
                time.sleep(0.05)
                continue
            if seen["in_transaction"] and not was_open and sum(seen["positions"].values()) >= after:
                stack.kill(service, signal.SIGKILL)
                break
            was_open = seen["in_transaction"]
            time.sleep(0.01)
        if recorded(stack, service) == nonzero(seen["positions"], TOPIC_OF[service]):
            return seen
        restart(stack, service)
    raise AssertionError(f"no SIGKILL of {service} landed inside a transaction in {attempts} attempts")


def kill_after_commit(stack: Stack, service: str) -> dict[str, Any]:
    """SIGKILL `service` as soon as its applied_records is seen advancing (a batch just committed). Returns the
    health seen; what it reported committed is in its database."""
    last: int | None = None
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, f"{service} committed nothing"
        seen = health(stack, service)
        if seen is None:
            time.sleep(0.05)
            continue
        if last is not None and seen["applied_records"] > last:
            stack.kill(service, signal.SIGKILL)
            break
        last = seen["applied_records"]
        time.sleep(0.01)
    stored = recorded(stack, service)
    for tp, offset in nonzero(seen["positions"], TOPIC_OF[service]).items():
        assert stored.get(tp, 0) >= offset, (service, stored, seen)
    return seen


# --- 1. SIGKILL inside a transaction and right after a commit -----------------------------------------------

@pytest.mark.parametrize("service", STREAM_SERVICES)
def test_sigkill_inside_a_transaction_and_right_after_a_commit_applies_everything_once(
        delayed_stack: Stack, service: str) -> None:
    stack = delayed_stack
    with Api(stack) as api:
        region = Region(api).build(pupils_per_group=2)
        feed = Feed(api, [region], f"k-{service}", progress=lambda: applied_total(stack, service))
        feed.start()
        try:
            inside = kill_inside_transaction(stack, service, after=WINDOW)
            assert inside["in_transaction"] and inside["applied_records"] > 0
            restart(stack, service)
            kill_after_commit(stack, service)
            restart(stack, service)
            # The run goes on after the second restart: the service commits again before the feed stops.
            wait_for(f"{service} to commit after its restart",
                     lambda: (health(stack, service) or {}).get("applied_records", 0) > 0)
        finally:
            sent = feed.finish()
        assert stack.children[service].restarts == 0  # restarted by the test, not by the supervisor
        assert len(sent) > WINDOW
        assert_exactly_once(stack, api, sent)


# --- 2. two workers, one joins and one leaves mid-run -------------------------------------------------------

def schools_on_every_partition() -> list[str]:
    """One school id per partition, so whichever way the partitions are split, every worker has work."""
    found: dict[int, str] = {}
    while len(found) < topics.PARTITIONS:
        school = f"school-{secrets.token_hex(4)}"
        found.setdefault(partition_of(school), school)
    return [found[p] for p in range(topics.PARTITIONS)]


def split_between(stack: Stack, workers: list[str], topic: str) -> dict[str, set[str]] | None:
    """The assignment of `topic` when every partition is owned by exactly one of `workers` and each is ready
    and owns some; None otherwise."""
    seen = {w: health(stack, w) for w in workers}
    if any(h is None or not h["ready"] for h in seen.values()):
        return None
    owned = {w: {tp for tp in h["assigned"] if tp.startswith(f"{topic}:")} for w, h in seen.items()}
    every = {f"{topic}:{p}" for p in range(topics.PARTITIONS)}
    if set().union(*owned.values()) != every or sum(len(o) for o in owned.values()) != len(every):
        return None
    return owned if all(owned.values()) else None


def test_a_worker_joining_and_one_leaving_mid_run_lose_and_double_nothing(delayed_stack: Stack) -> None:
    stack, service = delayed_stack, "budget"
    with Api(stack) as api:
        regions = [Region(api, school_id=school).build(pupils_per_group=1) for school in schools_on_every_partition()]
        feed = Feed(api, regions, "rebalance", progress=lambda: applied_total(stack, service))
        feed.start()
        try:
            wait_for("the first worker to apply part of the run", lambda: applied_total(stack, service) >= WINDOW)
            extra = stack.start_extra_worker(service, 1)  # joins: the partitions are split between the two
            owned = wait_for("the partitions to be split over both workers",
                             lambda: split_between(stack, [service, extra], topics.CARE_LOGGED))
            assert owned[service].isdisjoint(owned[extra])
            wait_for(f"{extra} to commit records of its own",
                     lambda: (health(stack, extra) or {}).get("applied_records", 0) > 0)
            first_before = health(stack, service)["applied_records"]
            stack.kill(extra, signal.SIGTERM)  # leaves: the first worker takes every partition back
            wait_for("the first worker to own every partition again",
                     lambda: split_between(stack, [service], topics.CARE_LOGGED))
            wait_for("the first worker to go on applying",
                     lambda: health(stack, service)["applied_records"] > first_before)
        finally:
            sent = feed.finish()
        assert {region.arrangement_id for region, _ in sent} == {r.arrangement_id for r in regions}
        assert_exactly_once(stack, api, sent)


# --- 3. broker restart with positions of the old epoch above or below the new log ------------------------------

def post_all(api: Api, region: Region, prefix: str, count: int, first: int = 0,
             batch: int = 50) -> list[tuple[Region, dict[str, Any]]]:
    """Registrations `prefix`-first .. `prefix`-(first + count - 1) through POST /hours/batch."""
    sent = []
    for start_at in range(first, first + count, batch):
        items = [region.registration(f"{prefix}-{i}", day=region.start + dt.timedelta(days=i % 300),
                                     minutes=1 + (i * 53) % 700, group="g1" if i % 2 else "g2")
                 for i in range(start_at, min(start_at + batch, first + count))]
        reply = api.post_retrying("/hours/batch", json=items)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        # A batch resent after its answer was lost (the broker restarting) counts as duplicates.
        assert body["rejected"] == [] and body["accepted"] + body["duplicates"] == len(items), body
        sent.extend((region, item) for item in items)
    return sent


# (registrations before the restart, after it, copies of each old record). The old log holds `before`
# registrations, `copies` redeliveries of each (straight to the topics, in no outbox: the restarted broker's
# log will not have them) and the first `split` registrations of the second run; the services have applied
# them up to somewhere between (1 + copies) x before and that + split when the broker restarts. The new log
# holds `before + after` (republished and new) plus what the embedded broker adds around its restart (a batch
# published twice, offsets skipped by a failed produce: up to about as much again). So "below" ends well under
# the old positions, "above" grows well over them: a kernel that reused them would skip new records (or, below,
# never see them).
@pytest.mark.parametrize(("before", "after", "copies", "split"), [(300, 100, 3, 50), (200, 500, 1, 100)],
                         ids=["new-log-below", "new-log-above"])
def test_broker_restart_mid_run_never_reuses_positions_of_the_old_epoch(
        delayed_stack: Stack, before: int, after: int, copies: int, split: int) -> None:
    stack = delayed_stack
    with Api(stack) as api:
        region = Region(api).build(pupils_per_group=2)
        first = post_all(api, region, "old", before)
        wait_for("the first registrations everywhere",
                 lambda: counts_reached(seen_books(stack, [region.arrangement_id]), expected_books(first)))
        for topic in (topics.HOURS_SUBMITTED, topics.CARE_LOGGED):
            records = raw_records(stack, topic)
            assert len(records) == before
            producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{stack.broker_port}", acks="all")
            try:
                for _ in range(copies):
                    for r in records:
                        producer.send(topic, key=r.key, value=r.value, partition=r.partition)
                producer.flush(30)
            finally:
                producer.close()
        old = {service: assert_positions_at_end(stack, service) for service in STREAM_SERVICES}
        for service in STREAM_SERVICES:
            assert sum(old[service].values()) == (1 + copies) * before
        old_epoch = broker_epoch(stack)

        # Mid-run: the second run has begun and the hours service is applying it when the broker restarts.
        second = post_all(api, region, "new", split)
        wait_for("the hours service to apply part of the second run",
                 lambda: applied_total(stack, "hours") > sum(old["hours"].values()))
        stack.restart_broker()  # Tansu forgets every topic, record and offset
        second += post_all(api, region, "new", after - split, first=split)
        assert_exactly_once(stack, api, first + second)
        assert broker_epoch(stack) != old_epoch
        for service in STREAM_SERVICES:  # each noticed the new epoch (exit 75) and was started again
            assert stack.children[service].restarts >= 1, service
            new = end_offsets(stack, TOPIC_OF[service])
            for tp, old_end in nonzero(old[service], TOPIC_OF[service]).items():
                # the case this test is about: the new log ends below / grows above the old positions
                if after < before:
                    assert new[tp] < old_end, (service, tp, new, old_end)
                else:
                    assert new[tp] > old_end + split, (service, tp, new, old_end)


# --- 4. an additive change is applied, not dead-lettered -------------------------------------------------------

def care_logged_of(stack: Stack, registration_id: str) -> dict[str, Any]:
    events = read_topic(stack.broker_port, topics.CARE_LOGGED,
                        until=lambda evs: any(e.get("registration_id") == registration_id for e in evs))
    return next(e for e in events if e.get("registration_id") == registration_id and e["type"] == "care.logged")


def test_events_with_added_fields_are_applied_not_dead_lettered(plain_stack: Stack) -> None:
    stack = plain_stack
    with Api(stack) as api:
        region = Region(api).build(pupils_per_group=2)
        tag = secrets.token_hex(3)
        base = region.registration(f"add-{tag}-base", minutes=45)
        assert api.post("/hours", json=base).status_code == 202
        assert api.wait_status(base["registration_id"], {"accepted"})["status"] == "accepted"
        logged = care_logged_of(stack, base["registration_id"])

        # care.logged from a newer producer: an unknown field at the top and inside an attribution.
        rid_care = f"add-{tag}-care"
        cost = 90 * region.rate_cents
        newer_care = {**logged, "event_id": f"logged:{rid_care}", "registration_id": rid_care, "minutes": 90,
                      "cost_cent_minutes": cost, "cost_cents": cent_minutes_to_cents(cost),
                      "carbon_offset": {"kg": 1.5},
                      "attributions": [{**a, "weight": 1} for a in logged["attributions"]]}
        # hours.submitted with an unknown field inside `registration` (and one beside it).
        rid_sub = f"add-{tag}-sub"
        registry_version = wait_for("the hours health", lambda: health(stack, "hours"))["registry_version"]
        newer_submission = {"schema_version": 1, "event_id": f"submitted:{rid_sub}", "type": "hours.submitted",
                            "registration": {**region.registration(rid_sub, minutes=30), "shift": "late"},
                            "registry_version": registry_version, "channel": "sftp",
                            "received_at": dt.datetime.now(dt.timezone.utc).isoformat()}
        produce(stack, topics.CARE_LOGGED, region.school_id, [orjson.dumps(newer_care)])
        produce(stack, topics.HOURS_SUBMITTED, region.school_id, [orjson.dumps(newer_submission)])

        status = wait_for(f"{rid_sub} judged", lambda: internal(stack, "hours", f"/internal/registrations/{rid_sub}"))
        assert status["status"] == "accepted", status
        minutes = 45 + 90 + 30
        want = {region.arrangement_id: {"registrations": 3, "minutes": minutes,
                                        "cost_cent_minutes": minutes * region.rate_cents}}
        wait_for("the three registrations in budget and settlement",
                 lambda: counts_reached(seen_books(stack, [region.arrangement_id]), want, hours=2))
        for service in STREAM_SERVICES:
            assert_positions_at_end(stack, service, all_events=False)  # the module's stack: poison may be there
        seen = seen_books(stack, [region.arrangement_id])
        pot = seen["pots"][region.arrangement_id]
        assert (pot["registrations"], pot["minutes"], pot["spent_cents"]) == \
            (3, minutes, cent_minutes_to_cents(minutes * region.rate_cents)), pot
        item = seen["invariant"][region.arrangement_id]
        assert item["ok"] and (item["registrations"], item["cost_cent_minutes"]) == (3, minutes * region.rate_cents)
        ours = [d for d in deadletters(api) if d["subject"] in (rid_care, rid_sub, base["registration_id"])]
        assert ours == []


# --- 5. poison records are dead-lettered, the stream goes on ----------------------------------------------------

def test_poison_records_are_dead_lettered_and_the_stream_goes_on(plain_stack: Stack) -> None:
    stack = plain_stack
    with Api(stack) as api:
        region = Region(api).build(pupils_per_group=2)
        tag = secrets.token_hex(3)
        first = region.registration(f"poison-{tag}-first", minutes=20)
        assert api.post("/hours", json=first).status_code == 202
        assert api.wait_status(first["registration_id"], {"accepted"})["status"] == "accepted"
        logged = care_logged_of(stack, first["registration_id"])

        rid_care, rid_sub = f"poison-{tag}-care", f"poison-{tag}-sub"
        not_json = b"\xff\xfe{not json at all"
        bad_care = orjson.dumps({**logged, "event_id": f"logged:{rid_care}", "registration_id": rid_care,
                                 "minutes": "lots"})
        registry_version = wait_for("the hours health", lambda: health(stack, "hours"))["registry_version"]
        bad_submission = orjson.dumps({
            "schema_version": 1, "event_id": f"submitted:{rid_sub}", "type": "hours.submitted",
            "registration": {**region.registration(rid_sub), "minutes": "lots"},
            "registry_version": registry_version, "received_at": dt.datetime.now(dt.timezone.utc).isoformat()})
        (raw_at, bad_care_at) = produce(stack, topics.CARE_LOGGED, region.school_id, [not_json, bad_care])
        (bad_sub_at,) = produce(stack, topics.HOURS_SUBMITTED, region.school_id, [bad_submission])
        assert raw_at[0] == bad_care_at[0] == partition_of(region.school_id) == bad_sub_at[0]

        # A later registration on the same partitions is applied: the stream went past the poison.
        later = region.registration(f"poison-{tag}-later", minutes=40)
        assert api.post("/hours", json=later).status_code == 202
        assert api.wait_status(later["registration_id"], {"accepted"})["status"] == "accepted"
        want = {region.arrangement_id: {"registrations": 2, "minutes": 60, "cost_cent_minutes": 60 * region.rate_cents}}
        wait_for("the later registration in budget and settlement",
                 lambda: counts_reached(seen_books(stack, [region.arrangement_id]), want))
        seen = seen_books(stack, [region.arrangement_id])
        pot = seen["pots"][region.arrangement_id]
        assert (pot["registrations"], pot["minutes"]) == (2, 60), pot
        assert seen["invariant"][region.arrangement_id]["registrations"] == 2
        assert later_offset_above(stack, region, bad_care_at)
        for service in STREAM_SERVICES:
            assert_positions_at_end(stack, service, all_events=False)

        # Each poison record is a dead letter of each service that consumes its topic, with where and why.
        expected = {("budget", topics.CARE_LOGGED, *raw_at): ("not JSON", None),
                    ("settlement", topics.CARE_LOGGED, *raw_at): ("not JSON", None),
                    ("budget", topics.CARE_LOGGED, *bad_care_at): ("minutes", rid_care),
                    ("settlement", topics.CARE_LOGGED, *bad_care_at): ("minutes", rid_care),
                    ("hours", topics.HOURS_SUBMITTED, *bad_sub_at): ("minutes", rid_sub)}
        listed = {(d["service"], d["topic"], d["partition"], d["offset"]): d for d in deadletters(api)}
        assert set(expected) <= set(listed), (expected, listed)
        ours = {where: listed[where] for where in expected}
        for where, (why, subject) in expected.items():
            d = ours[where]
            assert d["id"].startswith(f"{where[0]}-") and d["status"] == "open" and d["attempts"] == 1, d
            assert why in d["reason"] and d["subject"] == subject, d
        assert {d["id"] for d in deadletters(api, status="open")} >= {d["id"] for d in ours.values()}
        assert {d["id"] for d in deadletters(api, service="hours")} >= {ours[w]["id"] for w in expected if w[0] == "hours"}

        # ... and on the zorgpot.deadletter topic.
        ids = {d["id"] for d in ours.values()}
        published = {e["deadletter_id"]: e for e in read_topic(
            stack.broker_port, topics.DEADLETTER, until=lambda evs: ids <= {e.get("deadletter_id") for e in evs})
            if e.get("deadletter_id") in ids}
        for where, d in ours.items():
            e = published[d["id"]]
            assert (e["service"], e["source_topic"], e["partition"], e["offset"]) == where, e
            assert e["reason"] == d["reason"] and e["subject"] == d["subject"], (e, d)

        # The held registration is not an endless "pending": the hours service says why it is held.
        held = internal(stack, "hours", f"/internal/registrations/{rid_sub}")
        assert held["status"] == "held" and held["deadletter_id"] == ours[("hours", topics.HOURS_SUBMITTED,
                                                                            *bad_sub_at)]["id"], held
        assert held["reason"].startswith("held: ") and "minutes" in held["reason"], held

        # A retry of an unfixable record still fails: 409, and it stays open (one more attempt).
        for where in (("hours", topics.HOURS_SUBMITTED, *bad_sub_at), ("budget", topics.CARE_LOGGED, *raw_at)):
            reply = api.post(f"/deadletters/{ours[where]['id']}/retry", json={})
            assert reply.status_code == 409, reply.text
            again = {d["id"]: d for d in deadletters(api)}[ours[where]["id"]]
            assert again["status"] == "open" and again["attempts"] == 2, again
        assert api.post("/deadletters/hours-999999/retry", json={}).status_code == 404

        # Only the coordinator sees or retries dead letters.
        for role, subject in (("school", region.school_id), ("municipality", region.host)):
            with api.as_token(api.token_for(role, subject)) as other:
                assert other.get("/deadletters").status_code == 403
                assert other.post(f"/deadletters/{ours[('budget', topics.CARE_LOGGED, *raw_at)]['id']}/retry",
                                  json={}).status_code == 403
        assert {d["id"]: d["status"] for d in deadletters(api) if d["id"] in ids} == {i: "open" for i in ids}
        # Nothing else of this school was dead-lettered (the later registration applied cleanly).
        assert [d for d in deadletters(api) if d["subject"] in (first["registration_id"], later["registration_id"])] == []


def later_offset_above(stack: Stack, region: Region, poison_at: tuple[int, int]) -> bool:
    """The later registration's care.logged record sits after the poison on the same partition."""
    partition, offset = poison_at
    return any(r.partition == partition and r.offset > offset and b"poison-" in r.value and b"-later" in r.value
               for r in raw_records(stack, topics.CARE_LOGGED))


# --- 6. a gap in the log -------------------------------------------------------------------------------------

def test_a_gap_in_the_log_where_the_books_stop_is_passed(plain_stack: Stack) -> None:
    """Offsets without a record: a committed transaction's marker (Apache Kafka and Tansu), or offsets the
    embedded broker skipped when a produce failed around its restart (seen in the broker-restart test). The
    books stop just before the gap; the consumer, asked to read from there, gets the first record after it.
    That is not a consumer ahead of the books (seek back once), it is a gap: the records after it apply."""
    stack = plain_stack
    with Api(stack) as api:
        region = Region(api).build(pupils_per_group=2)
        tag = secrets.token_hex(3)
        first = region.registration(f"gap-{tag}-first", minutes=25)
        assert api.post("/hours", json=first).status_code == 202
        assert api.wait_status(first["registration_id"], {"accepted"})["status"] == "accepted"
        logged = care_logged_of(stack, first["registration_id"])

        rid = f"gap-{tag}-txn"
        cost = 35 * region.rate_cents
        (partition, offset), = produce_in_transaction(stack, topics.CARE_LOGGED, region.school_id, [orjson.dumps({
            **logged, "event_id": f"logged:{rid}", "registration_id": rid, "minutes": 35, "cost_cent_minutes": cost,
            "cost_cents": cent_minutes_to_cents(cost)})])
        tp = f"{topics.CARE_LOGGED}:{partition}"
        for service in ("budget", "settlement"):  # applied the record; the books stop at the marker's offset
            wait_for(f"{service} to apply the transaction's record",
                     lambda service=service: recorded(stack, service).get(tp) == offset + 1)

        later = region.registration(f"gap-{tag}-later", minutes=40)
        assert api.post("/hours", json=later).status_code == 202
        assert api.wait_status(later["registration_id"], {"accepted"})["status"] == "accepted"
        want = {region.arrangement_id: {"registrations": 3, "minutes": 100,
                                        "cost_cent_minutes": 100 * region.rate_cents}}
        wait_for("the registration after the gap in budget and settlement",
                 lambda: counts_reached(seen_books(stack, [region.arrangement_id]), want, hours=2), 60)
        seen = seen_books(stack, [region.arrangement_id])
        pot = seen["pots"][region.arrangement_id]
        assert (pot["registrations"], pot["minutes"], pot["spent_cents"]) == \
            (3, 100, cent_minutes_to_cents(100 * region.rate_cents)), pot
        item = seen["invariant"][region.arrangement_id]
        assert item["ok"] and (item["registrations"], item["cost_cent_minutes"]) == (3, 100 * region.rate_cents)
        ends, records = read_to_end(stack, topics.CARE_LOGGED)
        ours = [r.offset for r in records if r.partition == partition and r.offset > offset]
        assert ours and ours[0] > offset + 1, (offset, ours)  # the marker's offset holds no record
        for service in ("budget", "settlement"):
            assert recorded(stack, service)[tp] == ends[tp], (service, ends)
