"""Read a whole topic from offset 0 with kafka-python (no consumer group), for end-to-end assertions."""
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
                events.extend(orjson.loads(r.value) for r in records)
            if until(events):
                return events
        raise AssertionError(f"{topic}: condition not met within {timeout}s ({len(events)} events read)")
    finally:
        consumer.close()
