"""Helpers for tests that talk to the running stack: waiting on conditions, Kafka I/O."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from google.protobuf.message import Message

from services.common.envelope import Context, wrap

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 60.0) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)  # poll interval inside a deadline, not a readiness guess
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


async def publish(bootstrap: str, topic: str, key: str, message: Message, actor: str) -> str:
    """Publish one enveloped message as a national registry or another service would."""
    envelope = wrap(message, aggregate_id=key, context=Context.new(actor), occurred_at=datetime.now(UTC))
    await publish_raw(bootstrap, topic, key.encode(), envelope.SerializeToString())
    return envelope.event_id


async def publish_raw(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str, topic: str, until: Callable[[list[ConsumerRecord]], bool], timeout: float = 60.0
) -> list[ConsumerRecord]:
    """Read `topic` from the beginning until `until(records)` holds."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout
        while not until(records):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out reading {topic}: {len(records)} records seen")
            batch = await consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
            for partition_records in batch.values():
                records.extend(partition_records)
    finally:
        await consumer.stop()
    return records
