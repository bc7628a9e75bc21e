"""Settlement API: each trade's settlement, corresponding adjustments and cash, all read
from projections (a request costs O(page), never O(history)).

Authority (docs/trust.md): a settlement is seen by the operator, a broker of either side
and a regulator of either account's jurisdiction; adjustments by the operator and the
regulator, registry operator or national registry of the party; cash by the operator and
a broker with a mandate for the account. Anyone else gets the answer an unknown object gets.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Security
from pydantic import BaseModel, Field

from services.common.auth import Identity, forbidden
from services.common.errors import NotFound
from services.common.inputs import Identifier, Limit, Party
from services.common.problems import refusals
from services.settlement.service import Settlement

# An opaque cursor from a previous page's `next`.
Cursor = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_-]+$")]

# Roles that supervise a party's adjustments (each for its own jurisdictions).
PARTY_ROLES = ("regulator", "registry-operator", "national-registry")


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
    authenticate = settlement.auth.authenticate

    @api.get(
        "/settlements/{trade_id}",
        response_model=SettlementView,
        responses=refusals(_404="SETTLEMENT_UNKNOWN: no settlement the caller may see", _422="REQUEST_INVALID"),
    )
    async def get_settlement(
        trade_id: Identifier,
        reader: Identity = Security(authenticate, scopes=["operator", "broker", "regulator"]),
    ) -> SettlementView:
        view = await settlement.view(trade_id, reader)
        if view is None:  # unknown, or not the caller's: one answer
            raise NotFound("SETTLEMENT_UNKNOWN", f"no settlement for trade {trade_id!r}")
        return SettlementView(**view)

    @api.get(
        "/adjustments",
        response_model=AdjustmentsPage,
        responses=refusals(_422="REQUEST_INVALID (a malformed party or cursor)"),
    )
    async def adjustments(
        reader: Identity = Security(authenticate, scopes=["operator", *PARTY_ROLES]),
        party: Party | None = None,
        limit: Limit = 100,
        after: Cursor | None = None,
    ) -> AdjustmentsPage:
        """Corresponding adjustments in (trade, adjustment id) order; pass `next` as `after`.
        The operator may omit `party`; every other caller names a party it supervises."""
        if not reader.operator:
            supervised = set().union(*(reader.jurisdictions(role) for role in PARTY_ROLES))
            if party is None or party not in supervised:
                raise forbidden("name a party you supervise: ?party=<JUR>")
        return AdjustmentsPage(**await settlement.adjustments(party, limit, after))

    @api.get(
        "/cash/{account_id}",
        responses=refusals(_404="ACCOUNT_UNKNOWN: no account the caller may see", _422="REQUEST_INVALID"),
    )
    async def cash(
        account_id: Identifier,
        reader: Identity = Security(authenticate, scopes=["operator", "broker"]),
    ) -> dict[str, int]:
        """Balances of the account per currency, in minor units."""
        balances = await settlement.cash(account_id, reader)
        if balances is None:
            raise NotFound("ACCOUNT_UNKNOWN", f"no account {account_id!r}")
        return balances

    return api
