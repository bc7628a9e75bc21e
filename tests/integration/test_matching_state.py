"""Matching on the real PostgreSQL: sequenced orders through the real handler and unit of
work, a failing transaction, the HTTP reads, and the state hash live vs replay."""

from __future__ import annotations

import json
import random
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from google.protobuf.message import Message

from services.common import topics
from services.common.auth import DevIssuer
from services.common.db import connect_pool, migrate
from services.common.envelope import Context, unwrap, wrap
from services.common.errors import DomainError
from services.common.replay import replay
from services.common.runtime import Kernel, create_app
from services.common.settings import Settings
from services.matching.api import router
from services.matching.expiry import Expiry
from services.matching.service import Matching, build
from tonne.v1 import matching_pb2 as pb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb
from tonne.v1.envelope_pb2 import CommandRejected, Envelope

JCM = "JCM-TH-2024-NDC"
CCER = "CCER-2025"


def bearer(issuer: DevIssuer, subject: str, roles: list[str], broker_id: str = "") -> dict[str, str]:
    return {"authorization": f"Bearer {issuer.mint(subject, roles, broker_id)}"}


@dataclass
class Venue:
    service: Matching
    settings: Settings
    pool: asyncpg.Pool

    async def sequence(self, command: Message) -> Envelope:
        """Deliver one record of matching.orders as the consumer does."""
        envelope = wrap(command, aggregate_id="k", context=Context.new("intake"), occurred_at=datetime.now(UTC))
        async with self.service.unit_of_work() as uow:
            await self.service.handlers[topics.MATCHING_ORDERS](uow, envelope, command)
        return envelope

    async def submit(self, order_id: str, instrument: str, side: int, price: int, quantity: int, broker: str) -> None:
        await self.sequence(
            pb.SubmitOrder(
                order_id=order_id,
                instrument_id=instrument,
                broker_id=broker,
                account_id=f"acct-{broker}",
                side=pb.Side.ValueType(side),
                price=price,
                quantity=quantity,
                client_order_id=f"c-{order_id}",
            )
        )

    async def depth(self, instrument: str) -> tuple[int, dict[str, list[tuple[int, int]]]]:
        async with self.service.unit_of_work() as uow:
            book = await uow.load(self.service.books, instrument)
            return book.sequence, book.orders.depth()

    async def rows(self, query: str, *args: object) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.pool.fetch(query, *args)]

    async def pump(self) -> int:
        """Relay intake's queued matching.orders records to the engine, in order."""
        rows = await self.pool.fetch(
            "UPDATE outbox SET published_at = now() WHERE topic = $1 AND published_at IS NULL RETURNING id, value",
            topics.MATCHING_ORDERS,
        )
        for row in sorted(rows, key=lambda r: r["id"]):
            envelope, command = unwrap(row["value"])
            async with self.service.unit_of_work() as uow:
                await self.service.handlers[topics.MATCHING_ORDERS](uow, envelope, command)
        return len(rows)

    async def registry(self, event: Message) -> None:
        """One record of registry.events, as the consumer delivers it."""
        envelope = wrap(event, aggregate_id="acct", context=Context.new("registry"), occurred_at=datetime.now(UTC))
        async with self.service.unit_of_work() as uow:
            await self.service.handlers[topics.REGISTRY_EVENTS](uow, envelope, event)

    async def reserved(self, order_id: str, quantity: int) -> None:
        """The registry's answer to a sell order's ReserveUnits."""
        await self.registry(rpb.UnitsReserved(reservation_id=order_id, account_id="acct", quantity=quantity))

    async def covered(self, order_id: str, refused: str = "") -> None:
        """Settlement's answer to a buy order's ReserveCash (settlement.covers)."""
        answer: Message = spb.CashReserved(order_id=order_id, account_id="acct", currency="USD", amount=1, quantity=1)
        if refused:
            answer = CommandRejected(command_id=order_id, command_type="tonne.v1.ReserveCash", code=refused)
        envelope = wrap(answer, aggregate_id="acct", context=Context.new("settlement"), occurred_at=datetime.now(UTC))
        async with self.service.unit_of_work() as uow:
            await self.service.handlers[topics.SETTLEMENT_COVERS](uow, envelope, answer)

    async def mandate(self, broker: str, account: str, revoke: bool = False) -> None:
        kind = rpb.MandateRevoked if revoke else rpb.MandateGranted
        await self.registry(
            kind(mandate_id=f"m-{broker}-{account}", account_id=account, broker_id=broker, jurisdiction="TH")
        )


