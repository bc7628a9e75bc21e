"""Dead-letter routing: a record that cannot be processed is parked with its origin."""

from __future__ import annotations

from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from services.common import metrics, topics
from services.common.tracking import Origin
from tonne.v1.envelope_pb2 import DeadLetter


async def park(
    producer: AIOKafkaProducer,
    *,
    consumer: str,
    topic_prefix: str,
    origin: Origin,
    key: bytes | None,
    value: bytes | None,
    error_code: str,
    error: str,
) -> None:
    """Publish to the origin topic's dead-letter topic and wait for the broker's ack,
    so the caller may move past the record only once it is safely parked."""
    letter = DeadLetter(
        origin_topic=origin.topic,
        origin_partition=origin.partition,
        origin_offset=origin.offset,
        origin_key=key or b"",
        origin_value=value or b"",
        consumer=consumer,
        error_code=error_code,
        error=error[:4000],
    )
    letter.failed_at.FromDatetime(datetime.now(UTC))
    unprefixed = origin.topic.removeprefix(topic_prefix)
    await producer.send_and_wait(topic_prefix + topics.dead_letter(unprefixed), letter.SerializeToString(), key=key)
    metrics.DEAD_LETTERS.labels(consumer=consumer, topic=unprefixed, code=error_code).inc()
