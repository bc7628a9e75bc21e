"""The live market-data feed of one process: instruments' books followed from the journal.

With N matching instances an instrument's book is decided by whichever instance owns its
partition; a client may be connected to any. So a stream is never fed from the deciding
process's memory: per instrument with subscribers, one `_Instrument` follows stream
`book-<instrument>` by version (whole engine inputs at a time, an input's events being
appended in one statement) and folds it with a `marketdata.Follower`, starting from the
aggregate's stored snapshot plus its tail; every subscriber of the instrument shares it.

Wake-ups: every engine input queues its journal events on the outbox in the same
statement, whose commit notifies the schema's outbox channel (services.common.outbox);
the feed LISTENs on it with ONE connection per process, held only while some stream is
open (and re-reads every `RECHECK_SECONDS` anyway, as a notification can be lost across a
reconnect). Reads go through a gate of `readers` pooled connections at a time, so
however many clients stream, the rest of the pool stays with the engine and the API.

A subscriber that falls `backlog` messages behind is dropped (it re-snapshots), so a slow
client costs memory it is bounded in, and never slows the others.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import asyncpg
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common import outbox
from services.common.envelope import payload_of
from services.common.repository import Repository
from services.matching.domain.engine import PREFIX, Book
from services.matching.marketdata import Folded, Follower, Snapshot
from tonne.v1.envelope_pb2 import Envelope

log = logging.getLogger(__name__)

RECHECK_SECONDS = 5.0
PAGE = 500  # journal events per read (an input larger than a page is read whole)


class FeedSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    # WebSocket streams (market data and order updates) one process serves at once.
    streams: int = Field(64, ge=1, le=10_000, validation_alias="TONNE_MARKET_STREAMS")
    # Pooled connections the feed's journal reads may hold at once.
    readers: int = Field(1, ge=1, le=16, validation_alias="TONNE_MARKET_READERS")
    # Messages a subscriber may have waiting before it is dropped.
    backlog: int = Field(10_000, ge=10, le=1_000_000, validation_alias="TONNE_MARKET_BACKLOG")


class StreamsFull(Exception):
    """The process serves as many streams as it allows."""


class Subscription:
    """One stream's messages, waiting to be sent; `closed` once it ends for any reason."""

    def __init__(self, feed: Feed, backlog: int, broker_id: str | None) -> None:
        self.broker_id = broker_id  # None: a market-data stream; else that broker's orders only
        self.lagging = False  # dropped for falling `backlog` messages behind
        self._feed = feed
        self._backlog = backlog
        self._waiting: collections.deque[str] = collections.deque()
        self._ready = asyncio.Event()
        self._open = True

    def push(self, message: str) -> None:
        if not self._open:
            return
        if len(self._waiting) >= self._backlog:
            self.lagging = True
            self.close()
            return
        self._waiting.append(message)
        self._ready.set()

    async def next(self) -> list[str] | None:
        """The messages waiting (at least one), or None once the subscription is closed."""
        while not self._waiting:
            if not self._open:
                return None
            await self._ready.wait()
            self._ready.clear()
        if not self._open:
            return None
        batch = list(self._waiting)
        self._waiting.clear()
        return batch

    def close(self) -> None:
        if self._open:
            self._open = False
            self._ready.set()
            self._feed._leave(self)