@pytest.fixture
async def venue(fresh_database_url: str) -> AsyncIterator[Venue]:
    await migrate(fresh_database_url, "matching")
    pool = await connect_pool(fresh_database_url, "matching")
    # Small snapshots and a one-book cache: books are reloaded from snapshot + tail often.
    settings = Settings(service="matching", kafka_bootstrap="127.0.0.1:1", database_url=fresh_database_url)
    settings = settings.model_copy(update={"snapshot_every": 3, "aggregate_cache": 1})
    try:
        yield Venue(build(Kernel(settings, pool)), settings, pool)
    finally:
        await pool.close()


async def test_sequenced_orders_match_and_project(venue: Venue) -> None:
    await venue.submit("s1", JCM, pb.SELL, 1500, 10, "broker-a")
    await venue.submit("s2", JCM, pb.SELL, 1400, 10, "broker-a")
    await venue.submit("c1", CCER, pb.SELL, 900, 4, "broker-a")  # another book, evicting JCM's
    await venue.submit("b1", JCM, pb.BUY, 1500, 15, "broker-b")
    assert await venue.depth(JCM) == (3, {"bids": [], "asks": [(1500, 5)]})
    trades = await venue.rows("SELECT trade_id, sell_order_id, price, quantity, buyer_account_id FROM trades")
    assert trades == [
        {
            "trade_id": f"{JCM}:3:1",
            "sell_order_id": "s2",
            "price": 1400,
            "quantity": 10,
            "buyer_account_id": "acct-broker-b",
        },
        {
            "trade_id": f"{JCM}:3:2",
            "sell_order_id": "s1",
            "price": 1500,
            "quantity": 5,
            "buyer_account_id": "acct-broker-b",
        },
    ]

    # The same order id in another envelope (and on another book) is refused; the first stays.
    await venue.submit("s1", CCER, pb.BUY, 900, 1, "broker-b")
    orders = {r["order_id"]: r for r in await venue.rows("SELECT * FROM orders")}
    assert {k: (v["status"], v["filled"], v["engine_sequence"]) for k, v in orders.items()} == {
        "s1": ("resting", 5, 1),
        "s2": ("filled", 10, 2),
        "c1": ("resting", 0, 1),
        "b1": ("filled", 15, 3),
    }
    assert await venue.depth(CCER) == (2, {"bids": [], "asks": [(900, 4)]})
    [refusal] = await venue.rows("SELECT envelope FROM events WHERE stream_id = $1 AND version = 2", f"book-{CCER}")
    event = unwrap(refusal["envelope"])[1]
    assert isinstance(event, pb.OrderRejected) and event.code == "SEQUENCE_DUPLICATE_ID"

    # Unknown instruments have no book: the refusal is a one-event stream, and a rejected order.
    envelope = await venue.sequence(
        pb.SubmitOrder(
            order_id="x1", instrument_id="NOPE", broker_id="broker-a", account_id="a", side=pb.BUY, price=1, quantity=1
        )
    )
    assert await venue.rows("SELECT stream_id FROM events WHERE stream_id LIKE 'refused-%'") == [
        {"stream_id": f"refused-{envelope.event_id}"}
    ]
    assert (await venue.rows("SELECT status, reject_code FROM orders WHERE order_id = 'x1'")) == [
        {"status": "rejected", "reject_code": "INSTRUMENT_UNKNOWN"}
    ]

    # A malformed id from Kafka is refused with a code and stored nowhere.
    await venue.submit("y" * 100_000, JCM, pb.BUY, 1000, 1, "broker-a")
    assert await venue.pool.fetchval("SELECT max(length(envelope)) FROM events") < 2000
    assert await venue.pool.fetchval("SELECT count(*) FROM orders") == 5

    # Cancelling the rest of a sell order gives its units back to the holder.
    await venue.sequence(pb.CancelOrder(order_id="s1", instrument_id=JCM, broker_id="broker-a"))
    assert await venue.depth(JCM) == (5, {"bids": [], "asks": []})
    assert (await venue.rows("SELECT status FROM orders WHERE order_id = 's1'")) == [{"status": "cancelled"}]
    [release] = await venue.rows("SELECT key, value FROM outbox WHERE topic = $1", topics.REGISTRY_COMMANDS)
    assert release["key"] == b"acct-broker-a"
    assert unwrap(release["value"])[1] == rpb.ReleaseReservation(reservation_id="s1", quantity=5)


