"""Broker API: place, cancel and follow orders for mandated accounts; market data.

Authority (docs/trust.md): order endpoints need the role `broker` and its `broker_id`
claim, and see only the caller's own orders; market data needs any authenticated
identity. Another broker's order answers exactly like no order (404 ORDER_UNKNOWN).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Response, Security
from pydantic import BaseModel, Field

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


class OrderRequest(BaseModel):
    instrument_id: Identifier
    side: Side
    price: Positive64 = Field(description="minor units of the instrument's currency")
    quantity: Positive64 = Field(description="tonnes")
    account_id: Identifier
    client_order_id: Identifier


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
        """Place an order for an account the caller holds a mandate for; a SELL is covered
        (its units are reserved) before it may rest."""
        order = pb.SubmitOrder(
            instrument_id=body.instrument_id,
            account_id=body.account_id,
            side=pb.Side.Value(body.side.value),
            price=body.price,
            quantity=body.quantity,
            client_order_id=body.client_order_id,
        )
        order_id, placed = await matching.place(broker_id, order)
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
