"""The audit chains' storage, and the feed that wakes regulators' streams.

`audit_chain` is a log, not a projection (docs/decisions/0006): a record is chained in
the unit of work of the event it audits (gathered over the batch, written before it
commits), under a per-jurisdiction advisory lock, so instances never fork a chain.
Readers borrow a pooled connection for one page at a time through a gate that leaves the
rest of the pool to the writers; live streams wait on one LISTEN connection per process
(`AuditFeed`), never on a pooled one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import asyncpg

from services.common import outbox, topics
from services.common.envelope import Context, wrap
from services.common.errors import NotFound
from services.compliance.domain import audit
from services.compliance.domain.signing import Signer
from tonne.v1.compliance_pb2 import AuditRecord
from tonne.v1.envelope_pb2 import Envelope

log = logging.getLogger(__name__)

# NOTIFY channel (database-wide); the payload is the jurisdiction whose chain grew.
CHANNEL = "compliance_audit"
_AUDIT_IDS = uuid.UUID("5f0c1c0e-8d0a-4b7e-9a51-7a0d1e2c3b4a")


def audit_event_id(jurisdiction: str, sequence: int) -> str:
    """The same record always travels under the same id (a republish is recognised)."""
    return str(uuid.uuid5(_AUDIT_IDS, f"{jurisdiction}:{sequence}"))


class Links:
    """The links a unit of work adds to the chains, written in one go before it commits
    (`UnitOfWork.gathered`): per chain, in jurisdiction order (one lock order across
    instances), one lock, one head read, one insert of every link, one outbox write and
    one notification, instead of all of them for each event."""

    def __init__(self, signer: Signer | None = None) -> None:
        self._signer = signer  # signs the chains' checkpoints (none: tests of the chain alone)
        self._pending: list[tuple[str, str, Envelope]] = []  # (jurisdiction, source topic, envelope)

    def add(self, jurisdiction: str, source_topic: str, envelope: Envelope) -> None:
        self._pending.append((jurisdiction, source_topic, envelope))

    def reached(self, correlation_id: str) -> set[str]:
        """Chains this unit of work links steps of the flow `correlation_id` into."""
        return {j for j, _, envelope in self._pending if envelope.correlation_id == correlation_id}

    async def flush(self, conn: asyncpg.Connection) -> None:
        for jurisdiction in sorted({j for j, _, _ in self._pending}):
            links = [(topic, envelope) for j, topic, envelope in self._pending if j == jurisdiction]
            await _append(conn, jurisdiction, links, self._signer)
        self._pending.clear()


async def _append(
    conn: asyncpg.Connection, jurisdiction: str, links: list[tuple[str, Envelope]], signer: Signer | None
) -> None:
    """Chain `links` (source topic, envelope) onto `jurisdiction`'s chain, in order."""
    # One writer per chain across instances until commit; the head is then an index probe.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"audit:{jurisdiction}")
    row = await conn.fetchrow(
        "SELECT sequence, hash FROM audit_chain WHERE jurisdiction = $1 ORDER BY sequence DESC LIMIT 1",
        jurisdiction,
    )
    previous = AuditRecord(sequence=row["sequence"], hash=row["hash"]) if row else None
    records = []
    for source_topic, envelope in links:
        previous = audit.link(
            previous,
            jurisdiction=jurisdiction,
            source_topic=source_topic,
            event_id=envelope.event_id,
            event_type=envelope.type,
            envelope=envelope.SerializeToString(),
        )
        records.append((previous, envelope))
    await conn.executemany(
        "INSERT INTO audit_chain (jurisdiction, sequence, previous_hash, hash, source_topic, "
        "event_id, event_type, envelope, correlation_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [
            (r.jurisdiction, r.sequence, r.previous_hash, r.hash, r.source_topic, r.event_id, r.event_type,
             r.envelope, envelope.correlation_id)
            for r, envelope in records
        ],
    )  # fmt: skip
    if signer is not None:
        checkpoints = [r for r, _ in records if signer.due(r.sequence)]
        await conn.executemany(
            "INSERT INTO audit_checkpoints (jurisdiction, sequence, hash, signature) VALUES ($1, $2, $3, $4)",
            [
                (r.jurisdiction, r.sequence, r.hash, signer.sign(r.jurisdiction, r.sequence, r.hash))
                for r in checkpoints
            ],
        )
    if jurisdiction in topics.JURISDICTIONS:
        published = [
            (topics.audit(jurisdiction), jurisdiction, _published(record, envelope)) for record, envelope in records
        ]
        await outbox.enqueue_many(conn, published)
    # Parameterised: the jurisdiction came from event data. Delivered on commit.
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, jurisdiction)


