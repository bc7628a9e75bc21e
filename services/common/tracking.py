"""Consumer tracking: one effect per record, however often it is delivered."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import asyncpg


@dataclass(frozen=True)
class Origin:
    topic: str
    partition: int
    offset: int


async def first_delivery(conn: asyncpg.Connection, consumer: str, event_id: str, origin: Origin) -> bool:
    """Record the event as consumed; False when it already was. Call inside the
    transaction that applies its effect, so both commit or neither does."""
    inserted = await conn.fetchval(
        'INSERT INTO tracking (consumer, event_id, topic, partition, "offset") '
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true",
        consumer,
        event_id,
        origin.topic,
        origin.partition,
        origin.offset,
    )
    return bool(inserted)


async def prune(conn: asyncpg.Connection, older_than: timedelta, batch: int = 10_000) -> int:
    """Forget up to `batch` consumed ids older than `older_than`: past the broker's
    retention no redelivery can carry them any more."""
    deleted: str = await conn.execute(
        "DELETE FROM tracking WHERE ctid IN "
        "(SELECT ctid FROM tracking WHERE processed_at < now() - $1::interval LIMIT $2)",
        older_than,
        batch,
    )
    return int(deleted.split()[-1])
