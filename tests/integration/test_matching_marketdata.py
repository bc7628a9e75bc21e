"""Market data on the real PostgreSQL, served by a real uvicorn on 127.0.0.1 to a real
WebSocket client: the depth stream derived from the journal by another instance than the
one deciding, the broker's own-order stream, the stream cap, OHLC bars folded in the
recording transaction, and the Idempotency-Key rules of POST /orders."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from services.common import topics
from services.common.auth import DevIssuer
from services.common.db import connect_pool, migrate
from services.common.envelope import Context, unwrap, wrap
from services.common.replay import replay
from services.common.runtime import Kernel, create_app
from services.common.settings import Settings
from services.matching import projections
from services.matching.api import router
from services.matching.bars import INTERVALS, vwap
from services.matching.marketdata import ClientBook
from services.matching.service import Matching, build
from tests.integration.test_matching_state import Venue
from tests.support import eventually
from tonne.v1 import matching_pb2 as pb

JCM = "JCM-TH-2024-NDC"
CCER = "CCER-2025"
DEADLINE = 30.0


def token(issuer: DevIssuer, subject: str, roles: list[str], broker_id: str = "") -> str:
    return issuer.mint(subject, roles, broker_id)


@pytest.fixture
async def venue(fresh_database_url: str) -> AsyncIterator[Venue]:
    """The instance that decides: the engine's handler, as the consumer drives it."""
    await migrate(fresh_database_url, "matching")
    pool = await connect_pool(fresh_database_url, "matching")
    settings = Settings(service="matching", kafka_bootstrap="127.0.0.1:1", database_url=fresh_database_url)
    settings = settings.model_copy(update={"snapshot_every": 7})
    try:
        yield Venue(build(Kernel(settings, pool)), settings, pool)
    finally:
        await pool.close()


@pytest.fixture
async def other(venue: Venue) -> AsyncIterator[Matching]:
    """A second matching instance on the same database: it decides nothing, it serves."""
    pool = await connect_pool(venue.settings.database_url, "matching")
    try:
        yield build(Kernel(venue.settings, pool))
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def served(matching: Matching, settings: Settings) -> AsyncIterator[str]:
    """The instance's API on a real uvicorn; the socket listens before serving starts,
    so no readiness has to be waited for."""
    app = create_app(settings, build, router, "matching under test")
    app.include_router(router(matching))  # the lifespan (Kafka, consumer) is not needed here
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(app, lifespan="off", log_config=None, ws="websockets-sansio", ws_ping_interval=None)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await serving
        sock.close()


@dataclass
class Reader:
    """A market-data client following the stream: the ClientBook rules, checked."""

    ws: ClientConnection
    book: ClientBook | None = None
    trades: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def follow(self) -> None:
        async for text in self.ws:
            message = json.loads(text)
            self.messages.append(message)
            if message["type"] == "snapshot":
                self.book = ClientBook(message)
            elif message["type"] == "update":
                assert self.book is not None
                if self.book.apply(message):  # raises on a gap or a checksum mismatch
                    self.trades += [t["trade_id"] for t in message["trades"]]
            self.changed.set()

    async def reach(self, sequence: int) -> None:
        await self.until(lambda: self.book is not None and self.book.sequence == sequence, f"sequence {sequence}")

    async def until(self, holds: Callable[[], bool], what: str) -> None:
        """Wait for the stream to bring `holds` about, up to the deadline (no sleep)."""
        deadline = time.monotonic() + DEADLINE
        while not holds():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


@contextlib.asynccontextmanager
async def reading(url: str) -> AsyncIterator[Reader]:
    async with connect(url) as ws:
        reader = Reader(ws)
        task = asyncio.create_task(reader.follow())
        try:
            yield reader
        finally:
            await ws.close()
            await task  # re-raises what the client found wrong