def _published(record: AuditRecord, envelope: Envelope) -> Envelope:
    """The record as regulators receive it on audit.<JUR>, under an id of its own place."""
    return wrap(
        record,
        aggregate_id=record.jurisdiction,
        context=Context(envelope.correlation_id, envelope.event_id, "compliance"),
        occurred_at=envelope.occurred_at.ToDatetime(tzinfo=UTC),
        sequence=record.sequence,
        event_id=audit_event_id(record.jurisdiction, record.sequence),
    )


async def flow_jurisdictions(conn: asyncpg.Connection, correlation_id: str) -> set[str]:
    """Chains that earlier steps of the flow reached (index on correlation_id)."""
    rows = await conn.fetch("SELECT DISTINCT jurisdiction FROM audit_chain WHERE correlation_id = $1", correlation_id)
    return {row["jurisdiction"] for row in rows}


@dataclass(frozen=True)
class Verification:
    """One window of a chain: the records after `after`, checked against record `after`'s
    stored hash. `next` is where the following window starts, null at the head or a break."""

    jurisdiction: str
    checked: int
    head: str
    intact: bool
    first_broken_sequence: int | None
    next: int | None


def record(row: Mapping[str, Any]) -> AuditRecord:
    """An audit record from a row of `audit_chain` (or any mapping with its columns)."""
    return AuditRecord(
        jurisdiction=row["jurisdiction"],
        sequence=row["sequence"],
        previous_hash=row["previous_hash"],
        hash=row["hash"],
        source_topic=row["source_topic"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        envelope=row["envelope"],
    )


class AuditLog:
    """Paged reads of the chains; every read holds a pooled connection for one query."""

    def __init__(self, pool: asyncpg.Pool, readers: int) -> None:
        self._pool = pool
        # Audit readers share `readers` of the pool's connections; the rest stay free for
        # the consumer, the outbox relay and commands, however many regulators read.
        self._gate = asyncio.Semaphore(readers)

    @contextlib.asynccontextmanager
    async def _reader(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._gate, self._pool.acquire() as conn:
            yield conn

    async def page(self, jurisdiction: str, after: int, limit: int) -> list[AuditRecord]:
        async with self._reader() as conn:
            rows = await conn.fetch(
                "SELECT jurisdiction, sequence, previous_hash, hash, source_topic, event_id, event_type, envelope "
                "FROM audit_chain WHERE jurisdiction = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
                jurisdiction,
                after,
                limit,
            )
        return [record(row) for row in rows]

    async def checkpoints(self, jurisdiction: str, after: int, limit: int) -> list[asyncpg.Record]:
        """A page of the chain's signed checkpoints after sequence `after`."""
        async with self._reader() as conn:
            return list(
                await conn.fetch(
                    "SELECT sequence, hash, signature FROM audit_checkpoints WHERE jurisdiction = $1 AND sequence > $2 "
                    "ORDER BY sequence LIMIT $3",
                    jurisdiction,
                    after,
                    limit,
                )
            )

    async def verify(self, jurisdiction: str, after: int, limit: int) -> Verification:
        after_hash = audit.GENESIS
        if after:
            async with self._reader() as conn:
                stored = await conn.fetchval(
                    "SELECT hash FROM audit_chain WHERE jurisdiction = $1 AND sequence = $2", jurisdiction, after
                )
            if stored is None:
                raise NotFound("AUDIT_RECORD_UNKNOWN", f"{jurisdiction}'s chain has no record {after}")
            after_hash = stored
        records = await self.page(jurisdiction, after, limit)
        broken = audit.first_break(records, after, after_hash)
        full = len(records) == limit
        return Verification(
            jurisdiction=jurisdiction,
            checked=len(records),
            head=records[-1].hash if records else after_hash,
            intact=broken is None,
            first_broken_sequence=broken,
            next=records[-1].sequence if full and broken is None else None,
        )


class StreamsFull(Exception):
    """The process serves as many audit streams as it allows."""


class Subscription:
    """One stream's place in the feed: woken when its jurisdiction's chain grows."""

    def __init__(self, feed: AuditFeed, jurisdiction: str) -> None:
        self.jurisdiction = jurisdiction
        self.woken = asyncio.Event()
        self._feed = feed
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            self._feed._leave(self)


class AuditFeed:
    """One LISTEN connection per process (outside the pool) fanning notifications out to
    at most `capacity` subscribed streams. Opened with the first subscriber, closed after
    the last; if it drops, every stream is woken to re-read and the next wait reconnects
    (meanwhile streams still re-read on their heartbeat)."""

    def __init__(self, dsn: str, capacity: int) -> None:
        self.capacity = capacity
        self._dsn = dsn
        self._subscribers: dict[str, set[Subscription]] = {}
        self._count = 0
        self._listener: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def subscribers(self) -> int:
        return self._count

    def subscribe(self, jurisdiction: str) -> Subscription:
        """A place in the feed, or StreamsFull; release it with `Subscription.close()`."""
        if self._count >= self.capacity:
            raise StreamsFull
        subscription = Subscription(self, jurisdiction)
        self._subscribers.setdefault(jurisdiction, set()).add(subscription)
        self._count += 1
        return subscription

    def _leave(self, subscription: Subscription) -> None:
        waiting = self._subscribers.get(subscription.jurisdiction, set())
        waiting.discard(subscription)
        if not waiting:
            self._subscribers.pop(subscription.jurisdiction, None)
        self._count -= 1
        if self._count == 0:
            task = asyncio.get_running_loop().create_task(self._close_if_idle())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def listen(self) -> None:
        """Make sure the LISTEN connection is up (no-op when it is)."""
        async with self._lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            try:
                conn = await asyncpg.connect(self._dsn)
                await conn.add_listener(CHANNEL, self._notified)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("audit feed cannot LISTEN (%r); streams poll on their heartbeat", exc)
                return
            conn.add_termination_listener(self._lost)
            self._listener = conn

    async def wait(self, subscription: Subscription, within_seconds: float) -> bool:
        """Until the subscription's chain may have grown (True) or `within_seconds` passed."""
        await self.listen()
        try:
            await asyncio.wait_for(subscription.woken.wait(), within_seconds)
        except TimeoutError:
            return False
        return True

    def _notified(self, _conn: object, _pid: int, _channel: str, jurisdiction: str) -> None:
        for subscription in self._subscribers.get(jurisdiction, ()):
            subscription.woken.set()

    def _lost(self, conn: asyncpg.Connection) -> None:
        if self._listener is conn:
            self._listener = None
        for waiting in self._subscribers.values():  # something may have been missed
            for subscription in waiting:
                subscription.woken.set()

    async def _close_if_idle(self) -> None:
        async with self._lock:
            if self._count == 0 and self._listener is not None:
                listener, self._listener = self._listener, None
                with contextlib.suppress(OSError, asyncpg.PostgresError):
                    await listener.close()

    async def close(self) -> None:
        """Drop the LISTEN connection (tests, shutdown)."""
        async with self._lock:
            if self._listener is not None:
                listener, self._listener = self._listener, None
                await listener.close()
