"""Read a whole topic from offset 0 with kafka-python (no consumer group), for end-to-end assertions.
Records that are not events (no `event_id`, e.g. test_budget's poison record) are left out."""
from __future__ import annotations

import time
from typing import Any, Callable

import orjson
from kafka import KafkaConsumer, TopicPartition


def read_topic(broker_port: int, topic: str, until: Callable[[list[dict[str, Any]]], bool],
               timeout: float = 60) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{broker_port}", group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest", consumer_timeout_ms=1000)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                for record in records:
                    try:
                        event = orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        continue
                    # Only events: a poison record another test put on the shared stack's topic is not one.
                    if isinstance(event, dict) and "event_id" in event:
                        events.append(event)
            if until(events):
                return events
        raise AssertionError(f"{topic}: condition not met within {timeout}s ({len(events)} events read)")
    finally:
        consumer.close()
