"""One transaction: events, outbox rows, projections and tracking commit together.

    async with service.unit_of_work() as uow:
        book = await uow.load(books, instrument_id)
        await uow.record(book, [(e, destinations) for e in book.submit(order, instrument)], context)

An aggregate is locked from `load` until the unit of work ends, and every read of an
aggregate goes through `load`, so nobody sees its uncommitted state; recording folds the
events into it at once, so a batch can decide on one aggregate many times (group
commit). A failed unit of work drops the aggregates it loaded: the next use reloads them
from the store, so memory only ever keeps what committed.

A deferred unit of work (one decision: reads first, then its writes) holds its writes
until it ends. A single write then runs as a transaction of its own: one statement, with
no BEGIN and COMMIT round trips; several run in one transaction. Under READ COMMITTED
every read takes its own snapshot in either mode, and the stream's version check (and
any check the projection makes) fails a write whose facts moved.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Any, Protocol, TypeVar

import asyncpg
from google.protobuf.message import Message

from services.common import eventstore, outbox
from services.common.aggregate import Aggregate
from services.common.envelope import Context, wrap
from services.common.repository import Repository
from tonne.v1.envelope_pb2 import Envelope

log = logging.getLogger(__name__)

# (topic, key) pairs a recorded event is published to.
Destinations = Sequence[tuple[str, str]]
# Folds a recorded event into the service's projection tables, in the recording transaction.
Projector = Callable[[asyncpg.Connection, Envelope, Message], Awaitable[None]]
# An event's whole projection as server-side calls, made inside the append's statement;
# None when it takes more (then the Projector runs).
Inline = Callable[[Envelope, Message], Sequence[eventstore.Call] | None]
# A write to the database: (run it on a connection, whether it is one statement).
_Write = tuple[Callable[[asyncpg.Connection], Awaitable[object]], bool]

A = TypeVar("A", bound=Aggregate)


class Gathered(Protocol):
    """Writes gathered across the records of a unit of work, made in one go before commit."""

    async def flush(self, conn: asyncpg.Connection) -> None: ...


G = TypeVar("G", bound=Gathered)


class StreamLocks:
    """One writer per stream inside a process; the version check covers other processes."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, stream_id: str) -> asyncio.Lock:
        lock = self._locks.get(stream_id)
        if lock is None:
            lock = self._locks[stream_id] = asyncio.Lock()
        return lock


