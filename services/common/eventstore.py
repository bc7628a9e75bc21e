"""Append-only event store: streams with optimistic concurrency, and their snapshots."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg

from services.common import outbox
from tonne.v1.envelope_pb2 import Envelope


class ConcurrencyError(Exception):
    """Another writer appended to the stream first; reload and decide again."""


@dataclass(frozen=True)
class Snapshot:
    stream_id: str
    version: int
    schema_version: int
    state: bytes


@dataclass(frozen=True)
class Call:
    """A server-side function called with `args`, inside another statement."""

    function: str
    args: tuple[object, ...]

    def sql(self, first: int) -> str:
        """The call, its arguments as parameters `first`, `first + 1`, …"""
        return f"{self.function}({', '.join(f'${n}' for n in range(first, first + len(self.args)))})"


_APPEND = (
    "appended AS (INSERT INTO events (stream_id, version, event_id, type, envelope) "
    "SELECT $1, r.version, r.event_id, r.type, r.envelope "
    "FROM unnest($2::bigint[], $3::uuid[], $4::text[], $5::bytea[]) "
    "WITH ORDINALITY AS r(version, event_id, type, envelope, n) ORDER BY r.n)"
)


async def append(
    conn: asyncpg.Connection,
    stream_id: str,
    expected_version: int,
    envelopes: list[Envelope],
    published: Sequence[tuple[str, str, Envelope]] = (),
    then: Sequence[Call] = (),
) -> int:
    """Append after `expected_version`, queue `published` (topic, key, envelope) on the
    outbox and make the calls `then` (the events' projection), in one statement; returns
    the stream's new version."""
    versions = list(range(expected_version + 1, expected_version + 1 + len(envelopes)))
    also, first = "", 9
    for call in then:
        also, first = f"{also}, {call.sql(first)}", first + len(call.args)
    try:
        await conn.execute(
            f"WITH {_APPEND}, {outbox.queued(6)} SELECT {outbox.WAKE}{also}",
            stream_id,
            versions,
            [e.event_id for e in envelopes],
            [e.type for e in envelopes],
            [e.SerializeToString() for e in envelopes],
            *outbox.queue_args(published),
            *(arg for call in then for arg in call.args),
        )
    except asyncpg.UniqueViolationError as exc:
        raise ConcurrencyError(f"stream {stream_id} moved past version {expected_version}") from exc
    return expected_version + len(envelopes)


async def read_stream(conn: asyncpg.Connection, stream_id: str, after_version: int = 0) -> list[Envelope]:
    """The stream's events after `after_version`, in order."""
    rows = await conn.fetch(
        "SELECT envelope FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version",
        stream_id,
        after_version,
    )
    return [_envelope(row["envelope"]) for row in rows]


async def latest_snapshot(conn: asyncpg.Connection, stream_id: str) -> Snapshot | None:
    row = await conn.fetchrow("SELECT version, schema_version, state FROM snapshots WHERE stream_id = $1", stream_id)
    return Snapshot(stream_id, row["version"], row["schema_version"], row["state"]) if row else None


async def save_snapshot(conn: asyncpg.Connection, snapshot: Snapshot) -> None:
    """Keep only the newest snapshot of a stream; an older one never replaces it."""
    await conn.execute(
        "INSERT INTO snapshots (stream_id, version, schema_version, state) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (stream_id) DO UPDATE SET version = $2, schema_version = $3, state = $4, taken_at = now() "
        "WHERE snapshots.version < $2",
        snapshot.stream_id,
        snapshot.version,
        snapshot.schema_version,
        snapshot.state,
    )


async def stream_ids(conn: asyncpg.Connection, prefix: str) -> list[str]:
    """Every stream whose id starts with `prefix` (replay and state hashing only)."""
    rows = await conn.fetch(
        "SELECT stream_id FROM events WHERE version = 1 AND left(stream_id, $2) = $1 ORDER BY stream_id",
        prefix,
        len(prefix),
    )
    return [row["stream_id"] for row in rows]


async def read_all(conn: asyncpg.Connection, page: int = 5000) -> AsyncIterator[Envelope]:
    """Every event in global order, a page at a time (replay only)."""
    after = 0
    while True:
        rows = await conn.fetch(
            "SELECT position, envelope FROM events WHERE position > $1 ORDER BY position LIMIT $2", after, page
        )
        for row in rows:
            yield _envelope(row["envelope"])
        if len(rows) < page:
            return
        after = rows[-1]["position"]


def _envelope(data: bytes) -> Envelope:
    envelope = Envelope()
    envelope.ParseFromString(data)
    return envelope