async def burst(venue: Venue, rng: random.Random, n: int, prefix: str) -> None:
    """Orders of every kind, cancels and replaces, through the deciding instance."""
    for i in range(n):
        async with venue.service.unit_of_work() as uow:
            book = await uow.load(venue.service.books, JCM)
            resting = list(book.orders.resting())
        roll = rng.random()
        if resting and roll < 0.15:
            o = rng.choice(resting)
            await venue.sequence(pb.CancelOrder(order_id=o.order_id, instrument_id=JCM, broker_id=o.broker_id))
            continue
        if resting and roll < 0.25:
            o = rng.choice(resting)
            price, quantity = rng.randint(990, 1010), rng.randint(1, o.remaining)
            command = pb.ReplaceOrder(
                order_id=o.order_id, instrument_id=JCM, broker_id=o.broker_id, price=price, quantity=quantity
            )
            await venue.sequence(command)
            continue
        broker = rng.choice(("broker-a", "broker-b"))
        order = pb.SubmitOrder(
            order_id=f"{prefix}{i}",
            instrument_id=JCM,
            broker_id=broker,
            account_id=f"acct-{rng.randint(1, 4)}",
            side=rng.choice((pb.BUY, pb.SELL)),
            price=rng.randint(990, 1010),
            quantity=rng.randint(1, 30),
            client_order_id=f"c-{prefix}{i}",
        )
        if roll > 0.9:
            order.time_in_force = pb.TIME_IN_FORCE_IOC
        await venue.sequence(order)


