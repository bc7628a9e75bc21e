"""The state hash: SHA-256 over a canonical serialisation of a service's state.

    aggregates  = SHA-256 over (stream id, version, snapshot bytes) of every aggregate,
                  in stream-id order
    projections = SHA-256 over every projection table's rows, tables by name, rows in
                  primary-key order, each value type-tagged and length-prefixed
    state       = SHA-256 over the two digests above

Live, replay from zero and replay from the latest snapshot must agree (docs/decisions/0006).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from services.common.repository import Repository
from services.common.unit_of_work import Projector

Source = Literal["live", "snapshot", "zero"]


@dataclass(frozen=True)
class Projection:
    """A projection table and what of it the hash covers (never wall-clock columns)."""

    table: str
    columns: tuple[str, ...]
    order_by: tuple[str, ...]


@dataclass(frozen=True)
class StateHash:
    aggregates: str
    projections: str

    @property
    def state(self) -> str:
        return hashlib.sha256(f"{self.aggregates}:{self.projections}".encode()).hexdigest()

    def as_dict(self) -> dict[str, str]:
        return {"state": self.state, "aggregates": self.aggregates, "projections": self.projections}


def _encode(value: Any) -> bytes:
    if value is None:
        return b"n"
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, int):
        return b"i" + str(value).encode() + b";"
    if isinstance(value, bytes):
        return b"b" + str(len(value)).encode() + b":" + value
    if isinstance(value, str):
        data = value.encode()
        return b"s" + str(len(data)).encode() + b":" + data
    if isinstance(value, asyncpg.Range):
        return b"r" + _encode(value.lower) + _encode(value.upper) + _encode(value.lower_inc) + _encode(value.upper_inc)
    if isinstance(value, list | tuple):
        return b"l" + str(len(value)).encode() + b":" + b"".join(_encode(v) for v in value)
    raise TypeError(f"no canonical form for {type(value).__name__}")


async def digest_projections(conn: asyncpg.Connection, projections: Iterable[Projection]) -> str:
    h = hashlib.sha256()
    for projection in sorted(projections, key=lambda p: p.table):
        h.update(_encode(projection.table))
        columns, order = ", ".join(projection.columns), ", ".join(projection.order_by)
        query = f"SELECT {columns} FROM {projection.table} ORDER BY {order}"
        async with conn.transaction():
            async for row in conn.cursor(query, prefetch=2000):
                h.update(b"".join(_encode(value) for value in row.values()))
    return h.hexdigest()


async def digest_aggregates(conn: asyncpg.Connection, repositories: Sequence[Repository[Any]], source: Source) -> str:
    """Live: the aggregates in memory where they are, else loaded from snapshot + tail."""
    h = hashlib.sha256()
    for repository in sorted(repositories, key=lambda r: r.prefix):
        for stream_id in await repository.stream_ids(conn):
            aggregate = repository.cached(stream_id) if source == "live" else None
            if aggregate is None:
                aggregate = await repository.load(conn, stream_id, from_snapshot=source != "zero")
            h.update(_encode(stream_id) + _encode(aggregate.version) + _encode(aggregate.snapshot()))
    return h.hexdigest()


@dataclass(frozen=True)
class ServiceState:
    """What a service's state is made of: its aggregates, and the projection tables its
    projector folds recorded events into."""

    repositories: Sequence[Repository[Any]]
    project: Projector
    projections: Sequence[Projection]

    def forget(self) -> None:
        """Drop every cached aggregate: they load again, fresh, on next use."""
        for repository in self.repositories:
            repository.clear()

    async def hash(self, conn: asyncpg.Connection, source: Source = "live") -> StateHash:
        return StateHash(
            await digest_aggregates(conn, self.repositories, source),
            await digest_projections(conn, self.projections),
        )
