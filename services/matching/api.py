"""Broker API: place, cancel and follow orders for mandated accounts; market data.

Authority (docs/trust.md): order endpoints need the role `broker` and its `broker_id`
claim, and see only the caller's own orders; market data needs any authenticated
identity. Another broker's order answers exactly like no order (404 ORDER_UNKNOWN).

Two WebSocket streams (docs/market-data.md), with the bearer token in the Authorization
header or as `?access_token=`; a refused handshake is an HTTP answer with the Problem
body (401, 403, 404, or 503 with Retry-After past TONNE_MARKET_STREAMS per process):

- `/instruments/{id}/stream` (any identity): a snapshot, then sequenced depth updates;
- `/orders/stream` (broker): every change of the caller's own orders.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response, Security, WebSocket
from fastapi.responses import JSONResponse
from fastapi.security import SecurityScopes
from pydantic import AwareDatetime, BaseModel, Field
from starlette.websockets import WebSocketDisconnect

from services.common.auth import Identity, forbidden
from services.common.errors import DomainError
from services.common.inputs import Identifier, Limit, Positive64, is_identifier
from services.common.problems import refusals
from services.matching.bars import vwap
from services.matching.feed import Feed, FeedSettings, StreamsFull, Subscription
from services.matching.marketdata import Snapshot
from services.matching.projections import (
    Bar,
    OrderRow,
    bars,
    broker_mandates,
    broker_order,
    broker_orders,
    last_daily_bar,
    trades,
)
from services.matching.service import Matching
from tonne.v1 import matching_pb2 as pb

# A trade id is "<instrument_id>:<engine sequence>:<n>", so it may be longer than an Identifier.
TradeCursor = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")]

# Market data is for every authenticated identity.
ANY_ROLE = ["broker", "regulator", "operator", "registry-operator", "national-registry"]


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"  # a limit `protection_ticks` beyond the best opposite price; never rests


class TimeInForce(StrEnum):
    GTC = "GTC"  # rests until filled or cancelled (a limit order's default)
    IOC = "IOC"  # fills what it can now, the rest is cancelled (a market order's default)
    FOK = "FOK"  # fills whole now, or not at all
    GTD = "GTD"  # rests until `expire_at`
    DAY = "DAY"  # rests until the instrument's session closes


class SelfTradePrevention(StrEnum):
    CANCEL_NEWEST = "CANCEL_NEWEST"  # the incoming order's rest is cancelled (default)
    CANCEL_OLDEST = "CANCEL_OLDEST"  # the resting order is cancelled
    CANCEL_BOTH = "CANCEL_BOTH"
    DECREMENT = "DECREMENT"  # both reduced by the smaller quantity, no trade


class StpScope(StrEnum):
    ACCOUNT = "ACCOUNT"  # orders of the same account never trade with each other (default)
    BROKER = "BROKER"  # nor orders of the same broker


class OrderRequest(BaseModel):
    instrument_id: Identifier
    side: Side
    order_type: OrderType = OrderType.LIMIT
    price: Positive64 | None = Field(
        None, description="minor units of the instrument's currency; required for LIMIT, absent for MARKET"
    )
    quantity: Positive64 = Field(description="tonnes")
    account_id: Identifier
    client_order_id: Identifier | None = Field(
        None, description="the caller's id of the order; required unless the Idempotency-Key header gives it"
    )
    time_in_force: TimeInForce | None = Field(None, description="GTC for a limit order, IOC for a market order")
    post_only: bool = Field(False, description="never takes liquidity: cancelled instead of trading")
    expire_at: AwareDatetime | None = Field(None, description="GTD only: when the order expires")
    self_trade_prevention: SelfTradePrevention = SelfTradePrevention.CANCEL_NEWEST
    stp_scope: StpScope = StpScope.ACCOUNT

    def command(self, client_order_id: str) -> pb.SubmitOrder:
        if (self.order_type is OrderType.LIMIT) == (self.price is None):
            raise DomainError("ORDER_PRICE_INVALID", "a LIMIT order needs a price; a MARKET order has none")
        order = pb.SubmitOrder(
            instrument_id=self.instrument_id,
            account_id=self.account_id,
            side=pb.Side.Value(self.side.value),
            price=self.price or 0,
            quantity=self.quantity,
            client_order_id=client_order_id,
            order_type=pb.OrderType.Value(f"ORDER_TYPE_{self.order_type.value}"),
            post_only=self.post_only,
            self_trade_prevention=pb.SelfTradePrevention.Value(f"STP_{self.self_trade_prevention.value}"),
            stp_scope=pb.StpScope.Value(f"STP_SCOPE_{self.stp_scope.value}"),
        )
        if self.time_in_force is not None:
            order.time_in_force = pb.TimeInForce.Value(f"TIME_IN_FORCE_{self.time_in_force.value}")
        if self.expire_at is not None:
            order.expire_at.FromDatetime(self.expire_at.astimezone(UTC))
        return order


class ReplaceRequest(BaseModel):
    price: Positive64 = Field(description="the new limit: a change of price loses the order's time priority")
    quantity: Positive64 = Field(description="the new open quantity: never more than is open now")


class FillView(BaseModel):
    trade_id: str
    price: int
    quantity: int


class OrderView(BaseModel):
    order_id: str
    client_order_id: str
    instrument_id: str
    side: Side
    price: int
    quantity: int
    account_id: str
    status: str  # reserving | rejected | pending | resting | filled | cancelled
    filled: int = 0
    reject_code: str | None = None
    reject_reason: str | None = None
    fills: list[FillView] = []


class OrderPage(BaseModel):
    items: list[OrderView]
    next: str | None  # pass as `after` for the next page; null on the last


class TradeView(BaseModel):
    """A trade as the market sees it: no account or broker of either side."""

    trade_id: str
    instrument_id: str
    price: int
    quantity: int
    currency: str
    aggressor: Side
    buy_order_id: str
    sell_order_id: str
    engine_sequence: int


class MandateView(BaseModel):
    mandate_id: str
    account_id: str
    jurisdiction: str


class MandatePage(BaseModel):
    items: list[MandateView]
    next: str | None  # a mandate id: pass as `after`


class InstrumentView(BaseModel):
    instrument_id: str
    standard: str
    host_party: str
    vintage: int
    authorized_for: str
    currency: str
    tick: int
    lot: int
    min_price: int
    max_price: int


class TradePage(BaseModel):
    items: list[TradeView]
    next: str | None


# [price, quantity]: a list, not a tuple, so OpenAPI 3.1 documents it as a plain array schema.
Level = Annotated[list[int], Field(min_length=2, max_length=2)]


class BookView(BaseModel):
    instrument_id: str
    sequence: int = Field(description="inputs the instrument's engine has taken: the stream's sequence")
    bids: list[Level] = Field(description="[price, quantity], best first, at most `depth` levels")
    asks: list[Level]
    checksum: int = Field(description="CRC32 of the top 10 levels of each side, as Kraken's (docs/market-data.md)")


class Interval(StrEnum):
    MINUTE = "1m"
    HOUR = "1h"
    DAY = "1d"


class BarView(BaseModel):
    start: datetime  # UTC; a bar holds the trades recorded in [start, start + interval)
    interval: Interval
    open: int
    high: int
    low: int
    close: int
    volume: int  # tonnes
    vwap: int = Field(description="sum(price x quantity) / volume, to the nearest minor unit, a half rounded up")
    trades: int


class BarPage(BaseModel):
    items: list[BarView]
    next: datetime | None  # pass as `after` for the next page; null on the last


class ReferencePrice(BaseModel):
    instrument_id: str
    source: str = "previous-session-vwap"
    session_start: datetime | None = Field(description="the UTC day of the last completed daily bar")
    price: int | None = Field(description="that bar's VWAP; null before the instrument's first completed day")


def bar_view(bar: Bar, interval: Interval) -> BarView:
    price = vwap(bar.notional, bar.volume)
    assert price is not None  # a bar has at least one trade
    return BarView(
        start=datetime.fromtimestamp(bar.start_s, UTC),
        interval=interval,
        open=bar.open,
        high=bar.high,
        low=bar.low,
        close=bar.close,
        volume=bar.volume,
        vwap=price,
        trades=bar.trades,
    )


# An sf-string (RFC 8941) as the draft's Idempotency-Key is, or the bare value.
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')


def idempotency_key(header: str) -> str:
    """The client order id an Idempotency-Key header names (draft-ietf-httpapi-
    idempotency-key-header): an sf-string, or for convenience its bare content, holding
    an identifier (1-64 of A-Z a-z 0-9 . _ : @ -, e.g. a UUID)."""
    value = header.strip()
    quoted = _SF_STRING.fullmatch(value)
    if quoted is not None:
        value = re.sub(r"\\(.)", r"\1", quoted.group(1))
    if not is_identifier(value):
        raise DomainError(
            "REQUEST_INVALID",
            "the request does not match the API's schema",
            ["Idempotency-Key: 1-64 characters of A-Z a-z 0-9 . _ : @ -, starting with a letter or digit"],
        )
    return value


def order_view(row: OrderRow) -> OrderView:
    return OrderView(
        order_id=row.order_id,
        client_order_id=row.client_order_id,
        instrument_id=row.instrument_id,
        side=Side(pb.Side.Name(pb.Side.ValueType(row.side))),
        price=row.price,
        quantity=row.quantity,
        account_id=row.account_id,
        status=row.status,
        filled=row.filled,
        reject_code=row.reject_code,
        reject_reason=row.reject_reason,
        fills=[FillView(trade_id=f.trade_id, price=f.price, quantity=f.quantity) for f in row.fills],
    )


def router(matching: Matching) -> APIRouter:
    api = APIRouter(tags=["matching"])
    pool = matching.pool
    authenticate = matching.auth.authenticate
    feed = Feed(pool, matching.books, FeedSettings())

    def broker(identity: Identity = Security(authenticate, scopes=["broker"])) -> str:
        """The caller's broker id: a broker token without a well-formed one acts for nobody."""
        if not is_identifier(identity.broker_id):
            raise forbidden("a broker token must carry a broker_id claim")
        return identity.broker_id

    # Dependencies as defaults: annotations are strings here and cannot name these locals.
    broker_dependency = Depends(broker)
    anyone = Security(authenticate, scopes=ANY_ROLE)

    async def view(order_id: str, broker_id: str) -> OrderView:
        async with pool.acquire() as conn:
            row = await broker_order(conn, broker_id, order_id)
        if row is None:  # another broker's order answers like no order at all
            raise DomainError("ORDER_UNKNOWN", f"no order {order_id!r}", http_status=404)
        return order_view(row)

    @api.post(
        "/orders",
        status_code=202,
        response_model=OrderView,
        responses={
            200: {
                "model": OrderView,
                "description": "this idempotency key was placed before with this body: that order",
            },
            **refusals(
                _403="AUTH_FORBIDDEN, or BROKER_NOT_MANDATED: the caller holds no mandate for the account "
                "(the same answer whether or not the account exists)",
                _404="INSTRUMENT_UNKNOWN",
                _409="IDEMPOTENCY_KEY_IN_FLIGHT: the first request with this key is still being placed "
                "(retry after Retry-After)",
                _413="REQUEST_TOO_LARGE",
                _422="REQUEST_INVALID; IDEMPOTENCY_KEY_REUSED: the key (client order id) names another order of "
                "the caller's; IDEMPOTENCY_KEY_MISMATCH: the header and the body's client_order_id differ; or "
                "the instrument refuses the order (ORDER_*)",
            ),
        },
    )
    async def place(
        body: OrderRequest,
        response: Response,
        broker_id: str = broker_dependency,
        key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
    ) -> OrderView:
        """Place an order for an account the caller holds a mandate for. It is covered
        before it may reach the book: a SELL by its units reserved in the registry, a BUY
        by its cash reserved in settlement (limit price x quantity; a MARKET buy at the
        band's maximum). What is left of a cover goes back when the order ends.

        Idempotent, per draft-ietf-httpapi-idempotency-key-header: the `Idempotency-Key`
        header (an sf-string such as `"8e03978e-40d5"`, or its bare content; 1-64 of
        A-Z a-z 0-9 . _ : @ -) is the order's client order id, so every way in shares one
        de-duplication; without the header the body's `client_order_id` is the key, and
        with both they must be equal (else 422 IDEMPOTENCY_KEY_MISMATCH). The same key with
        the same body answers 200 with the first order (as it stands now); the same key
        with another body is refused 422 IDEMPOTENCY_KEY_REUSED; a request arriving while
        the first with its key is still being placed answers 409 IDEMPOTENCY_KEY_IN_FLIGHT
        (retry it). Keys are the caller's own and never expire."""
        client_order_id = body.client_order_id
        if key is not None:
            client_order_id = idempotency_key(key)
            if body.client_order_id not in (None, client_order_id):
                raise DomainError(
                    "IDEMPOTENCY_KEY_MISMATCH", "the Idempotency-Key header and the body's client_order_id differ"
                )
        if client_order_id is None:
            raise DomainError(
                "REQUEST_INVALID",
                "the request does not match the API's schema",
                ["body.client_order_id: required without an Idempotency-Key header"],
            )
        order_id, placed = await matching.place(broker_id, body.command(client_order_id))
        if not placed:
            response.status_code = 200  # the same key and body again: the first order
        return await view(order_id, broker_id)

    @api.get("/orders", response_model=OrderPage, responses=refusals(_422="REQUEST_INVALID or CURSOR_UNKNOWN"))
    async def list_orders(
        broker_id: str = broker_dependency, limit: Limit = 100, after: Identifier | None = None
    ) -> OrderPage:
        """The caller's own orders, oldest first; `after` is the last order id of the previous page."""
        async with pool.acquire() as conn:
            rows, cursor = await broker_orders(conn, broker_id, limit, after)
        return OrderPage(items=[order_view(row) for row in rows], next=cursor)

    @api.get(
        "/orders/{order_id}",
        response_model=OrderView,
        responses=refusals(_404="ORDER_UNKNOWN: no such order of the caller's", _422="REQUEST_INVALID"),
    )
    async def get_order(order_id: Identifier, broker_id: str = broker_dependency) -> OrderView:
        return await view(order_id, broker_id)

    @api.delete(
        "/orders/{order_id}",
        status_code=202,
        responses=refusals(
            _404="ORDER_UNKNOWN: no such order of the caller's",
            _409="ORDER_NOT_RESTING",
            _422="REQUEST_INVALID",
        ),
    )
    async def cancel(order_id: Identifier, broker_id: str = broker_dependency) -> dict[str, str]:
        await matching.cancel(broker_id, order_id)
        return {"order_id": order_id, "status": "cancelling"}

    @api.post(
        "/orders/{order_id}/replace",
        status_code=202,
        responses=refusals(
            _404="ORDER_UNKNOWN: no such order of the caller's",
            _409="ORDER_NOT_RESTING",
            _422="REQUEST_INVALID, REPLACE_NEEDS_COVER (a buy above its covered limit), or the instrument "
            "refuses the price (ORDER_*)",
        ),
    )
    async def replace(order_id: Identifier, body: ReplaceRequest, broker_id: str = broker_dependency) -> dict[str, str]:
        """Move a resting order: a smaller size at the same price keeps its time priority;
        a new price loses it (the order may trade at once, as a new one would)."""
        await matching.replace(broker_id, order_id, body.price, body.quantity)
        return {"order_id": order_id, "status": "replacing"}

    @api.get("/mandates", response_model=MandatePage, responses=refusals(_422="REQUEST_INVALID or CURSOR_UNKNOWN"))
    async def mandates(
        broker_id: str = broker_dependency, limit: Limit = 100, after: Identifier | None = None
    ) -> MandatePage:
        """The accounts the caller may place orders for, as matching has seen the registry's
        mandates (a grant is usable here once it is listed)."""
        async with pool.acquire() as conn:
            rows, cursor = await broker_mandates(conn, broker_id, limit, after)
        return MandatePage(items=[MandateView(**dict(row)) for row in rows], next=cursor)

    @api.get("/instruments", response_model=list[InstrumentView], responses=refusals())
    async def instruments(_: Identity = anyone) -> list[InstrumentView]:
        return [InstrumentView(**vars(i)) for i in matching.instruments.values()]

    def known(instrument_id: str) -> None:
        if instrument_id not in matching.instruments:
            raise DomainError("INSTRUMENT_UNKNOWN", f"no instrument {instrument_id!r}", http_status=404)

    @api.get(
        "/instruments/{instrument_id}/book",
        response_model=BookView,
        responses=refusals(_404="INSTRUMENT_UNKNOWN", _422="REQUEST_INVALID"),
    )
    async def book(
        instrument_id: Identifier,
        _: Identity = anyone,
        depth: Annotated[int, Query(ge=1, le=1000, description="levels per side")] = 10,
    ) -> BookView:
        """Aggregated depth per price (no order, account or broker) at an engine sequence:
        the snapshot the stream's updates (`/instruments/{id}/stream`) are numbered after."""
        known(instrument_id)
        # Under the book's lock, so the depth and the sequence are of one committed state.
        async with matching.unit_of_work() as uow:
            snapshot = Snapshot.of(await uow.load(matching.books, instrument_id), depth)
        return BookView(
            instrument_id=instrument_id,
            sequence=snapshot.sequence,
            bids=[list(level) for level in snapshot.bids],
            asks=[list(level) for level in snapshot.asks],
            checksum=snapshot.checksum,
        )

    @api.get(
        "/instruments/{instrument_id}/bars",
        response_model=BarPage,
        responses=refusals(_404="INSTRUMENT_UNKNOWN", _422="REQUEST_INVALID"),
    )
    async def list_bars(
        instrument_id: Identifier,
        interval: Interval,
        _: Identity = anyone,
        limit: Limit = 100,
        after: AwareDatetime | None = None,
    ) -> BarPage:
        """OHLC bars of executed trades, oldest first: bars starting after `after` (the
        previous page's `next`). A trade counts at its recorded time (UTC; a 1d bar is a
        UTC day); open and close are its first and last trade in journal order."""
        known(instrument_id)
        cursor = None if after is None else math.floor(after.timestamp())
        async with pool.acquire() as conn:
            page, last = await bars(conn, instrument_id, interval.value, limit, cursor)
        following = None if last is None else datetime.fromtimestamp(last, UTC)
        return BarPage(items=[bar_view(bar, interval) for bar in page], next=following)

    @api.get(
        "/instruments/{instrument_id}/reference-price",
        response_model=ReferencePrice,
        responses=refusals(_404="INSTRUMENT_UNKNOWN", _422="REQUEST_INVALID"),
    )
    async def reference_price(instrument_id: Identifier, _: Identity = anyone) -> ReferencePrice:
        """The previous session's VWAP close: the VWAP of the last completed daily bar
        (before today, UTC), the reference a price band is set around."""
        known(instrument_id)
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        async with pool.acquire() as conn:
            bar = await last_daily_bar(conn, instrument_id, int(today.timestamp()))
        if bar is None:
            return ReferencePrice(instrument_id=instrument_id, session_start=None, price=None)
        start = datetime.fromtimestamp(bar.start_s, UTC)
        return ReferencePrice(instrument_id=instrument_id, session_start=start, price=vwap(bar.notional, bar.volume))

    async def identify(websocket: WebSocket, roles: list[str]) -> Identity:
        """The caller of a stream: its bearer token from the Authorization header or
        `?access_token=` (browsers cannot set headers on a WebSocket)."""
        token = websocket.query_params.get("access_token")
        header = f"Bearer {token}" if token else websocket.headers.get("authorization")
        identity: Identity = await authenticate(SecurityScopes(roles), websocket, header)
        return identity

    @api.websocket("/instruments/{instrument_id}/stream")
    async def stream(websocket: WebSocket, instrument_id: str) -> None:
        """A snapshot, then one update per engine input that changed the book
        (docs/market-data.md)."""
        try:
            await identify(websocket, ANY_ROLE)
            known(instrument_id)
            subscription, snapshot = await feed.market(instrument_id)
        except DomainError as error:
            await deny(websocket, error)
            return
        except StreamsFull:
            await deny(websocket, streams_full())
            return
        await relay(websocket, subscription, [snapshot.message()])

    @api.websocket("/orders/stream")
    async def order_stream(websocket: WebSocket) -> None:
        """Every change of the caller's own orders, as the engine journal records it."""
        try:
            identity = await identify(websocket, ["broker"])
            if not is_identifier(identity.broker_id):
                raise forbidden("a broker token must carry a broker_id claim")
            subscription, sequences = await feed.orders(identity.broker_id, matching.instruments)
        except DomainError as error:
            await deny(websocket, error)
            return
        except StreamsFull:
            await deny(websocket, streams_full())
            return
        first = {"type": "subscribed", "broker_id": identity.broker_id, "sequences": sequences}
        await relay(websocket, subscription, [first])

    @api.get("/trades", response_model=TradePage, responses=refusals(_422="REQUEST_INVALID or CURSOR_UNKNOWN"))
    async def list_trades(
        _: Identity = anyone,
        instrument_id: Identifier | None = None,
        limit: Limit = 100,
        after: TradeCursor | None = None,
    ) -> TradePage:
        """Executed trades by instrument, in journal order, with no account or broker of
        either side; `after` is the last trade id of the previous page."""
        async with pool.acquire() as conn:
            rows, cursor = await trades(conn, instrument_id, limit, after)
        items = [
            TradeView(
                trade_id=row["trade_id"],
                instrument_id=row["instrument_id"],
                price=row["price"],
                quantity=row["quantity"],
                currency=row["currency"],
                aggressor=Side(pb.Side.Name(row["aggressor"])),
                buy_order_id=row["buy_order_id"],
                sell_order_id=row["sell_order_id"],
                engine_sequence=row["engine_sequence"],
            )
            for row in rows
        ]
        return TradePage(items=items, next=cursor)

    return api