async def rest_book(base: str, headers: dict[str, str]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://{base}") as http:
        response = await http.get(f"/instruments/{JCM}/book", params={"depth": 1000}, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_client_of_another_instance_follows_a_burst_to_the_snapshot_s_book(
    venue: Venue, other: Matching, dev_issuer: DevIssuer
) -> None:
    regulator = token(dev_issuer, "th-onep", ["regulator:TH"])  # any identity reads market data
    rng = random.Random(9)
    await burst(venue, rng, 40, "warm")  # the stream starts from a stored snapshot plus its tail
    assert await venue.pool.fetchval("SELECT count(*) FROM snapshots") == 1
    async with served(other, venue.settings) as base:
        url = f"ws://{base}/instruments/{JCM}/stream?access_token={regulator}"
        async with reading(url) as early:
            await early.until(lambda: early.book is not None, "the snapshot")
            assert early.book is not None and early.book.sequence > 0
            await burst(venue, rng, 120, "a")
            # A client joining mid-way (by header) gets the shared book's snapshot.
            headers = {"authorization": f"Bearer {regulator}"}
            async with connect(f"ws://{base}/instruments/{JCM}/stream", additional_headers=headers) as ws:
                late = Reader(ws)
                following = asyncio.create_task(late.follow())
                await burst(venue, rng, 120, "b")
                # The last input changes the book, so the stream reaches the snapshot's sequence.
                await venue.submit("last", JCM, pb.BUY, 900, 1, "broker-a")
                snapshot = await rest_book(base, headers)
                for reader in (early, late):
                    await reader.reach(snapshot["sequence"])
                    assert reader.book is not None
                    bids, asks = reader.book.depth()
                    assert ([list(b) for b in bids], [list(a) for a in asks]) == (snapshot["bids"], snapshot["asks"])
                    assert reader.book.checksum() == snapshot["checksum"]
                await ws.close()
                await following
        assert late.book is not None and late.messages[0]["type"] == "snapshot"
        assert late.messages[0]["sequence"] > early.messages[0]["sequence"]
        # Every trade since the early client's snapshot came in the stream, in journal order.
        rows = await venue.rows(
            "SELECT trade_id FROM trades WHERE engine_sequence > $1 ORDER BY version", early.messages[0]["sequence"]
        )
        assert early.trades == [r["trade_id"] for r in rows] and len(early.trades) > 20
        assert sum(m["type"] == "update" for m in early.messages) > 100


async def test_each_broker_streams_its_own_orders_and_nobody_else_s(
    venue: Venue, other: Matching, dev_issuer: DevIssuer
) -> None:
    a = token(dev_issuer, "broker-a", ["broker"], "broker-a")
    b = token(dev_issuer, "broker-b", ["broker"], "broker-b")
    await venue.submit("before", JCM, pb.SELL, 1000, 3, "broker-a")
    async with served(other, venue.settings) as base:
        async with (
            reading(f"ws://{base}/orders/stream?access_token={a}") as stream_a,
            reading(f"ws://{base}/orders/stream?access_token={b}") as stream_b,
        ):
            await stream_a.until(lambda: bool(stream_a.messages), "A's subscription")
            await stream_b.until(lambda: bool(stream_b.messages), "B's subscription")
            assert stream_a.messages[0] == {
                "type": "subscribed",
                "broker_id": "broker-a",
                "sequences": {JCM: 1, CCER: 0, "PHCER-SZ-2025": 0},
            }
            await venue.submit("s1", JCM, pb.SELL, 1000, 10, "broker-a")
            await venue.submit("b1", JCM, pb.BUY, 1000, 12, "broker-b")  # takes 3 + 9
            await venue.sequence(pb.CancelOrder(order_id="s1", instrument_id=JCM, broker_id="broker-a"))
            await venue.sequence(pb.CancelOrder(order_id="b1", instrument_id=JCM, broker_id="broker-a"))  # not A's
            await venue.submit("c1", CCER, pb.BUY, 900, 2, "broker-b")

            def events(stream: Any) -> list[tuple[str, str]]:
                return [(m["order_id"], m["event"]) for m in stream.messages[1:]]

            expected_a = [
                ("s1", "accepted"),
                ("before", "fill"),
                ("s1", "fill"),
                ("s1", "cancelled"),
                ("b1", "rejected"),  # A's own refused cancel
            ]
            expected_b = [("b1", "accepted"), ("b1", "fill"), ("b1", "fill"), ("c1", "accepted")]
            await stream_a.until(lambda: len(events(stream_a)) >= len(expected_a), "A's changes")
            await stream_b.until(lambda: len(events(stream_b)) >= len(expected_b), "B's changes")
            assert events(stream_a) == expected_a
            assert events(stream_b) == expected_b
            fill = stream_a.messages[2]
            assert (fill["liquidity"], fill["price"], fill["quantity"], fill["sequence"]) == ("maker", 1000, 3, 3)
            cancelled = stream_a.messages[4]
            assert (cancelled["reason"], cancelled["remaining_quantity"]) == ("BROKER", 1)
            assert "broker-b" not in json.dumps(stream_a.messages) and "broker-a" not in json.dumps(
                stream_b.messages[1:]
            )


async def test_streams_are_refused_by_http_before_the_handshake(
    venue: Venue, other: Matching, dev_issuer: DevIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TONNE_MARKET_STREAMS", "2")
    broker = token(dev_issuer, "broker-a", ["broker"], "broker-a")
    regulator = token(dev_issuer, "th-onep", ["regulator:TH"])

    async def refused(path: str) -> tuple[int, str, str | None]:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(f"ws://{base}{path}"):
                pass
        response = caught.value.response
        return response.status_code, json.loads(response.body or b"{}")["code"], response.headers.get("Retry-After")

    async with served(other, venue.settings) as base:
        assert await refused(f"/instruments/{JCM}/stream") == (401, "AUTH_UNAUTHENTICATED", None)
        assert await refused(f"/instruments/{JCM}/stream?access_token=nonsense") == (401, "AUTH_UNAUTHENTICATED", None)
        assert await refused(f"/instruments/NOPE/stream?access_token={regulator}") == (404, "INSTRUMENT_UNKNOWN", None)
        assert await refused(f"/orders/stream?access_token={regulator}") == (403, "AUTH_FORBIDDEN", None)
        nameless = token(dev_issuer, "broker-x", ["broker"])
        assert await refused(f"/orders/stream?access_token={nameless}") == (403, "AUTH_FORBIDDEN", None)
        async with (
            reading(f"ws://{base}/instruments/{JCM}/stream?access_token={regulator}") as first,
            reading(f"ws://{base}/orders/stream?access_token={broker}") as second,
        ):
            await first.until(lambda: bool(first.messages), "the first stream")
            await second.until(lambda: bool(second.messages), "the second stream")
            # The process's cap: a third stream is refused with a time to come back.
            assert await refused(f"/instruments/{CCER}/stream?access_token={regulator}") == (
                503,
                "MARKET_STREAMS_FULL",
                "15",
            )
        # Their places are given back once they close.

        async def admitted() -> bool:
            try:
                async with connect(f"ws://{base}/instruments/{CCER}/stream?access_token={regulator}") as ws:
                    return bool(json.loads(await ws.recv())["type"] == "snapshot")
            except InvalidStatus:
                return False

        assert await eventually(admitted, "a place in the feed after the streams closed", timeout=DEADLINE)


async def test_bars_fold_trades_at_their_journal_time_and_give_the_previous_vwap_close(
    venue: Venue, dev_issuer: DevIssuer
) -> None:
    """The projector alone, over trades at chosen journal times (as replay folds them)."""
    regulator = {"authorization": f"Bearer {token(dev_issuer, 'th-onep', ['regulator:TH'])}"}
    day1 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    day2 = day1 + 86_400
    trades = [  # (seconds, price, quantity)
        (day1 + 10, 1000, 3),
        (day1 + 50, 1010, 1),
        (day1 + 61, 990, 2),
        (day1 + 3_700, 1005, 4),
        (day2 + 5, 2000, 1),
        (day2 + 7, 2001, 1),
    ]
    async with venue.pool.acquire() as conn, conn.transaction():
        for n, (seconds, price, quantity) in enumerate(trades, start=1):
            event = pb.TradeExecuted(
                trade_id=f"{JCM}:{n}:1",
                instrument_id=JCM,
                price=price,
                quantity=quantity,
                currency="USD",
                buy_order_id=f"b{n}",
                sell_order_id=f"s{n}",
                aggressor=pb.BUY,
                engine_sequence=n,
            )
            envelope = wrap(
                event,
                aggregate_id=f"book-{JCM}",
                context=Context.new("test"),
                occurred_at=datetime.fromtimestamp(seconds, UTC),
                sequence=n,
            )
            await projections.project(conn, envelope, event)
    app = create_app(venue.settings, build, router, "matching under test")
    app.include_router(router(venue.service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://matching") as http:

        async def bars(interval: str, **params: Any) -> dict[str, Any]:
            response = await http.get(
                f"/instruments/{JCM}/bars", params={"interval": interval, **params}, headers=regulator
            )
            assert response.status_code == 200, response.text
            return dict(response.json())

        minutes = await bars("1m")
        assert [(b["open"], b["high"], b["low"], b["close"], b["volume"], b["trades"]) for b in minutes["items"]] == [
            (1000, 1010, 1000, 1010, 4, 2),
            (990, 990, 990, 990, 2, 1),
            (1005, 1005, 1005, 1005, 4, 1),
            (2000, 2001, 2000, 2001, 2, 2),
        ]
        assert minutes["items"][0]["start"] == "2026-01-01T00:00:00Z"
        assert minutes["items"][0]["vwap"] == 1003  # (3000 + 1010) / 4 = 1002.5: a half goes up
        assert minutes["next"] is None
        page = await bars("1m", limit=2)
        rest = await bars("1m", limit=2, after=page["next"])
        assert [b["start"] for b in page["items"] + rest["items"]] == [b["start"] for b in minutes["items"]]
        assert rest["next"] is None
        days = (await bars("1d"))["items"]
        assert [(d["start"], d["open"], d["close"], d["volume"], d["trades"]) for d in days] == [
            ("2026-01-01T00:00:00Z", 1000, 1005, 10, 4),
            ("2026-01-02T00:00:00Z", 2000, 2001, 2, 2),
        ]
        assert days[0]["vwap"] == vwap(3000 + 1010 + 1980 + 4020, 10) == 1001
        assert len((await bars("1h"))["items"]) == 3
        reference = (await http.get(f"/instruments/{JCM}/reference-price", headers=regulator)).json()
        assert reference == {
            "instrument_id": JCM,
            "source": "previous-session-vwap",
            "session_start": "2026-01-02T00:00:00Z",
            "price": 2001,  # 4001 / 2 = 2000.5
        }
        none_yet = (await http.get(f"/instruments/{CCER}/reference-price", headers=regulator)).json()
        assert none_yet["price"] is None and none_yet["session_start"] is None
        invalid: list[tuple[str, dict[str, str | int]]] = [
            (f"/instruments/{JCM}/bars", {"interval": "5m"}),
            (f"/instruments/{JCM}/bars", {"interval": "1m", "limit": 0}),
            (f"/instruments/{JCM}/bars", {"interval": "1m", "after": "yesterday"}),
            (f"/instruments/{JCM}/book", {"depth": 1001}),
            (f"/instruments/{JCM}/book", {"depth": 0}),
        ]
        for path, params in invalid:
            response = await http.get(path, params=params, headers=regulator)
            assert (response.status_code, response.json()["code"]) == (422, "REQUEST_INVALID"), params
        response = await http.get("/instruments/NOPE/bars", params={"interval": "1m"}, headers=regulator)
        assert (response.status_code, response.json()["code"]) == (404, "INSTRUMENT_UNKNOWN")
        assert (await http.get(f"/instruments/{JCM}/bars", params={"interval": "1m"})).status_code == 401


async def test_bars_of_recorded_trades_match_the_journal_and_replay(venue: Venue) -> None:
    rng = random.Random(5)
    await burst(venue, rng, 150, "o")
    journal = [
        unwrap(row["envelope"])
        for row in await venue.rows("SELECT envelope FROM events WHERE stream_id = $1 ORDER BY version", f"book-{JCM}")
    ]
    traded = [(e.occurred_at.seconds, p) for e, p in journal if isinstance(p, pb.TradeExecuted)]
    assert len(traded) > 20
    for interval, seconds in INTERVALS.items():
        expected: dict[int, list[tuple[int, int]]] = {}
        for at, trade in traded:
            expected.setdefault(at - at % seconds, []).append((trade.price, trade.quantity))
        async with venue.pool.acquire() as conn:
            found, _ = await projections.bars(conn, JCM, interval, 1000, None)
        assert [(b.start_s, b.open, b.high, b.low, b.close, b.volume, b.notional, b.trades) for b in found] == [
            (
                start,
                fills[0][0],
                max(p for p, _ in fills),
                min(p for p, _ in fills),
                fills[-1][0],
                sum(q for _, q in fills),
                sum(p * q for p, q in fills),
                len(fills),
            )
            for start, fills in sorted(expected.items())
        ]
    async with venue.pool.acquire() as conn:
        live = await venue.service.state.hash(conn)
    assert live == await replay(venue.settings, build, "zero")
    await venue.pool.execute("UPDATE bars SET close = close + 1 WHERE interval = '1d'")
    async with venue.pool.acquire() as conn:
        assert (await venue.service.state.hash(conn)).projections != live.projections


async def test_the_idempotency_key_is_the_client_order_id(venue: Venue, dev_issuer: DevIssuer) -> None:
    A = {"authorization": f"Bearer {token(dev_issuer, 'broker-a', ['broker'], 'broker-a')}"}
    await venue.mandate("broker-a", "acct-1")
    app = create_app(venue.settings, build, router, "matching under test")
    app.include_router(router(venue.service))
    body = {"instrument_id": JCM, "side": "SELL", "price": 1000, "quantity": 10, "account_id": "acct-1"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://matching") as http:

        async def place(key: str | None, **changes: Any) -> httpx.Response:
            headers = A | ({"Idempotency-Key": key} if key is not None else {})
            return await http.post("/orders", headers=headers, json=body | changes)

        first = await place('"k-1"')  # an sf-string, as the draft writes it
        assert first.status_code == 202, first.text
        assert first.json()["client_order_id"] == "k-1"
        # The same key and body: the first order, whichever way the key came.
        for again in (await place('"k-1"'), await place("k-1"), await place(None, client_order_id="k-1")):
            assert (again.status_code, again.json()["order_id"]) == (200, first.json()["order_id"])
        assert (await place("k-1", client_order_id="k-1")).status_code == 200
        # The same key with another body; header and body disagreeing; no key at all.
        for response, code in (
            (await place("k-1", price=1001), "IDEMPOTENCY_KEY_REUSED"),
            (await place(None, client_order_id="k-1", quantity=11), "IDEMPOTENCY_KEY_REUSED"),
            (await place("k-2", client_order_id="k-3"), "IDEMPOTENCY_KEY_MISMATCH"),
            (await place(None), "REQUEST_INVALID"),
            (await place('"k 2"'), "REQUEST_INVALID"),
            (await place("x" * 65), "REQUEST_INVALID"),
            (await place('"k-\\"2"'), "REQUEST_INVALID"),
        ):
            assert (response.status_code, response.json()["code"]) == (422, code), response.text
        assert await venue.pool.fetchval("SELECT count(*) FROM intake_orders") == 1

        # In flight: another request's statement holds the key, uncommitted, while this one arrives.
        async with venue.pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute(
                "INSERT INTO intake_orders (order_id, broker_id, client_order_id, instrument_id, side, price, "
                "quantity, account_id, status, correlation_id, request) "
                "VALUES ('o-first', 'broker-a', 'k-9', $1, 2, 1000, 10, 'acct-1', 'reserving', 'c', '')",
                JCM,
            )
            second = asyncio.create_task(place("k-9"))

            async def waiting_on_the_first() -> bool:
                return bool(
                    await venue.pool.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    )
                )

            await eventually(waiting_on_the_first, "the second request to wait for the first", timeout=DEADLINE)
            await transaction.commit()
            response = await second
        assert (response.status_code, response.json()["code"]) == (409, "IDEMPOTENCY_KEY_IN_FLIGHT")
        assert response.headers["Retry-After"] == "1"
        assert await venue.pool.fetchval("SELECT count(*) FROM intake_orders WHERE client_order_id = 'k-9'") == 1

    responses = app.openapi()["paths"]["/orders"]["post"]["responses"]
    assert "IDEMPOTENCY_KEY_IN_FLIGHT" in responses["409"]["description"]
    assert "IDEMPOTENCY_KEY_REUSED" in responses["422"]["description"]
    assert "Idempotency-Key" in app.openapi()["paths"]["/orders"]["post"]["description"]


async def test_a_client_that_falls_behind_is_dropped_and_may_resubscribe(
    venue: Venue, other: Matching, dev_issuer: DevIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bounded backlog per subscriber: past it the stream closes (1013) rather than grow."""
    monkeypatch.setenv("TONNE_MARKET_BACKLOG", "10")
    regulator = token(dev_issuer, "th-onep", ["regulator:TH"])
    async with served(other, venue.settings) as base:
        async with connect(f"ws://{base}/instruments/{JCM}/stream?access_token={regulator}") as ws:
            assert json.loads(await ws.recv())["type"] == "snapshot"
            # The client reads nothing while 40 updates are produced in one go: the feed
            # folds them in one read, faster than any socket drains.
            await hold_events(venue, 40)
            closed = await wait_closed(ws)
        assert closed == (1013, "STREAM_LAGGING: take a new snapshot")
        async with connect(f"ws://{base}/instruments/{JCM}/stream?access_token={regulator}") as ws:
            snapshot = json.loads(await ws.recv())
            assert snapshot["type"] == "snapshot" and len(snapshot["asks"]) == 40


async def hold_events(venue: Venue, n: int) -> None:
    """Record `n` book-changing inputs in one unit of work: one commit, one notification,
    one read by the feed."""
    async with venue.service.unit_of_work() as uow:
        book = await uow.load(venue.service.books, JCM)
        for i in range(n):
            order = pb.SubmitOrder(
                order_id=f"lag{i}",
                instrument_id=JCM,
                broker_id="broker-a",
                account_id="acct-lag",
                side=pb.SELL,
                price=1000 + i,
                quantity=1,
            )
            events = book.decide(order, venue.service.instruments[JCM])
            destination = [(topics.MATCHING_EVENTS, JCM)]  # as the engine publishes them
            await uow.record(book, [(e, destination) for e in events], Context.new("test"))


async def wait_closed(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Drain until the server closes the connection; its close code and reason."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DEADLINE):
            async for _ in ws:
                pass
    assert ws.close_code is not None, "the server did not close the stream"
    return ws.close_code, ws.close_reason