async def test_a_failed_transaction_changes_nothing_and_the_next_order_works(venue: Venue) -> None:
    await venue.submit("s1", JCM, pb.SELL, 1000, 10, "broker-a")
    await venue.submit("b0", JCM, pb.BUY, 990, 10, "broker-b")
    before = (await venue.depth(JCM), await venue.rows("SELECT * FROM orders ORDER BY order_id"))
    events_before = await venue.pool.fetchval("SELECT count(*) FROM events")

    command = pb.SubmitOrder(
        order_id="b1",
        instrument_id=JCM,
        broker_id="broker-b",
        account_id="acct-broker-b",
        side=pb.BUY,
        price=1000,
        quantity=4,
        client_order_id="c-b1",
    )
    envelope = wrap(command, aggregate_id=JCM, context=Context.new("intake"), occurred_at=datetime.now(UTC))
    with pytest.raises(RuntimeError, match="crash after recording"):
        async with venue.service.unit_of_work() as uow:
            await venue.service.handlers[topics.MATCHING_ORDERS](uow, envelope, command)
            book = venue.service.books.cached(f"book-{JCM}")
            assert book is not None and book.sequence == 3  # folded in for this unit of work only...
            assert venue.service.unit_of_work.locks(f"book-{JCM}").locked()  # ...which holds it
            raise RuntimeError("crash after recording")
    assert venue.service.books.cached(f"book-{JCM}") is None  # dropped, reloaded from the store

    assert (await venue.depth(JCM), await venue.rows("SELECT * FROM orders ORDER BY order_id")) == before
    assert await venue.pool.fetchval("SELECT count(*) FROM events") == events_before
    assert await venue.rows("SELECT * FROM trades") == []

    # Redelivered, it applies once, with the sequence the failed attempt would have had.
    async with venue.service.unit_of_work() as uow:
        await venue.service.handlers[topics.MATCHING_ORDERS](uow, envelope, command)
    assert await venue.depth(JCM) == (3, {"bids": [(990, 10)], "asks": [(1000, 6)]})
    assert await venue.rows("SELECT trade_id, quantity FROM trades") == [{"trade_id": f"{JCM}:3:1", "quantity": 4}]


