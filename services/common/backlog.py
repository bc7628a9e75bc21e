"""How far a consumer group is behind on a topic: the bound intake pushes back at."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from services.common.kafka import KafkaAccess


class GroupLag:
    """Records of `topic` that `group` has not committed yet, summed over partitions;
    asked of the broker at most every `every_seconds` (callers share the answer)."""

    def __init__(self, kafka: KafkaAccess, group: str, topic: str, every_seconds: float = 0.2) -> None:
        self._kafka = kafka
        self._group = group
        self._topic = topic
        self._every_ns = int(every_seconds * 1_000_000_000)
        self._partitions: list[TopicPartition] = []
        self._lag = 0
        self._at_ns: int | None = None  # when the lag was last measured
        self._started = asyncio.Lock()
        self._clients: tuple[AIOKafkaAdminClient, AIOKafkaConsumer] | None = None

    async def start(self) -> None:
        """Connect (once; `lag` calls it on first use)."""
        async with self._started:
            if self._clients is None:
                # Needs DESCRIBE on the topic and the group (implied by the READ its consumer has).
                admin = AIOKafkaAdminClient(**self._kafka.options())
                ends = AIOKafkaConsumer(**self._kafka.options(), enable_auto_commit=False)
                await admin.start()
                await ends.start()
                [described] = await admin.describe_topics([self._topic])
                found = sorted(p["partition"] for p in described["partitions"])
                self._partitions = [TopicPartition(self._topic, p) for p in found]
                self._clients = admin, ends

    @property
    def partitions(self) -> list[TopicPartition]:
        return list(self._partitions)

    async def stop(self) -> None:
        if self._clients is not None:
            admin, ends = self._clients
            await ends.stop()
            await admin.close()
            self._clients = None

    async def lag(self) -> int:
        """The lag last measured; a broker that cannot answer just now leaves it as it was."""
        if self._at_ns is None or time.monotonic_ns() - self._at_ns >= self._every_ns:
            try:
                await self.start()
                assert self._clients is not None
                admin, consumer = self._clients
                committed = await admin.list_consumer_group_offsets(self._group, partitions=self._partitions)
                ends = await consumer.end_offsets(self._partitions)
            except KafkaError:
                return self._lag
            behind = 0
            for partition, end in ends.items():
                done = committed.get(partition)
                behind += end - (done.offset if done is not None and done.offset >= 0 else 0)
            self._lag, self._at_ns = behind, time.monotonic_ns()
        return self._lag
