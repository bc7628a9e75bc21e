"""Append-only event store with optimistic concurrency on (stream_id, version)."""

from __future__ import annotations

import asyncpg

from tonne.v1.envelope_pb2 import Envelope


class ConcurrencyError(Exception):
    """Another writer appended to the stream first; reload and decide again."""


async def append(conn: asyncpg.Connection, stream_id: str, expected_version: int, envelopes: list[Envelope]) -> int:
    """Append after `expected_version`; returns the stream's new version."""
    version = expected_version
    rows = []
    for envelope in envelopes:
        version += 1
        rows.append((stream_id, version, envelope.event_id, envelope.type, envelope.SerializeToString()))
    try:
        await conn.executemany(
            "INSERT INTO events (stream_id, version, event_id, type, envelope) VALUES ($1, $2, $3::uuid, $4, $5)",
            rows,
        )
    except asyncpg.UniqueViolationError as exc:
        raise ConcurrencyError(f"stream {stream_id} moved past version {expected_version}") from exc
    return version


async def read_all(conn: asyncpg.Connection) -> list[tuple[str, int, Envelope]]:
    """Every event of this schema in global order: (stream_id, version, envelope)."""
    rows = await conn.fetch("SELECT stream_id, version, envelope FROM events ORDER BY position")
    result = []
    for row in rows:
        envelope = Envelope()
        envelope.ParseFromString(row["envelope"])
        result.append((row["stream_id"], row["version"], envelope))
    return result
