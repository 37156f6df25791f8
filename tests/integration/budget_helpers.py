"""Helpers for the budget and dashboard tests: reshape a test region's arrangement, wait for its pot."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import httpx
from kafka import KafkaProducer

from tests.integration.client import Api, Region

INDIVIDUAL_RATE = 9664


def put_arrangement(region: Region, **overrides: Any) -> dict[str, Any]:
    """Re-PUT the region's arrangement with some fields changed (cap, rates, installments, ...)."""
    body = {"school_id": region.school_id, "group_ids": ["g1", "g2"], "start": region.start.isoformat(),
            "end": region.end.isoformat(),
            "rates": [{"from": region.start.isoformat(), "hourly_rate_cents": region.rate_cents}],
            "cap_cents": 16_380_000, "individual_rate_cents": INDIVIDUAL_RATE, "settlement": {"key": "residence_hours"}}
    body.update(overrides)
    region.api.ok_put(f"/arrangements/{region.arrangement_id}", body)
    return body


def wait_pot(api: Api, arrangement_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 120
             ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            reply = api.get(f"/pots/{arrangement_id}")
            last = reply.json() if reply.status_code == 200 else (reply.status_code, reply.text)
            if reply.status_code == 200 and done(last):
                return last
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"pot {arrangement_id} never got there; last seen {last}")


def republish(broker_port: int, topic: str, key: bytes, values: Iterable[bytes]) -> None:
    """Put records on a topic again, as a redelivery would (acks=all, flushed)."""
    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{broker_port}", acks="all")
    try:
        for value in values:
            producer.send(topic, key=key, value=value)
        producer.flush(30)
    finally:
        producer.close()
