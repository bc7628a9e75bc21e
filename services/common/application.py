"""The service-layer loop every service shares: decide, record, publish, apply.

State lives in memory as a fold over the service's own event table. A change is
recorded (event store + outbox) in the caller's transaction and then applied; if
that transaction fails, the consumer calls `recover`, which folds the store again.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
from google.protobuf.message import Message

from services.common import eventstore, outbox
from services.common.envelope import Context, payload_of, wrap
from tonne.v1.envelope_pb2 import Envelope

# (topic, key) pairs a recorded event is published to.
Destinations = Sequence[tuple[str, str]]


class Application(ABC):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        # One decision at a time: HTTP requests and consumed records share the state.
        self.lock = asyncio.Lock()
        self._versions: dict[str, int] = {}
        self.reset()

    @abstractmethod
    def reset(self) -> None:
        """Start from empty state."""

    @abstractmethod
    def apply(self, event: Message) -> None:
        """Fold one recorded event into the state."""

    async def recover(self) -> None:
        async with self.lock, self.pool.acquire() as conn:
            self.reset()
            self._versions = {}
            for stream_id, version, envelope in await eventstore.read_all(conn):
                self.apply(payload_of(envelope))
                self._versions[stream_id] = version

    async def record(
        self,
        conn: asyncpg.Connection,
        stream_id: str,
        events: Sequence[tuple[Message, Destinations]],
        context: Context,
    ) -> list[Envelope]:
        """Append `events` to the stream, queue them for their topics, apply them."""
        now = datetime.now(UTC)
        version = self._versions.get(stream_id, 0)
        envelopes = [
            wrap(event, aggregate_id=stream_id, context=context, occurred_at=now, sequence=version + i)
            for i, (event, _) in enumerate(events, start=1)
        ]
        self._versions[stream_id] = await eventstore.append(conn, stream_id, version, envelopes)
        for envelope, (event, destinations) in zip(envelopes, events, strict=True):
            for topic, key in destinations:
                await outbox.enqueue(conn, topic, key, envelope)
            self.apply(event)
        return envelopes

    @staticmethod
    async def send(conn: asyncpg.Connection, message: Message, topic: str, key: str, context: Context) -> Envelope:
        """Queue a command for another service without recording it as our event."""
        envelope = wrap(message, aggregate_id=key, context=context, occurred_at=datetime.now(UTC))
        await outbox.enqueue(conn, topic, key, envelope)
        return envelope
