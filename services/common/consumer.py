"""Consuming with effectively-once effect, a partition's batch at a time.

An aiokafka consumer (one per process, in the service's consumer group) fetches records;
each partition's batch is applied in ONE unit of work (group commit): the tracking rows of
its records (envelope event ids) and every handler's effects commit together, then the
partition's offset is committed. Redeliveries are recognised by their event id and skipped.
A batch that fails is applied again record by record, so only a record that keeps failing
is parked on the topic's dead-letter topic (with its origin); an undecodable record is
parked at once. The partition always moves on. See docs/decisions/0001 and 0008.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from google.protobuf.message import Message

from services.common import metrics
from services.common.deadletter import park
from services.common.envelope import UndecodableRecord, unwrap
from services.common.eventstore import ConcurrencyError
from services.common.kafka import KafkaAccess
from services.common.logs import correlation_id
from services.common.tracking import Origin, first_deliveries
from services.common.unit_of_work import UnitOfWork
from tonne.v1.envelope_pb2 import Envelope

log = logging.getLogger(__name__)

Handler = Callable[[UnitOfWork, Envelope, Message], Awaitable[None]]

ATTEMPTS = 3
# A concurrent writer moved a stream: reload and decide again, a bounded number of times.
CONFLICT_ATTEMPTS = 10
MAX_BATCH = 500
# Errors of the infrastructure, not of the record: retry until it comes back.
_TRANSIENT = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)


@dataclass(frozen=True)
class Delivery:
    origin: Origin
    key: bytes | None
    value: bytes | None
    envelope: Envelope
    payload: Message


class _Revocations(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # Wait for the batch in flight to commit; then no aggregate this instance held
        # may be trusted any more (another instance will own some of them).
        async with self._consumer.busy:
            self._consumer.on_revoked()

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("%s assigned %s", self._consumer.name, sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))


class Consumer:
    def __init__(
        self,
        *,
        name: str,
        kafka: KafkaAccess,
        topic_prefix: str,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        handlers: Mapping[str, Handler],
        unit_of_work: Callable[[], UnitOfWork],
        on_revoked: Callable[[], None] = lambda: None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.name = name
        self._kafka = kafka
        self._prefix = topic_prefix
        self._pool = pool
        self._producer = producer
        self._handlers = dict(handlers)
        self._unit_of_work = unit_of_work
        self.on_revoked = on_revoked
        self._max_batch = max_batch
        self.busy = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    # --- running ---

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **self._kafka.options(),
            group_id=f"{self._prefix}tonne-{self.name}",
            client_id=f"tonne-{self.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._max_batch,
            # A crashed instance's partitions move on after 10 s.
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
        )
        consumer.subscribe([self._prefix + topic for topic in self._handlers], listener=_Revocations(self))
        await consumer.start()
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name=f"{self.name}-consumer")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """Say so at once when consuming stops for good (/readyz turns 503 with it)."""
        if not task.cancelled() and (error := task.exception()) is not None:
            log.critical("%s: consuming stopped: %r", self.name, error, exc_info=error)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    @property
    def assigned(self) -> bool:
        return self._consumer is not None and bool(self._consumer.assignment())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while True:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=self._max_batch)
            for partition, records in fetched.items():
                async with self.busy:
                    await self.process(records)
                    position = records[-1].offset + 1
                    try:
                        await consumer.commit({partition: position})
                    except KafkaError as exc:
                        # A rebalance took the partition: its effects and tracking rows are
                        # committed in PostgreSQL, so the next owner skips these records.
                        log.warning("%s: offset %d of %s not committed: %r", self.name, position, partition, exc)
                # A rebalance during the batch may have taken the partition: no lag to tell
                # (asking would raise and end this loop, and with it all consuming).
                if partition in consumer.assignment() and (end := consumer.highwater(partition)) is not None:
                    topic = partition.topic.removeprefix(self._prefix)
                    metrics.LAG.labels(self.name, topic, str(partition.partition)).set(max(0, end - position))

    # --- applying ---

    async def process(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[str]:
        """Apply one partition's records; returns each record's outcome (for metrics and tests)."""
        deliveries: list[Delivery] = []
        outcomes: dict[int, str] = {}
        for record in records:
            origin = Origin(record.topic, record.partition, record.offset)
            try:
                envelope, payload = unwrap(record.value)
            except UndecodableRecord as exc:
                await self._dead_letter(origin, record.key, record.value, exc.code, str(exc), event_id=None)
                outcomes[record.offset] = "dead_lettered"
                continue
            deliveries.append(Delivery(origin, record.key, record.value, envelope, payload))
        if deliveries:
            try:
                outcomes |= await self._apply_together(deliveries)
            except Exception:
                log.warning("%s: a batch of %d failed; applying its records one by one", self.name, len(deliveries))
                for delivery in deliveries:
                    outcomes[delivery.origin.offset] = await self._apply_alone(delivery)
        result = [outcomes[record.offset] for record in records]
        for record, outcome in zip(records, result, strict=True):
            metrics.RECORDS.labels(self.name, record.topic.removeprefix(self._prefix), outcome).inc()
        return result

    async def _apply_together(self, deliveries: list[Delivery]) -> dict[int, str]:
        """Group commit: every record of the batch in one unit of work, retried while the
        infrastructure is away or a stream moved under it."""
        conflicts = 0
        while True:
            try:
                with metrics.BATCH_SECONDS.labels(self.name).time():
                    async with self._unit_of_work() as uow:
                        return await self._apply(uow, deliveries)
            except _TRANSIENT as exc:
                log.warning("infrastructure unavailable, retrying: %r", exc)
                await asyncio.sleep(1.0)  # back-off between reconnects, not a readiness wait
            except (ConcurrencyError, asyncpg.DeadlockDetectedError) as exc:
                conflicts += 1
                log.info("%s: %s; deciding again", self.name, exc)
                if conflicts >= CONFLICT_ATTEMPTS:
                    raise

    async def _apply(self, uow: UnitOfWork, deliveries: Sequence[Delivery]) -> dict[int, str]:
        fresh = await first_deliveries(uow.conn, self.name, [(d.envelope.event_id, d.origin) for d in deliveries])
        outcomes = {}
        for delivery in deliveries:
            if delivery.envelope.event_id not in fresh:
                outcomes[delivery.origin.offset] = "duplicate"
                continue
            fresh.discard(delivery.envelope.event_id)  # the same record twice in one batch
            token = correlation_id.set(delivery.envelope.correlation_id)
            try:
                topic = delivery.origin.topic.removeprefix(self._prefix)
                await self._handlers[topic](uow, delivery.envelope, delivery.payload)
            finally:
                correlation_id.reset(token)
            outcomes[delivery.origin.offset] = "applied"
        return outcomes

    async def _apply_alone(self, delivery: Delivery) -> str:
        failure: Exception | None = None
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return (await self._apply_together([delivery]))[delivery.origin.offset]
            except Exception as exc:
                failure = exc
                log.exception("%s failed on %s (attempt %d)", self.name, delivery.envelope.type, attempt)
        assert failure is not None
        code = getattr(failure, "code", "HANDLER_FAILED")
        await self._dead_letter(
            delivery.origin, delivery.key, delivery.value, code, repr(failure), delivery.envelope.event_id
        )
        return "dead_lettered"

    async def _dead_letter(
        self,
        origin: Origin,
        key: bytes | None,
        value: bytes | None,
        code: str,
        error: str,
        event_id: str | None,
    ) -> None:
        await park(
            self._producer,
            consumer=self.name,
            topic_prefix=self._prefix,
            origin=origin,
            key=key,
            value=value,
            error_code=code,
            error=error,
        )
        log.error("parked %s:%d@%d on the dead-letter topic: %s", origin.topic, origin.partition, origin.offset, code)
        if event_id:
            # A redelivery of a parked record must not be applied or parked again.
            async with self._pool.acquire() as conn:
                await first_deliveries(conn, self.name, [(event_id, origin)])
