"""Settlement API: the state of each trade's settlement, adjustments and cash."""

from __future__ import annotations

from fastapi import APIRouter
from google.protobuf.json_format import MessageToDict
from pydantic import BaseModel

from services.common.errors import DomainError
from services.settlement.service import Settlement


class SettlementView(BaseModel):
    trade_id: str
    phase: str
    failure: str
    instrument_id: str
    quantity: int
    price: int
    currency: str
    seller_account_id: str
    buyer_account_id: str
    corresponding_adjustments: list[dict[str, object]]


def router(settlement: Settlement) -> APIRouter:
    api = APIRouter(tags=["settlement"])

    @api.get("/settlements/{trade_id}", response_model=SettlementView)
    async def get_settlement(trade_id: str) -> SettlementView:
        s = settlement.book.trades.get(trade_id)
        if s is None:
            raise DomainError("SETTLEMENT_UNKNOWN", f"no settlement for trade {trade_id!r}", http_status=404)
        t = s.started
        return SettlementView(
            trade_id=trade_id,
            phase=s.phase,
            failure=s.failure,
            instrument_id=t.instrument_id,
            quantity=t.quantity,
            price=t.price,
            currency=t.currency,
            seller_account_id=t.seller_account_id,
            buyer_account_id=t.buyer_account_id,
            corresponding_adjustments=[MessageToDict(a, preserving_proto_field_name=True) for a in s.adjustments],
        )

    @api.get("/adjustments")
    async def adjustments(party: str | None = None) -> list[dict[str, object]]:
        return [
            MessageToDict(a, preserving_proto_field_name=True)
            for s in settlement.book.trades.values()
            for a in s.adjustments
            if party in (None, a.party)
        ]

    @api.get("/cash/{account_id}")
    async def cash(account_id: str) -> dict[str, int]:
        balances = settlement.book.cash.items()
        return {currency: amount for (account, currency), amount in balances if account == account_id}

    return api
