"""How far a consumer group is behind on a topic: the bound intake pushes back at."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError


class GroupLag:
    """Records of `topic` that `group` has not committed yet, summed over partitions;
    asked of the broker at most every `every` seconds (callers share the answer)."""

    def __init__(self, bootstrap: str, group: str, topic: str, every: float = 0.2) -> None:
        self._group = group
        self._topic = topic
        self._every = every
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._ends = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._partitions: list[TopicPartition] = []
        self._lag = 0
        self._at = float("-inf")

    async def start(self) -> None:
        await self._admin.start()
        await self._ends.start()
        [described] = await self._admin.describe_topics([self._topic])
        found = sorted(p["partition"] for p in described["partitions"])
        self._partitions = [TopicPartition(self._topic, p) for p in found]

    @property
    def partitions(self) -> list[TopicPartition]:
        return list(self._partitions)

    async def stop(self) -> None:
        await self._ends.stop()
        await self._admin.close()

    async def lag(self) -> int:
        """The lag last measured; a broker that cannot answer just now leaves it as it was."""
        if time.monotonic() - self._at >= self._every:
            try:
                committed = await self._admin.list_consumer_group_offsets(self._group, partitions=self._partitions)
                ends = await self._ends.end_offsets(self._partitions)
            except KafkaError:
                return self._lag
            behind = 0
            for partition, end in ends.items():
                done = committed.get(partition)
                behind += end - (done.offset if done is not None and done.offset >= 0 else 0)
            self._lag, self._at = behind, time.monotonic()
        return self._lag
