"""Loading aggregates by stream id: a bounded cache, else the latest snapshot plus the tail."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import asyncpg

from services.common import eventstore
from services.common.aggregate import Aggregate
from services.common.envelope import payload_of

A = TypeVar("A", bound=Aggregate)


class Repository(Generic[A]):
    """The aggregates of one kind, whose stream ids all start with `prefix`."""

    def __init__(
        self,
        kind: type[A],
        prefix: str,
        *,
        snapshot_every: int,
        cache_size: int,
        create: Callable[[str], A] | None = None,
    ) -> None:
        self.kind = kind
        self.prefix = prefix
        self.snapshot_every = snapshot_every
        self._create = create or kind
        self._cache: OrderedDict[str, A] = OrderedDict()
        self._cache_size = cache_size

    def stream_id(self, key: str) -> str:
        return self.prefix + key

    def key(self, stream_id: str) -> str:
        return stream_id.removeprefix(self.prefix)

    def cached(self, stream_id: str) -> A | None:
        return self._cache.get(stream_id)

    async def get(self, conn: asyncpg.Connection, stream_id: str, version: int | None = None) -> A:
        """The committed aggregate: from memory brought up to date with any events another
        instance appended since (one indexed read), or loaded and kept once it exists.
        `version`: the stream's version as the caller's transaction just read it; a cached
        copy at that version needs no read (a later append by anyone else fails ours)."""
        aggregate = self._cache.get(stream_id)
        if aggregate is None:
            aggregate = await self.load(conn, stream_id)
            if aggregate.version:
                self._keep(aggregate)
        else:
            self._cache.move_to_end(stream_id)
            if aggregate.version != version:
                tail = await eventstore.read_stream(conn, stream_id, aggregate.version)
                aggregate.mutate(payload_of(envelope) for envelope in tail)
        return aggregate

    def _keep(self, aggregate: A) -> None:
        self._cache[aggregate.stream_id] = aggregate
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def load(self, conn: asyncpg.Connection, stream_id: str, *, from_snapshot: bool = True) -> A:
        """Restore from the latest snapshot (unless told not to) and fold the tail."""
        snapshot = await eventstore.latest_snapshot(conn, stream_id) if from_snapshot else None
        if snapshot is not None and snapshot.schema_version == self.kind.SNAPSHOT_SCHEMA:
            aggregate = self.kind.restore(stream_id, snapshot.state)
            aggregate.version = aggregate.snapshot_version = snapshot.version
        else:
            aggregate = self._create(stream_id)
        tail = await eventstore.read_stream(conn, stream_id, aggregate.version)
        aggregate.mutate(payload_of(envelope) for envelope in tail)
        return aggregate

    def committed(self, aggregate: A) -> eventstore.Snapshot | None:
        """Keep an aggregate whose recorded events just committed; a snapshot when one is due."""
        self._keep(aggregate)
        if aggregate.version - aggregate.snapshot_version < self.snapshot_every:
            return None
        aggregate.snapshot_version = aggregate.version
        state = aggregate.snapshot()
        return eventstore.Snapshot(aggregate.stream_id, aggregate.version, self.kind.SNAPSHOT_SCHEMA, state)

    def evict(self, stream_id: str) -> None:
        self._cache.pop(stream_id, None)

    def clear(self) -> None:
        """Forget every cached aggregate (partitions moved to other instances)."""
        self._cache.clear()

    async def stream_ids(self, conn: asyncpg.Connection) -> list[str]:
        return await eventstore.stream_ids(conn, self.prefix)
