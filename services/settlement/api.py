"""Settlement API: each trade's settlement, corresponding adjustments and cash, all read
from projections (a request costs O(page), never O(history))."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.common.errors import NotFound
from services.common.inputs import Identifier, Limit, Party
from services.settlement.service import Settlement

# An opaque cursor from a previous page's `next`.
Cursor = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_-]+$")]


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


class AdjustmentsPage(BaseModel):
    items: list[dict[str, object]]
    next: str | None


def router(settlement: Settlement) -> APIRouter:
    api = APIRouter(tags=["settlement"])

    @api.get("/settlements/{trade_id}", response_model=SettlementView)
    async def get_settlement(trade_id: Identifier) -> SettlementView:
        view = await settlement.view(trade_id)
        if view is None:
            raise NotFound("SETTLEMENT_UNKNOWN", f"no settlement for trade {trade_id!r}")
        return SettlementView(**view)

    @api.get("/adjustments", response_model=AdjustmentsPage)
    async def adjustments(
        party: Party | None = None, limit: Limit = 100, after: Cursor | None = None
    ) -> AdjustmentsPage:
        """Corresponding adjustments in (trade, adjustment id) order; pass `next` as `after`."""
        return AdjustmentsPage(**await settlement.adjustments(party, limit, after))

    @api.get("/cash/{account_id}")
    async def cash(account_id: Identifier) -> dict[str, int]:
        """Balances of the account per currency, in minor units."""
        return await settlement.cash(account_id)

    return api
