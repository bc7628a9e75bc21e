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


async def first_deliveries(conn: asyncpg.Connection, consumer: str, records: list[tuple[str, Origin]]) -> set[str]:
    """Record the events as consumed, in one statement; returns the ids not seen before.
    Call inside the transaction that applies their effects, so both commit or neither."""
    rows = await conn.fetch(
        'INSERT INTO tracking (consumer, event_id, topic, partition, "offset") '
        "SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int[], $5::bigint[]) "
        "ON CONFLICT DO NOTHING RETURNING event_id",
        consumer,
        [event_id for event_id, _ in records],
        [origin.topic for _, origin in records],
        [origin.partition for _, origin in records],
        [origin.offset for _, origin in records],
    )
    return {row["event_id"] for row in rows}


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
