"""Broker API: place, cancel and follow orders; see trades and books."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response
from pydantic import BaseModel, Field

from services.common.errors import DomainError
from services.common.inputs import Identifier, Limit, Positive64
from services.matching.projections import OrderRow, broker_order, broker_orders, trades
from services.matching.service import Matching
from tonne.v1 import matching_pb2 as pb

# Development tokens; production sets TONNE_BROKER_TOKENS="broker:token,...".
DEV_TOKENS = "broker-a:dev-token-a,broker-b:dev-token-b"

# A trade id is "<instrument_id>:<engine sequence>:<n>", so it may be longer than an Identifier.
TradeCursor = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")]


def broker_tokens() -> dict[str, str]:
    pairs = os.environ.get("TONNE_BROKER_TOKENS", DEV_TOKENS).split(",")
    return {token: broker for broker, token in (pair.split(":", 1) for pair in pairs if pair)}


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


class TradePage(BaseModel):
    items: list[TradeView]
    next: str | None


class BookView(BaseModel):
    instrument_id: str
    sequence: int  # inputs the instrument's engine has taken
    bids: list[tuple[int, int]]  # (price, quantity), best first
    asks: list[tuple[int, int]]


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
    tokens = broker_tokens()
    pool = matching.pool

    def broker(authorization: Annotated[str, Header()] = "") -> str:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or token not in tokens:
            raise DomainError("BROKER_UNAUTHENTICATED", "a valid bearer token is required", http_status=401)
        return tokens[token]

    async def view(order_id: str, broker_id: str) -> OrderView:
        async with pool.acquire() as conn:
            row = await broker_order(conn, broker_id, order_id)
        if row is None:  # another broker's order answers like no order at all
            raise DomainError("ORDER_UNKNOWN", f"no order {order_id!r}", http_status=404)
        return order_view(row)

    @api.post("/orders", status_code=202, response_model=OrderView)
    async def place(body: OrderRequest, response: Response, broker_id: str = Depends(broker)) -> OrderView:
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

    @api.get("/orders", response_model=OrderPage)
    async def list_orders(
        limit: Limit = 100, after: Identifier | None = None, broker_id: str = Depends(broker)
    ) -> OrderPage:
        """The caller's own orders, oldest first; `after` is the last order id of the previous page."""
        async with pool.acquire() as conn:
            rows, cursor = await broker_orders(conn, broker_id, limit, after)
        return OrderPage(items=[order_view(row) for row in rows], next=cursor)

    @api.get("/orders/{order_id}", response_model=OrderView)
    async def get_order(order_id: Identifier, broker_id: str = Depends(broker)) -> OrderView:
        return await view(order_id, broker_id)

    @api.delete("/orders/{order_id}", status_code=202)
    async def cancel(order_id: Identifier, broker_id: str = Depends(broker)) -> dict[str, str]:
        await matching.cancel(broker_id, order_id)
        return {"order_id": order_id, "status": "cancelling"}

    @api.get("/instruments")
    async def instruments() -> list[dict[str, object]]:
        return [vars(i) for i in matching.instruments.values()]

    @api.get("/instruments/{instrument_id}/book", response_model=BookView)
    async def book(instrument_id: Identifier) -> BookView:
        if instrument_id not in matching.instruments:
            raise DomainError("INSTRUMENT_UNKNOWN", f"no instrument {instrument_id!r}", http_status=404)
        # Under the book's lock, so the depth and the sequence are of one committed state.
        async with matching.unit_of_work() as uow:
            loaded = await uow.load(matching.books, instrument_id)
            depth = loaded.orders.depth()
            sequence = loaded.sequence
        return BookView(instrument_id=instrument_id, sequence=sequence, bids=depth["bids"], asks=depth["asks"])

    @api.get("/trades", response_model=TradePage)
    async def list_trades(
        instrument_id: Identifier | None = None, limit: Limit = 100, after: TradeCursor | None = None
    ) -> TradePage:
        """Executed trades by instrument, in journal order; `after` is the last trade id of the previous page."""
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