class _Instrument:
    """One instrument's book followed from the journal, shared by its subscribers."""

    def __init__(self, feed: Feed, instrument_id: str) -> None:
        self.instrument_id = instrument_id
        self.stream_id = PREFIX + instrument_id
        self.market: set[Subscription] = set()
        self.brokers: set[Subscription] = set()
        self.joining: set[Subscription] = set()  # waiting for the book to load
        self.woken = asyncio.Event()
        self.follower: Follower | None = None
        self.loaded = asyncio.Event()
        self.failed: BaseException | None = None
        self._feed = feed
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"feed-{instrument_id}")

    @property
    def idle(self) -> bool:
        return not (self.market or self.brokers or self.joining)

    def subscribers(self) -> list[Subscription]:
        return [*self.market, *self.brokers, *self.joining]

    def leave(self, subscription: Subscription) -> None:
        self.market.discard(subscription)
        self.brokers.discard(subscription)
        self.joining.discard(subscription)

    async def _run(self) -> None:
        feed = self._feed
        try:
            await feed.listen()  # before the first read, so nothing committed after it is missed
            async with feed.reader() as conn:
                self.follower = Follower(await feed.books.load(conn, self.stream_id))
            self.loaded.set()
            while not self.idle:
                self.woken.clear()
                if not await self._catch_up():
                    await feed.wait(self.woken, RECHECK_SECONDS)
        except Exception as exc:
            # Every subscriber ends (and re-subscribes); the next subscriber starts afresh.
            log.exception("market-data feed of %s stopped", self.instrument_id)
            self.failed = exc
            self.loaded.set()
            for subscription in self.subscribers():
                subscription.close()

    async def _catch_up(self) -> bool:
        """Fold and publish what the journal holds past the book; True if there may be more."""
        assert self.follower is not None
        page = PAGE
        while True:
            async with self._feed.reader() as conn:
                rows = await conn.fetch(
                    "SELECT envelope FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3",
                    self.stream_id,
                    self.follower.version,
                    page,
                )
            inputs = _inputs(Envelope.FromString(row["envelope"]) for row in rows)
            if len(rows) == page:
                inputs.pop()  # the last input may go on past the page: read it next time
                if not inputs:
                    page *= 2  # one input longer than a page: read it whole
                    continue
            for time, events in inputs:
                self._publish(self.follower.fold(events, time, changes=bool(self.brokers)))
            return len(rows) == page

    def _publish(self, folded: Folded) -> None:
        if folded.update is not None and self.market:
            message = json.dumps(folded.update.message(), separators=(",", ":"))
            for subscription in list(self.market):
                subscription.push(message)
        for change in folded.changes:
            text: str | None = None
            for subscription in list(self.brokers):
                if subscription.broker_id == change.broker_id:
                    text = text or json.dumps(change.message, separators=(",", ":"))
                    subscription.push(text)


def _inputs(envelopes: Iterable[Envelope]) -> list[tuple[str, list[Any]]]:
    """Journal events grouped by engine input (consecutive events of one engine
    sequence), each with the time it was recorded."""
    grouped: list[tuple[str, list[Any]]] = []
    current = -1
    for envelope in envelopes:
        event = payload_of(envelope)
        sequence = getattr(event, "engine_sequence", 0)
        if sequence != current or not grouped:
            time = envelope.occurred_at.ToJsonString()
            grouped.append((time, []))
            current = sequence
        grouped[-1][1].append(event)
    return grouped