class UnitOfWork:
    def __init__(
        self,
        pool: asyncpg.Pool,
        project: Projector,
        locks: StreamLocks,
        inline: Inline | None = None,
        deferred: bool = False,
    ) -> None:
        self._pool = pool
        self._project = project
        self._inline = inline
        self._locks = locks
        self._deferred = deferred
        self._pending: list[_Write] = []
        self._held: list[asyncio.Lock] = []
        self._loaded: dict[str, tuple[Repository[Any], Aggregate]] = {}  # by stream id
        self._changed: set[str] = set()
        self._gathered: dict[str, Gathered] = {}
        self._conn: asyncpg.Connection | None = None
        self._transaction: Any = None
        self._now = datetime.now(UTC)

    @property
    def conn(self) -> asyncpg.Connection:
        assert self._conn is not None, "use the unit of work inside `async with`"
        return self._conn

    async def __aenter__(self) -> UnitOfWork:
        self._conn = await self._pool.acquire()
        if not self._deferred:
            await self._begin()
        return self

    async def _begin(self) -> None:
        self._transaction = self.conn.transaction()
        await self._transaction.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if error is None:
                try:
                    await self._flush()
                except BaseException:
                    await self._roll_back()
                    raise
                if self._transaction is not None:
                    await self._transaction.commit()
                await self._after_commit()
            else:
                await self._roll_back()
        finally:
            for lock in reversed(self._held):
                lock.release()
            await self._pool.release(self.conn)
            self._conn = None

    async def _flush(self) -> None:
        """The deferred writes (a lone statement without a transaction), then the gathered ones."""
        pending, self._pending = self._pending, []
        if self._transaction is None and (len(pending) > 1 or self._gathered or not all(one for _, one in pending)):
            await self._begin()
        for run, _ in pending:
            await run(self.conn)
        for gathered in self._gathered.values():
            await gathered.flush(self.conn)

    async def _write(self, run: Callable[[asyncpg.Connection], Awaitable[object]], one_statement: bool) -> None:
        if self._deferred:
            self._pending.append((run, one_statement))
        else:
            await run(self.conn)

    async def _roll_back(self) -> None:
        if self._transaction is not None:
            await self._transaction.rollback()
        for repository, aggregate in self._loaded.values():
            repository.evict(aggregate.stream_id)

    async def _after_commit(self) -> None:
        snapshots = []
        for stream_id in self._changed:
            repository, aggregate = self._loaded[stream_id]
            if (snapshot := repository.committed(aggregate)) is not None:
                snapshots.append(snapshot)
        for snapshot in snapshots:
            try:
                await eventstore.save_snapshot(self.conn, snapshot)
            except (OSError, asyncpg.PostgresError):
                # A snapshot only shortens the next load; the events are committed.
                log.exception("snapshot of %s at %d not saved", snapshot.stream_id, snapshot.version)

    def gathered(self, key: str, make: Callable[[], G]) -> G:
        """This unit of work's gatherer `key` (made on first use); it flushes once, after
        every record of the batch and before commit, so a batch writes in one go what its
        records each add (an audit chain's links, say)."""
        found = self._gathered.get(key)
        if found is None:
            found = self._gathered[key] = make()
        return found  # type: ignore[return-value]

    async def load(self, repository: Repository[A], key: str, version: int | None = None) -> A:
        """The aggregate `key` of `repository`, locked for this unit of work. `version`: its
        stream's version if a query of this unit of work has just read it (spares a read)."""
        stream_id = repository.stream_id(key)
        if stream_id in self._loaded:
            loaded: A = self._loaded[stream_id][1]  # type: ignore[assignment]
            return loaded
        lock = self._locks(stream_id)
        await lock.acquire()
        self._held.append(lock)
        aggregate = await repository.get(self.conn, stream_id, version)
        self._loaded[stream_id] = (repository, aggregate)
        return aggregate

    async def record(
        self, aggregate: Aggregate, events: Sequence[tuple[Message, Destinations]], context: Context
    ) -> list[Envelope]:
        """Append `events` to the aggregate's stream and fold them into it."""
        loaded = self._loaded.get(aggregate.stream_id)
        if loaded is None or loaded[1] is not aggregate:
            raise RuntimeError(f"{aggregate.stream_id} was not loaded by this unit of work")
        envelopes = await self.append(aggregate.stream_id, aggregate.version, events, context)
        aggregate.mutate(event for event, _ in events)
        self._changed.add(aggregate.stream_id)
        return envelopes

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[tuple[Message, Destinations]], context: Context
    ) -> list[Envelope]:
        """Append to any stream (e.g. a one-event stream of an observed fact), queue the
        events for their topics and fold them into the projections."""
        if not events:
            return []
        envelopes = [
            wrap(event, aggregate_id=stream_id, context=context, occurred_at=self._now, sequence=expected_version + i)
            for i, (event, _) in enumerate(events, start=1)
        ]
        published = [
            (topic, key, envelope)
            for envelope, (_, destinations) in zip(envelopes, events, strict=True)
            for topic, key in destinations
        ]
        inline = self._inline(envelopes[0], events[0][0]) if self._inline and len(events) == 1 else None
        await self._write(
            partial(
                eventstore.append,
                stream_id=stream_id,
                expected_version=expected_version,
                envelopes=envelopes,
                published=published,
                then=inline or (),
            ),
            one_statement=True,
        )
        if inline is None:
            for envelope, (event, _) in zip(envelopes, events, strict=True):
                await self._write(self._projecting(envelope, event), one_statement=False)
        return envelopes

    def _projecting(self, envelope: Envelope, event: Message) -> Callable[[asyncpg.Connection], Awaitable[None]]:
        return lambda conn: self._project(conn, envelope, event)

    async def send(self, message: Message, topic: str, key: str, context: Context) -> Envelope:
        """Queue a command for another service without recording it as our event."""
        envelope = wrap(message, aggregate_id=key, context=context, occurred_at=self._now)
        await self._write(partial(outbox.enqueue, topic=topic, key=key, envelope=envelope), one_statement=True)
        return envelope


class UnitOfWorkFactory:
    def __init__(self, pool: asyncpg.Pool, project: Projector, inline: Inline | None = None) -> None:
        self.pool = pool
        self._project = project
        self._inline = inline
        self.locks = StreamLocks()

    def __call__(self, deferred: bool = False) -> UnitOfWork:
        return UnitOfWork(self.pool, self._project, self.locks, self._inline, deferred)
