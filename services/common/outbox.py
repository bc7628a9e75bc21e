"""Transactional outbox: records are written with their effect, relayed afterwards.

The relay publishes in id order with an idempotent producer and marks rows published.
A crash between send and mark republishes the same bytes; consumers deduplicate on
the envelope's event_id (see tracking.py), so the effect stays single.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta

import asyncpg
from aiokafka import AIOKafkaProducer

from tonne.v1.envelope_pb2 import Envelope

log = logging.getLogger(__name__)


def channel(schema: str) -> str:
    """Each schema's relay has its own channel and lock: relays never wait on each other."""
    return f"outbox_{schema}"


async def enqueue(conn: asyncpg.Connection, topic: str, key: str, envelope: Envelope) -> None:
    await enqueue_many(conn, [(topic, key, envelope)])


def queued(first: int, when: str = "true") -> str:
    """A WITH item `queued` that queues the rows of three arrays (topics, keys, values:
    parameters `first` to `first + 2`) in order, if `when` holds. Written inside the
    statement that makes the effect (an append, an order placed), with WAKE in its
    result, so effect, records and the relay's wake-up cost one round trip."""
    return (
        "queued AS (INSERT INTO outbox (topic, key, value) SELECT r.topic, r.key, r.value "
        f"FROM unnest(${first}::text[], ${first + 1}::bytea[], ${first + 2}::bytea[]) "
        f"WITH ORDINALITY AS r(topic, key, value, n) WHERE {when} ORDER BY r.n RETURNING 1)"
    )


# Wakes the schema's relay when the transaction commits, if `queued` queued anything
# (PostgreSQL sends one notification per transaction however often it is asked).
WAKE = "(SELECT pg_notify('outbox_' || current_schema(), '') FROM queued LIMIT 1)"


def queue_args(records: Sequence[tuple[str, str, Envelope]]) -> tuple[list[str], list[bytes], list[bytes]]:
    return (
        [topic for topic, _, _ in records],
        [key.encode() for _, key, _ in records],
        [envelope.SerializeToString() for _, _, envelope in records],
    )


async def enqueue_many(conn: asyncpg.Connection, records: Sequence[tuple[str, str, Envelope]]) -> None:
    """Queue records in order and wake the relay at commit, in one round trip."""
    if records:
        await conn.execute(f"WITH {queued(1)} SELECT {WAKE}", *queue_args(records))


class OutboxRelay:
    def __init__(
        self, pool: asyncpg.Pool, producer: AIOKafkaProducer, topic_prefix: str, schema: str, batch: int = 500
    ) -> None:
        self._pool = pool
        self._channel = channel(schema)
        self._producer = producer
        self._prefix = topic_prefix
        self._batch = batch
        self._wake = asyncio.Event()
        self.published = 0

    async def run(self) -> None:
        listener = await self._pool.acquire()

        def wake(*_: object) -> None:
            self._wake.set()

        await listener.add_listener(self._channel, wake)
        try:
            while True:
                self._wake.clear()
                if await self.publish_pending() == 0:
                    # Also wake periodically: a NOTIFY can be missed across reconnects.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=1.0)
        finally:
            await listener.remove_listener(self._channel, wake)
            await self._pool.release(listener)

    async def publish_pending(self) -> int:
        async with self._pool.acquire() as conn:
            # Advisory lock: one relay per schema even with N instances, keeping order.
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", self._channel):
                    return 0
                rows = await conn.fetch(
                    "SELECT id, topic, key, value FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
                    self._batch,
                )
                if not rows:
                    return 0
                sends = [await self._producer.send(self._prefix + r["topic"], r["value"], key=r["key"]) for r in rows]
                await asyncio.gather(*sends)
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                    [r["id"] for r in rows],
                )
        self.published += len(rows)
        return len(rows)


async def prune(conn: asyncpg.Connection, older_than: timedelta, batch: int = 10_000) -> int:
    """Delete up to `batch` rows published longer ago than `older_than`."""
    deleted: str = await conn.execute(
        "DELETE FROM outbox WHERE id IN "
        "(SELECT id FROM outbox WHERE published_at < now() - $1::interval ORDER BY published_at LIMIT $2)",
        older_than,
        batch,
    )
    return int(deleted.split()[-1])