async def test_live_state_hash_equals_replay_from_zero_and_from_snapshot(venue: Venue) -> None:
    rng = random.Random(11)
    resting: list[tuple[str, str, str]] = []
    for n in range(120):
        instrument = rng.choice((JCM, CCER))
        broker = rng.choice(("broker-a", "broker-b"))
        if resting and rng.random() < 0.15:
            order_id, on, owner = resting.pop(rng.randrange(len(resting)))
            await venue.sequence(pb.CancelOrder(order_id=order_id, instrument_id=on, broker_id=owner))
            continue
        order_id = f"o{n}" if rng.random() > 0.05 else "o1"  # now and then a reused id
        await venue.submit(
            order_id, instrument, rng.choice((pb.BUY, pb.SELL)), rng.randint(990, 1010), rng.randint(1, 30), broker
        )
        resting.append((order_id, instrument, broker))
    assert await venue.pool.fetchval("SELECT count(*) FROM snapshots") == 2
    assert await venue.pool.fetchval("SELECT count(*) FROM trades") > 20

    async with venue.pool.acquire() as conn:
        live = await venue.service.state.hash(conn)
    zero = await replay(venue.settings, build, "zero")
    from_snapshot = await replay(venue.settings, build, "snapshot")
    assert live == zero == from_snapshot

    # The hash sees a projection that drifted from the journal.
    await venue.pool.execute("UPDATE orders SET filled = filled + 1 WHERE order_id = 'o2'")
    async with venue.pool.acquire() as conn:
        assert (await venue.service.state.hash(conn)).projections != zero.projections