class Feed:
    """The process's followed books and their subscribers, at most `settings.streams`."""

    def __init__(self, pool: asyncpg.Pool, books: Repository[Book], settings: FeedSettings) -> None:
        self.books = books
        self.settings = settings
        self._pool = pool
        self._gate = asyncio.Semaphore(settings.readers)
        self._instruments: dict[str, _Instrument] = {}
        self._count = 0
        self._listener: Any = None  # the pooled connection LISTENing, while streams are open
        self._channel = ""
        self._lock = asyncio.Lock()

    @property
    def streams(self) -> int:
        return self._count

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._gate, self._pool.acquire() as conn:
            yield conn

    async def market(self, instrument_id: str) -> tuple[Subscription, Snapshot]:
        """A place in the instrument's depth stream and the snapshot its updates follow."""
        subscription = self._take(None)
        try:
            [follower] = await self._join(subscription, [instrument_id])
            return subscription, follower.snapshot()
        except BaseException:
            subscription.close()
            raise

    async def orders(self, broker_id: str, instrument_ids: Iterable[str]) -> tuple[Subscription, dict[str, int]]:
        """A place in the broker's order stream over `instrument_ids`, and each
        instrument's engine sequence that its changes follow."""
        subscription = self._take(broker_id)
        try:
            followers = await self._join(subscription, sorted(instrument_ids))
            return subscription, {f.book.instrument_id: f.book.sequence for f in followers}
        except BaseException:
            subscription.close()
            raise

    def _take(self, broker_id: str | None) -> Subscription:
        if self._count >= self.settings.streams:
            raise StreamsFull
        self._count += 1
        return Subscription(self, self.settings.backlog, broker_id)

    async def _join(self, subscription: Subscription, instrument_ids: list[str]) -> list[Follower]:
        """Join the instruments' feeds once each has loaded its book. The joins happen
        together with no await between them and the caller's reading of the followers'
        state: what the subscription receives next follows exactly that state."""
        joined = []
        for instrument_id in instrument_ids:
            instrument = self._instruments.get(instrument_id)
            if instrument is None or instrument.failed is not None:
                instrument = self._instruments[instrument_id] = _Instrument(self, instrument_id)
            instrument.joining.add(subscription)
            joined.append(instrument)
        for instrument in joined:
            await instrument.loaded.wait()
            if instrument.failed is not None:
                raise RuntimeError(f"the feed of {instrument.instrument_id} failed") from instrument.failed
        followers = []
        for instrument in joined:
            assert instrument.follower is not None
            instrument.joining.discard(subscription)
            (instrument.market if subscription.broker_id is None else instrument.brokers).add(subscription)
            followers.append(instrument.follower)
        return followers

    def _leave(self, subscription: Subscription) -> None:
        self._count -= 1
        for instrument_id, instrument in list(self._instruments.items()):
            instrument.leave(subscription)
            if instrument.idle:
                instrument.woken.set()  # its task sees nobody left and ends
                del self._instruments[instrument_id]
        if not self._instruments:
            task = asyncio.get_running_loop().create_task(self._close_if_idle())
            _closing.add(task)
            task.add_done_callback(_closing.discard)

    async def listen(self) -> None:
        """Make sure the LISTEN connection is up while some instrument is followed."""
        async with self._lock:
            if not self._instruments:
                return  # the last stream has gone: nothing to wake (and nothing to hold)
            if self._listener is not None:
                if not self._listener.is_closed():
                    return
                await self._release_listener()
            conn = await self._pool.acquire()
            try:
                self._channel = outbox.channel(await conn.fetchval("SELECT current_schema()"))
                await conn.add_listener(self._channel, self._notified)
            except BaseException:
                await self._pool.release(conn)
                raise
            conn.add_termination_listener(self._lost)
            self._listener = conn

    async def wait(self, woken: asyncio.Event, within_seconds: float) -> None:
        """Until `woken` or `within_seconds` passed (the LISTEN reconnected if it dropped)."""
        await self.listen()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), within_seconds)

    def _notified(self, *_: object) -> None:
        for instrument in self._instruments.values():
            instrument.woken.set()

    def _lost(self, *_: object) -> None:
        self._notified()  # something may have been missed; the next wait reconnects

    async def _release_listener(self) -> None:
        listener, self._listener = self._listener, None
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if not listener.is_closed():
                await listener.remove_listener(self._channel, self._notified)
        await self._pool.release(listener)

    async def _close_if_idle(self) -> None:
        async with self._lock:
            if not self._instruments and self._listener is not None:
                await self._release_listener()

    async def close(self) -> None:
        """End every stream and give the LISTEN connection back (shutdown, tests)."""
        instruments = list(self._instruments.values())
        for instrument in instruments:
            for subscription in instrument.subscribers():
                subscription.close()
        tasks = [i.task for i in instruments]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close_if_idle()


# Tasks that close an idle feed's LISTEN connection, kept referenced until done.
_closing: set[asyncio.Task[None]] = set()
