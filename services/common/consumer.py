"""Consuming with effectively-once effect.

A faust agent (concurrency=1, at-least-once) hands each record to `process`, which
decodes it, then records its event id in `tracking` and applies the handler in one
unit of work (one PostgreSQL transaction). Redeliveries are skipped; a record that
cannot be decoded or keeps failing is parked on the topic's dead-letter topic and the
partition moves on. A failed attempt rolls back and drops only the aggregates it loaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
import faust
from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message

from services.common import metrics
from services.common.deadletter import park
from services.common.envelope import UndecodableRecord, unwrap
from services.common.eventstore import ConcurrencyError
from services.common.logs import correlation_id
from services.common.tracking import Origin, first_delivery
from services.common.unit_of_work import UnitOfWork
from tonne.v1.envelope_pb2 import Envelope

log = logging.getLogger(__name__)

Handler = Callable[[UnitOfWork, Envelope, Message], Awaitable[None]]

ATTEMPTS = 3
# A concurrent writer moved the stream: reload and decide again, a bounded number of times.
CONFLICT_ATTEMPTS = 10
# Errors of the infrastructure, not of the record: retry until it comes back.
_TRANSIENT = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


class Consumer:
    def __init__(
        self,
        *,
        name: str,
        bootstrap: str,
        topic_prefix: str,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        handlers: Mapping[str, Handler],
        unit_of_work: Callable[[], UnitOfWork],
    ) -> None:
        self.name = name
        self._bootstrap = bootstrap
        self._prefix = topic_prefix
        self._pool = pool
        self._producer = producer
        self._handlers = dict(handlers)
        self._unit_of_work = unit_of_work
        self._app: faust.App | None = None

    async def process(self, origin: Origin, key: bytes | None, value: bytes | None) -> str:
        """Apply one record at most once; returns the outcome for metrics and tests."""
        topic = origin.topic.removeprefix(self._prefix)
        try:
            envelope, payload = unwrap(value)
        except UndecodableRecord as exc:
            await self._dead_letter(origin, key, value, exc.code, str(exc), event_id=None)
            return self._count(topic, "dead_lettered")
        token = correlation_id.set(envelope.correlation_id)
        try:
            return self._count(topic, await self._apply(topic, origin, key, value, envelope, payload))
        finally:
            correlation_id.reset(token)

    async def _apply(
        self,
        topic: str,
        origin: Origin,
        key: bytes | None,
        value: bytes | None,
        envelope: Envelope,
        payload: Message,
    ) -> str:
        handler = self._handlers[topic]
        failure: Exception | None = None
        attempt = conflicts = 0
        while attempt < ATTEMPTS:
            try:
                with metrics.HANDLE_SECONDS.labels(self.name, topic).time():
                    async with self._unit_of_work() as uow:
                        if not await first_delivery(uow.conn, self.name, envelope.event_id, origin):
                            return "duplicate"
                        await handler(uow, envelope, payload)
                return "applied"
            except _TRANSIENT as exc:
                log.warning("infrastructure unavailable, retrying: %r", exc)
                await asyncio.sleep(1.0)  # back-off between reconnects, not a readiness wait
            except ConcurrencyError as exc:
                conflicts += 1
                log.info("%s: %s; deciding again", self.name, exc)
                if conflicts >= CONFLICT_ATTEMPTS:
                    attempt, failure = ATTEMPTS, exc
            except Exception as exc:
                attempt += 1
                failure = exc
                log.exception("%s failed on %s (attempt %d)", self.name, envelope.type, attempt)
        assert failure is not None
        code = getattr(failure, "code", "HANDLER_FAILED")
        await self._dead_letter(origin, key, value, code, repr(failure), envelope.event_id)
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
                await first_delivery(conn, self.name, event_id, origin)

    def _count(self, topic: str, outcome: str) -> str:
        metrics.RECORDS.labels(self.name, topic, outcome).inc()
        return outcome

    # --- faust wiring ---

    async def start(self) -> None:
        app = faust.App(
            f"{self._prefix}tonne-{self.name}",
            broker=f"kafka://{self._bootstrap}",
            web_enabled=False,
            autodiscover=False,
            consumer_auto_offset_reset="earliest",
            topic_allow_declare=False,  # topics are created by ensure_topics
            topic_disable_leader=True,
            producer_acks=-1,
            broker_commit_every=100,
            broker_commit_interval=0.5,
            stream_wait_empty=False,
            # A crashed instance's partitions move on after 10 s, not faust's default 60 s.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=2.0,
        )
        channel = app.topic(
            *(self._prefix + topic for topic in self._handlers),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

        # concurrency=1: faust must never commit past a record still in flight.
        @app.agent(channel, concurrency=1, name=f"{self.name}-records")
        async def records(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                message = event.message
                await self.process(
                    Origin(message.topic, message.partition, message.offset),
                    message.key,
                    message.value,
                )

        self._app = app
        await app.start()

    @property
    def assigned(self) -> bool:
        return self._app is not None and bool(self._app.consumer.assignment())

    async def stop(self) -> None:
        if self._app is not None:
            await self._app.stop()