async def test_the_broker_api_reads_projections_and_refuses_hostile_input(venue: Venue, dev_issuer: DevIssuer) -> None:
    A = bearer(dev_issuer, "broker-a", ["broker"], "broker-a")
    B = bearer(dev_issuer, "broker-b", ["broker"], "broker-b")
    await venue.mandate("broker-a", "acct-1")
    await venue.mandate("broker-b", "acct-1")
    await venue.mandate("broker-b", "acct-2")
    await venue.mandate("broker-a", "a")
    app = create_app(venue.settings, build, router, "matching under test")
    app.include_router(router(venue.service))  # the lifespan (Kafka, consumer) is not needed here
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://matching") as http:

        async def place(
            headers: dict[str, str], side: str, price: int, quantity: int, client: str, account: str = "acct-1"
        ) -> dict[str, Any]:
            body = {
                "instrument_id": JCM,
                "side": side,
                "price": price,
                "quantity": quantity,
                "account_id": account,
                "client_order_id": client,
            }
            response = await http.post("/orders", headers=headers, json=body)
            assert response.status_code == 202, response.text
            return dict(response.json())

        sells = [await place(A, "SELL", 1000 + n, 10, f"s{n}") for n in range(3)]
        assert [s["status"] for s in sells] == ["reserving"] * 3
        # Placing is idempotent per client order id: the same order again is the first one
        # (200); the same id for another order is refused (422, as a reused Idempotency-Key), and places nothing.
        first = {"instrument_id": JCM, "side": "SELL", "price": 1000, "quantity": 10, "account_id": "acct-1"}
        again = await http.post("/orders", headers=A, json=first | {"client_order_id": "s0"})
        assert (again.status_code, again.json()["order_id"]) == (200, sells[0]["order_id"])
        other = await http.post("/orders", headers=A, json=first | {"client_order_id": "s0", "price": 999})
        assert (other.status_code, other.json()["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
        assert await venue.pool.fetchval("SELECT count(*) FROM intake_orders") == 3
        for sell in sells:
            await venue.reserved(sell["order_id"], 10)
        assert await venue.pump() == 3
        # Another account: the same account on both sides is a self-trade, prevented.
        buy = await place(B, "BUY", 1001, 15, "b1", account="acct-2")
        assert buy["status"] == "reserving" and buy["fills"] == []  # until settlement covers it
        [cover] = [unwrap(r["value"])[1] for r in await venue.rows("SELECT value FROM outbox WHERE topic = $1",
                                                                  topics.SETTLEMENT_COMMANDS)]  # fmt: skip
        assert cover == spb.ReserveCash(
            order_id=buy["order_id"], account_id="acct-2", currency="USD", amount=1001 * 15, quantity=15
        )
        await venue.covered(buy["order_id"])
        assert await venue.pump() == 1

        order = (await http.get(f"/orders/{buy['order_id']}", headers=B)).json()
        assert (order["status"], order["filled"]) == ("filled", 15)
        assert order["fills"] == [
            {"trade_id": f"{JCM}:4:1", "price": 1000, "quantity": 10},
            {"trade_id": f"{JCM}:4:2", "price": 1001, "quantity": 5},
        ]
        assert (await http.get(f"/orders/{buy['order_id']}", headers=A)).status_code == 404  # not A's

        # A's orders, a page at a time, oldest first.
        pages, after = [], None
        while True:
            params: dict[str, Any] = {"limit": 2} | ({"after": after} if after else {})
            page = (await http.get("/orders", headers=A, params=params)).json()
            pages.append([(o["client_order_id"], o["status"], o["filled"]) for o in page["items"]])
            after = page["next"]
            if after is None:
                break
        assert pages == [[("s0", "filled", 10), ("s1", "resting", 5)], [("s2", "resting", 0)]]

        # Public trades: no account or broker of either side.
        page = (await http.get("/trades", headers=B, params={"instrument_id": JCM, "limit": 1})).json()
        assert set(page["items"][0]) == {
            "trade_id",
            "instrument_id",
            "price",
            "quantity",
            "currency",
            "aggressor",
            "buy_order_id",
            "sell_order_id",
            "engine_sequence",
        }
        assert page["items"][0]["aggressor"] == "BUY" and page["next"] == f"{JCM}:4:1"
        rest = (await http.get("/trades", headers=A, params={"instrument_id": JCM, "after": page["next"]})).json()
        assert [t["trade_id"] for t in rest["items"]] == [f"{JCM}:4:2"] and rest["next"] is None
        assert "acct" not in (await http.get("/trades", headers=A)).text

        book = (await http.get(f"/instruments/{JCM}/book", headers=A)).json()
        assert book == {
            "instrument_id": JCM,
            "sequence": 4,
            "bids": [],
            "asks": [[1001, 5], [1002, 10]],
            "checksum": zlib.crc32(b"10015100210"),  # Kraken's: ask 1001 x 5, ask 1002 x 10, no bids
        }

        # Cancel: another broker's order is unknown to B; A's resting one is cancelled.
        assert (await http.delete(f"/orders/{sells[2]['order_id']}", headers=B)).status_code == 404
        assert (await http.delete(f"/orders/{sells[0]['order_id']}", headers=A)).json()["code"] == "ORDER_NOT_RESTING"
        assert (await http.delete(f"/orders/{sells[2]['order_id']}", headers=A)).status_code == 202
        await venue.pump()
        assert (await http.get(f"/orders/{sells[2]['order_id']}", headers=A)).json()["status"] == "cancelled"

        # Hostile input: 4xx with a code, never a 500, nothing stored.
        good: dict[str, object] = {
            "instrument_id": JCM,
            "side": "BUY",
            "price": 1000,
            "quantity": 1,
            "account_id": "a",
            "client_order_id": "h",
        }
        hostile: list[dict[str, object]] = [
            {"account_id": "x" * 10_000},
            {"account_id": "nul\x00"},
            {"client_order_id": "\ud800"},
            {"instrument_id": "x" * 65},
            {"price": 2**63},
            {"quantity": 2**64},
            {"price": 0},
            {"quantity": -1},
        ]
        for change in hostile:
            # As escaped JSON text, which is how a lone surrogate travels.
            body = json.dumps(good | change)
            response = await http.post("/orders", headers=A | {"content-type": "application/json"}, content=body)
            assert (response.status_code, response.json()["code"]) == (422, "REQUEST_INVALID"), change
        response = await http.post("/orders", headers=A, json=good | {"price": 100_000, "quantity": 2**62})
        assert (response.status_code, response.json()["code"]) == (422, "ORDER_NOTIONAL_TOO_LARGE")
        queries: list[tuple[str, dict[str, Any]]] = [
            ("/trades", {"after": "nope:1:1"}),
            ("/orders", {"after": "nope"}),
        ]
        for path, params in queries:
            response = await http.get(path, headers=A, params=params)
            assert (response.status_code, response.json()["code"]) == (422, "CURSOR_UNKNOWN")
        queries = [
            ("/trades", {"limit": 2**70}),
            ("/trades", {"instrument_id": "a\x00"}),
            ("/orders", {"limit": 0}),
            ("/orders/" + "z" * 100, {}),
            ("/instruments/" + "z" * 100 + "/book", {}),
        ]
        for path, params in queries:
            response = await http.get(path, headers=A, params=params)
            assert (response.status_code, response.json()["code"]) == (422, "REQUEST_INVALID"), path
        assert await venue.pool.fetchval("SELECT count(*) FROM intake_orders") == 4


async def test_orders_need_a_mandate_and_a_revocation_cancels_what_may_still_rest(
    venue: Venue, dev_issuer: DevIssuer
) -> None:
    A = bearer(dev_issuer, "broker-a", ["broker"], "broker-a")
    app = create_app(venue.settings, build, router, "matching under test")
    app.include_router(router(venue.service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://matching") as http:

        async def place(
            side: str, account: str, client: str, headers: dict[str, str] = A, price: int = 1000
        ) -> httpx.Response:
            body = {
                "instrument_id": JCM,
                "side": side,
                "price": price,
                "quantity": 10,
                "account_id": account,
                "client_order_id": client,
            }
            return await http.post("/orders", headers=headers, json=body)

        # No mandate: refused on both sides, for an existing account and an invented one alike.
        for side, account in (("BUY", "acct-1"), ("SELL", "acct-1"), ("BUY", "no-such-account")):
            refused = await place(side, account, f"{side}-{account}")
            assert (refused.status_code, refused.json()["code"]) == (403, "BROKER_NOT_MANDATED")
        assert await venue.pool.fetchval("SELECT count(*) FROM intake_orders") == 0
        assert await venue.pool.fetchval("SELECT count(*) FROM outbox") == 0

        # Function level: no token 401; no broker role, or a broker token without broker_id, 403.
        assert (await place("BUY", "acct-1", "x", {})).status_code == 401
        regulator = bearer(dev_issuer, "th-onep", ["regulator:TH"])
        assert (await place("BUY", "acct-1", "x", regulator)).status_code == 403
        assert (await http.get("/orders", headers=regulator)).status_code == 403
        assert (await http.get("/trades", headers=regulator)).status_code == 200  # market data: any identity
        assert (await http.get("/trades")).status_code == 401
        nameless = bearer(dev_issuer, "broker-x", ["broker"])
        assert (await http.get("/orders", headers=nameless)).json()["code"] == "AUTH_FORBIDDEN"

        # Granted: both sides are placed; the broker lists the mandate.
        await venue.mandate("broker-a", "acct-1")
        assert (await http.get("/mandates", headers=A)).json() == {
            "items": [{"mandate_id": "m-broker-a-acct-1", "account_id": "acct-1", "jurisdiction": "TH"}],
            "next": None,
        }
        resting = (await place("SELL", "acct-1", "s-rest")).json()
        reserving = (await place("SELL", "acct-1", "s-wait")).json()
        await venue.reserved(resting["order_id"], 10)
        assert await venue.pump() == 1
        assert await venue.depth(JCM) == (1, {"bids": [], "asks": [(1000, 10)]})
        queued = (await place("BUY", "acct-1", "b-queued", price=990)).json()
        await venue.covered(queued["order_id"])  # sequenced, not yet in the engine
        uncovered = (await place("BUY", "acct-1", "b-no-cash", price=990)).json()
        await venue.covered(uncovered["order_id"], refused="CASH_INSUFFICIENT")
        no_cash = (await http.get(f"/orders/{uncovered['order_id']}", headers=A)).json()
        assert (no_cash["status"], no_cash["reject_code"]) == ("rejected", "CASH_INSUFFICIENT")

        await venue.mandate("broker-a", "acct-1", revoke=True)
        assert (await http.get("/mandates", headers=A)).json()["items"] == []
        # What rests and what is queued is cancelled (the cancel queues behind the order)...
        await venue.pump()
        assert await venue.depth(JCM) == (4, {"bids": [], "asks": []})
        for order in (resting, queued):
            assert (await http.get(f"/orders/{order['order_id']}", headers=A)).json()["status"] == "cancelled"
        # ...and a sell still reserving is refused when its units come back, which go back.
        await venue.reserved(reserving["order_id"], 10)
        waiting = (await http.get(f"/orders/{reserving['order_id']}", headers=A)).json()
        assert (waiting["status"], waiting["reject_code"]) == ("rejected", "BROKER_NOT_MANDATED")
        commands = [unwrap(r["value"])[1] for r in await venue.rows("SELECT value FROM outbox ORDER BY id")]
        released = [c for c in commands if isinstance(c, rpb.ReleaseReservation)]
        assert released == [
            rpb.ReleaseReservation(reservation_id=resting["order_id"], quantity=10),
            rpb.ReleaseReservation(reservation_id=reserving["order_id"], quantity=10),
        ]
        assert (await place("BUY", "acct-1", "b-after")).json()["code"] == "BROKER_NOT_MANDATED"

        # A malformed mandate fact is refused with a code (the consumer dead-letters it), not stored.
        with pytest.raises(DomainError) as malformed:
            await venue.registry(
                rpb.MandateGranted(mandate_id="m", account_id="x" * 100_000, broker_id="broker-a", jurisdiction="TH")
            )
        assert malformed.value.code == "MANDATE_INVALID"
        assert await venue.pool.fetchval("SELECT count(*) FROM mandates") == 0

    # The OpenAPI document declares each operation's roles and its refusals.
    paths = app.openapi()["paths"]
    assert paths["/orders"]["post"]["security"] == [{"oauth2": ["broker"]}]
    assert set(paths["/trades"]["get"]["security"][0]["oauth2"]) == {
        "broker",
        "regulator",
        "operator",
        "registry-operator",
        "national-registry",
    }
    assert {"401", "403", "404", "413", "422"} <= set(paths["/orders"]["post"]["responses"])


async def test_order_types_replace_and_expiry_through_the_api(venue: Venue, dev_issuer: DevIssuer) -> None:
    """Market, IOC, GTD (expired by the timer), replace and the intake refusals, each
    order covered before the engine sees it and its cover given back when it ends."""
    A = bearer(dev_issuer, "broker-a", ["broker"], "broker-a")
    B = bearer(dev_issuer, "broker-b", ["broker"], "broker-b")
    await venue.mandate("broker-a", "seller")
    await venue.mandate("broker-b", "buyer")
    app = create_app(venue.settings, build, router, "matching under test")
    app.include_router(router(venue.service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://matching") as http:

        async def place(headers: dict[str, str], **fields: Any) -> httpx.Response:
            body = {"instrument_id": JCM, "quantity": 10, "client_order_id": f"c{random.random()}"} | fields
            return await http.post("/orders", headers=headers, json=body)

        async def through(response: httpx.Response) -> dict[str, Any]:
            """Cover the order as the registry or settlement would, and sequence it."""
            assert response.status_code == 202, response.text
            order = dict(response.json())
            if order["side"] == "SELL":
                await venue.reserved(order["order_id"], order["quantity"])
            else:
                await venue.covered(order["order_id"])
            await venue.pump()
            return dict(
                (await http.get(f"/orders/{order['order_id']}", headers=A if order["side"] == "SELL" else B)).json()
            )

        async def covers() -> list[Message]:
            return [unwrap(r["value"])[1] for r in await venue.rows("SELECT value FROM outbox ORDER BY id")]

        sell = await through(await place(A, side="SELL", price=1000, account_id="seller"))
        assert sell["status"] == "resting"
        # A market buy is covered at the band's maximum, never rests, and takes the best price.
        market = await through(await place(B, side="BUY", order_type="MARKET", quantity=4, account_id="buyer"))
        assert (market["status"], market["filled"], market["fills"][0]["price"]) == ("filled", 4, 1000)
        [*_, market_cover] = [c for c in await covers() if isinstance(c, spb.ReserveCash)]
        assert market_cover.amount == 100_000 * 4
        # IOC: what cannot fill now is cancelled.
        ioc = await through(await place(B, side="BUY", price=1000, time_in_force="IOC", account_id="buyer"))
        assert (ioc["status"], ioc["filled"]) == ("cancelled", 6)

        # GTD: rests until the expiry timer tells the engine it is due.
        expire_at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
        gtd = await through(
            await place(
                A, side="SELL", price=1200, time_in_force="GTD", expire_at=expire_at.isoformat(), account_id="seller"
            )
        )
        assert gtd["status"] == "resting"
        expiry = Expiry(venue.service)
        assert await expiry.run_once(time.time_ns()) == 0  # nothing due yet
        assert await expiry.run_once(int(expire_at.timestamp()) * 10**9) == 1
        assert await venue.pump() == 1
        assert (await http.get(f"/orders/{gtd['order_id']}", headers=A)).json()["status"] == "cancelled"
        assert rpb.ReleaseReservation(reservation_id=gtd["order_id"], quantity=10) in await covers()

        # Replace: a new price loses priority; a buy may not go above its covered limit.
        moved = await through(await place(A, side="SELL", price=1100, account_id="seller"))
        reply = await http.post(f"/orders/{moved['order_id']}/replace", headers=A, json={"price": 1150, "quantity": 5})
        assert reply.status_code == 202, reply.text
        await venue.pump()
        assert (await venue.depth(JCM))[1]["asks"] == [(1150, 5)]
        bid = await through(await place(B, side="BUY", price=900, quantity=2, account_id="buyer"))
        above = await http.post(f"/orders/{bid['order_id']}/replace", headers=B, json={"price": 950, "quantity": 2})
        assert (above.status_code, above.json()["code"]) == (422, "REPLACE_NEEDS_COVER")
        lower = await http.post(f"/orders/{bid['order_id']}/replace", headers=B, json={"price": 850, "quantity": 1})
        assert lower.status_code == 202
        other = await http.post(f"/orders/{bid['order_id']}/replace", headers=A, json={"price": 850, "quantity": 1})
        assert other.status_code == 404  # not A's order

        # Refused at intake with a code, before anything is covered.
        before = len(await covers())
        for fields, code in (
            ({"side": "BUY", "account_id": "buyer"}, "ORDER_PRICE_INVALID"),  # a limit without a price
            ({"side": "BUY", "order_type": "MARKET", "price": 1000, "account_id": "buyer"}, "ORDER_PRICE_INVALID"),
            (
                {"side": "BUY", "order_type": "MARKET", "post_only": True, "account_id": "buyer"},
                "ORDER_POST_ONLY_INVALID",
            ),
            ({"side": "SELL", "price": 1000, "time_in_force": "GTD", "account_id": "seller"}, "ORDER_EXPIRY_INVALID"),
            (
                {
                    "side": "SELL",
                    "price": 1000,
                    "time_in_force": "GTD",
                    "expire_at": "2020-01-01T00:00:00Z",
                    "account_id": "seller",
                },
                "ORDER_EXPIRY_PASSED",
            ),
            (
                {"side": "SELL", "price": 1000, "time_in_force": "DAY", "account_id": "seller"},
                "ORDER_TIME_IN_FORCE_INVALID",
            ),
        ):
            refused = await place(A if fields["side"] == "SELL" else B, **fields)
            assert (refused.status_code, refused.json()["code"]) == (422, code), fields
        assert len(await covers()) == before