STREAMS_RETRY_AFTER = 15


def streams_full() -> DomainError:
    return DomainError(
        "MARKET_STREAMS_FULL",
        "this instance serves as many streams as it allows",
        http_status=503,
        retry_after=STREAMS_RETRY_AFTER,
    )


async def deny(websocket: WebSocket, error: DomainError) -> None:
    """Refuse the handshake with an HTTP answer and the Problem body."""
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    await websocket.send_denial_response(
        JSONResponse(status_code=error.http_status, content=error.body(), headers=headers)
    )


# Close codes: the client should take a new snapshot (resubscribe) after either.
LAGGING = 1013  # "try again later": the client fell too far behind
ENDED = 1011  # the instance's feed of the instrument stopped


async def relay(websocket: WebSocket, subscription: Subscription, first: Iterable[dict[str, Any]]) -> None:
    """Send the stream until the client leaves or the subscription ends."""
    await websocket.accept()
    watching = asyncio.create_task(_until_closed(websocket, subscription))
    try:
        for message in first:
            await websocket.send_text(json.dumps(message, separators=(",", ":")))
        while (batch := await subscription.next()) is not None:
            for text in batch:
                await websocket.send_text(text)
        if not watching.done():
            if subscription.lagging:
                await websocket.close(LAGGING, "STREAM_LAGGING: take a new snapshot")
            else:
                await websocket.close(ENDED, "STREAM_ENDED: subscribe again")
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass  # the client went away while we were sending
    finally:
        subscription.close()
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching


async def _until_closed(websocket: WebSocket, subscription: Subscription) -> None:
    """Read (and ignore) what the client sends until it disconnects; then end its
    subscription, which ends the relay."""
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
    finally:
        subscription.close()
