"""Broker API: place, cancel and follow orders; see trades and books."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response
from pydantic import BaseModel, Field

from services.common.errors import DomainError
from services.matching.service import Matching
from tonne.v1 import matching_pb2 as pb

# Development tokens; production sets TONNE_BROKER_TOKENS="broker:token,...".
DEV_TOKENS = "broker-a:dev-token-a,broker-b:dev-token-b"


def broker_tokens() -> dict[str, str]:
    pairs = os.environ.get("TONNE_BROKER_TOKENS", DEV_TOKENS).split(",")
    return {token: broker for broker, token in (pair.split(":", 1) for pair in pairs if pair)}


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderRequest(BaseModel):
    instrument_id: str
    side: Side
    price: int = Field(gt=0, description="minor units of the instrument's currency")
    quantity: int = Field(gt=0, description="tonnes")
    account_id: str = Field(min_length=1)
    client_order_id: str = Field(min_length=1, max_length=64)


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


class TradeView(BaseModel):
    trade_id: str
    instrument_id: str
    price: int
    quantity: int
    currency: str
    buy_order_id: str
    sell_order_id: str
    buyer_account_id: str
    seller_account_id: str


def router(matching: Matching) -> APIRouter:
    api = APIRouter(tags=["matching"])
    tokens = broker_tokens()

    def broker(authorization: Annotated[str, Header()] = "") -> str:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or token not in tokens:
            raise DomainError("BROKER_UNAUTHENTICATED", "a valid bearer token is required", http_status=401)
        return tokens[token]

    async def view(order_id: str, broker_id: str) -> OrderView:
        row = await matching.intake_order(order_id)
        if row is None or row["broker_id"] != broker_id:
            raise DomainError("ORDER_UNKNOWN", f"no order {order_id!r}", http_status=404)
        status, filled = row["status"], 0
        state = matching.orders.get(order_id)
        if state is not None:
            status, filled = state.status, state.filled
        elif status == "submitted":
            status = "pending"  # sequenced, not yet through the engine
        return OrderView(
            order_id=order_id,
            client_order_id=row["client_order_id"],
            instrument_id=row["instrument_id"],
            side=Side(pb.Side.Name(row["side"])),
            price=row["price"],
            quantity=row["quantity"],
            account_id=row["account_id"],
            status=status,
            filled=filled,
            reject_code=row["reject_code"],
            reject_reason=row["reject_reason"],
        )

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

    @api.get("/orders/{order_id}", response_model=OrderView)
    async def get_order(order_id: str, broker_id: str = Depends(broker)) -> OrderView:
        return await view(order_id, broker_id)

    @api.delete("/orders/{order_id}", status_code=202)
    async def cancel(order_id: str, broker_id: str = Depends(broker)) -> dict[str, str]:
        await matching.cancel(broker_id, order_id)
        return {"order_id": order_id, "status": "cancelling"}

    @api.get("/instruments")
    async def instruments() -> list[dict[str, object]]:
        return [vars(i) for i in matching.instruments.values()]

    @api.get("/instruments/{instrument_id}/book")
    async def book(instrument_id: str) -> dict[str, object]:
        if instrument_id not in matching.instruments:
            raise DomainError("INSTRUMENT_UNKNOWN", f"no instrument {instrument_id!r}", http_status=404)
        return {"instrument_id": instrument_id, **matching.engine.book(instrument_id).depth()}

    @api.get("/trades", response_model=list[TradeView])
    async def trades(instrument_id: str | None = None) -> list[TradeView]:
        return [
            TradeView(
                trade_id=t.trade_id,
                instrument_id=t.instrument_id,
                price=t.price,
                quantity=t.quantity,
                currency=t.currency,
                buy_order_id=t.buy_order_id,
                sell_order_id=t.sell_order_id,
                buyer_account_id=t.buyer_account_id,
                seller_account_id=t.seller_account_id,
            )
            for t in matching.trades
            if instrument_id in (None, t.instrument_id)
        ]

    return api
