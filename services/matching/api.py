"""Broker API: place, cancel and follow orders for mandated accounts; market data.

Authority (docs/trust.md): order endpoints need the role `broker` and its `broker_id`
claim, and see only the caller's own orders; market data needs any authenticated
identity. Another broker's order answers exactly like no order (404 ORDER_UNKNOWN).
"""

from __future__ import annotations

from datetime import UTC
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Response, Security
from pydantic import AwareDatetime, BaseModel, Field

from services.common.auth import Identity, forbidden
from services.common.errors import DomainError
from services.common.inputs import Identifier, Limit, Positive64
from services.common.problems import refusals
from services.matching.domain.engine import is_identifier
from services.matching.projections import OrderRow, broker_mandates, broker_order, broker_orders, trades
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
    client_order_id: Identifier
    time_in_force: TimeInForce | None = Field(None, description="GTC for a limit order, IOC for a market order")
    post_only: bool = Field(False, description="never takes liquidity: cancelled instead of trading")
    expire_at: AwareDatetime | None = Field(None, description="GTD only: when the order expires")
    self_trade_prevention: SelfTradePrevention = SelfTradePrevention.CANCEL_NEWEST
    stp_scope: StpScope = StpScope.ACCOUNT

    def command(self) -> pb.SubmitOrder:
        if (self.order_type is OrderType.LIMIT) == (self.price is None):
            raise DomainError("ORDER_PRICE_INVALID", "a LIMIT order needs a price; a MARKET order has none")
        order = pb.SubmitOrder(
            instrument_id=self.instrument_id,
            account_id=self.account_id,
            side=pb.Side.Value(self.side.value),
            price=self.price or 0,
            quantity=self.quantity,
            client_order_id=self.client_order_id,
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
    sequence: int  # inputs the instrument's engine has taken
    bids: list[Level]  # [price, quantity], best first
    asks: list[Level]


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
            200: {"model": OrderView, "description": "this client order id was placed before: that order"},
            **refusals(
                _403="AUTH_FORBIDDEN, or BROKER_NOT_MANDATED: the caller holds no mandate for the account "
                "(the same answer whether or not the account exists)",
                _404="INSTRUMENT_UNKNOWN",
                _409="CLIENT_ORDER_ID_REUSED: this client order id names another order of the caller's",
                _413="REQUEST_TOO_LARGE",
                _422="REQUEST_INVALID, or the instrument refuses the order (ORDER_*)",
            ),
        },
    )
    async def place(body: OrderRequest, response: Response, broker_id: str = broker_dependency) -> OrderView:
        """Place an order for an account the caller holds a mandate for. It is covered
        before it may reach the book: a SELL by its units reserved in the registry, a BUY
        by its cash reserved in settlement (limit price x quantity; a MARKET buy at the
        band's maximum). What is left of a cover goes back when the order ends."""
        order_id, placed = await matching.place(broker_id, body.command())
        if not placed:
            response.status_code = 200  # the same client order id again: the first order
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

    @api.get(
        "/instruments/{instrument_id}/book",
        response_model=BookView,
        responses=refusals(_404="INSTRUMENT_UNKNOWN", _422="REQUEST_INVALID"),
    )
    async def book(instrument_id: Identifier, _: Identity = anyone) -> BookView:
        """Aggregated depth per price: no order, account or broker."""
        if instrument_id not in matching.instruments:
            raise DomainError("INSTRUMENT_UNKNOWN", f"no instrument {instrument_id!r}", http_status=404)
        # Under the book's lock, so the depth and the sequence are of one committed state.
        async with matching.unit_of_work() as uow:
            loaded = await uow.load(matching.books, instrument_id)
            depth = loaded.orders.depth()
            sequence = loaded.sequence
        return BookView(instrument_id=instrument_id, sequence=sequence, bids=depth["bids"], asks=depth["asks"])

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
