"""The consumer-group lag intake pushes back at, measured on the real broker."""

from __future__ import annotations

from collections.abc import Awaitable

from aiokafka import AIOKafkaConsumer

from services.common import topics
from services.common.backlog import GroupLag
from services.common.kafka import KafkaAccess
from services.common.topics import ensure_topics
from tests.support import eventually, publish_raw


async def equals(measured: Awaitable[int], expected: int) -> bool:
    return await measured == expected


async def test_lag_counts_what_the_group_has_not_committed(kafka_access: KafkaAccess, topic_prefix: str) -> None:
    kafka_bootstrap = kafka_access.bootstrap
    prefix = topic_prefix + "backlog."
    await ensure_topics(kafka_access, prefix)
    topic, group = prefix + topics.MATCHING_ORDERS, prefix + "engine"
    for n in range(5):
        await publish_raw(kafka_bootstrap, topic, b"one-key-one-partition", f"order {n}".encode())
    lag = GroupLag(kafka_access, group, topic, every_seconds=0)
    await lag.start()
    consumer = AIOKafkaConsumer(**kafka_access.options(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        # Nothing committed yet (a new broker may first need to elect the group's coordinator).
        await eventually(lambda: equals(lag.lag(), 5), "the lag of five uncommitted records")
        [filled] = [tp for tp, end in (await consumer.end_offsets(lag.partitions)).items() if end == 5]
        consumer.assign([filled])
        await consumer.commit({filled: 3})
        await eventually(lambda: equals(lag.lag(), 2), "the lag after committing three")
    finally:
        await consumer.stop()
        await lag.stop()
