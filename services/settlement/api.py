"""Settlement API: each trade's settlement, corresponding adjustments and cash, all read
from projections (a request costs O(page), never O(history)).

Authority (docs/trust.md): a settlement is seen by the operator, a broker of either side
and a regulator of either account's jurisdiction; adjustments by the operator and the
regulator, registry operator or national registry of the party; cash by the operator and
a broker with a mandate for the account. Anyone else gets the answer an unknown object gets.
Deposits and withdrawals are recorded by the operator only (it confirms the bank's side).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Response, Security
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.common.auth import Identity, forbidden
from services.common.errors import NotFound
from services.common.inputs import INT64_MAX, Currency, Identifier, Limit, Party, Positive64
from services.common.problems import refusals
from services.settlement import aef_export
from services.settlement.service import Movement, Settlement

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

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


MOVEMENTS: tuple[tuple[Literal["deposit", "withdrawal"], str], ...] = (
    ("deposit", "/cash/deposits"),
    ("withdrawal", "/cash/withdrawals"),
)


class LedgerYear(BaseModel):
    vintage: int
    first_transferring: int
    acquiring: int
    net: int


class LedgerView(BaseModel):
    party: str
    years: list[LedgerYear]


class Balance(BaseModel):
    available: int
    reserved: int = Field(description="set aside for the account's resting buy orders")
    held: int = Field(description="held for trades being settled")


class Leg(BaseModel):
    posting_id: str
    bucket: str
    amount: int
    trade_id: str


class StatementPage(BaseModel):
    items: list[Leg]
    next: int | None


class MovementRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # money: a misspelt field is an error, not a default

    movement_id: Identifier = Field(description="the operator's reference (bank confirmation); unique per kind")
    account_id: Identifier
    currency: Currency
    amount: Positive64 = Field(description="minor units")


class MovementDone(BaseModel):
    movement_id: str
    account_id: str
    currency: str
    amount: int
    available: int
    reserved: int
    held: int


def _mover(
    settlement: Settlement, kind: Literal["deposit", "withdrawal"]
) -> Callable[..., Awaitable[MovementDone | JSONResponse]]:
    async def move(
        body: MovementRequest, operator: Identity = Security(settlement.auth.authenticate, scopes=["operator"])
    ) -> MovementDone | JSONResponse:
        movement = Movement(kind, body.movement_id, body.account_id, body.currency, body.amount)
        done, recorded = await settlement.move_cash(movement, operator)
        if not recorded:  # the same request again: the answer, not a second movement
            return JSONResponse(status_code=200, content=MovementDone(**done).model_dump())
        return MovementDone(**done)

    return move


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
        "/aef/{party}/{year}",
        responses={
            200: {
                "content": {"text/csv": {}, XLSX: {}},
                "description": "the report, as JSON, CSV (format=csv) or an XLSX workbook of one sheet per table "
                "(format=xlsx)",
            },
            **refusals(_422="REQUEST_INVALID (a malformed party or year)"),
        },
    )
    async def aef_report(
        party: Party,
        year: Annotated[int, Field(ge=2021, le=2100)],
        reader: Identity = Security(authenticate, scopes=["operator", *PARTY_ROLES]),
        format: Literal["json", "csv", "xlsx"] = "json",
    ) -> Response:
        """The party's Article 6.2 report for the year in the agreed electronic format:
        submission, authorizations, actions, holdings at year end, authorized entities,
        and the findings of the consistency checks (`consistent` is false when there are
        any). For the operator and the party's supervisors."""
        supervised = set().union(*(reader.jurisdictions(role) for role in PARTY_ROLES))
        if not reader.operator and party not in supervised:
            raise forbidden("only the operator and the party's supervisors read its reports")
        report = await settlement.aef_report(party, year)
        if format == "json":
            return JSONResponse(report)
        if format == "csv":
            return Response(aef_export.csv_text(report), media_type="text/csv")
        name = f"AEF-{party}-{year}.xlsx"
        headers = {"content-disposition": f'attachment; filename="{name}"'}
        return Response(aef_export.xlsx(report), media_type=XLSX, headers=headers)

    @api.get(
        "/adjustments/ledger",
        response_model=LedgerView,
        responses=refusals(_422="REQUEST_INVALID (a malformed party)"),
    )
    async def ledger(
        party: Party, reader: Identity = Security(authenticate, scopes=["operator", *PARTY_ROLES])
    ) -> LedgerView:
        """A party's corresponding adjustments per vintage year (Article 6.2): units added to
        its emissions balance as first-transferring party, subtracted as acquiring party,
        and the net. For the operator and the party's supervisors."""
        supervised = set().union(*(reader.jurisdictions(role) for role in PARTY_ROLES))
        if not reader.operator and party not in supervised:
            raise forbidden("only the operator and the party's supervisors read its adjustments")
        return LedgerView(party=party, years=[LedgerYear(**year) for year in await settlement.ledger(party)])

    @api.get(
        "/cash/{account_id}",
        response_model=dict[str, Balance],
        responses=refusals(_404="ACCOUNT_UNKNOWN: no account the caller may see", _422="REQUEST_INVALID"),
    )
    async def cash(
        account_id: Identifier,
        reader: Identity = Security(authenticate, scopes=["operator", "broker"]),
    ) -> dict[str, Balance]:
        """The account's cash per currency, in minor units: `available`, `reserved` for its
        resting buy orders (a buy is covered before it rests) and `held` for trades being
        settled."""
        balances = await settlement.cash(account_id, reader)
        if balances is None:
            raise NotFound("ACCOUNT_UNKNOWN", f"no account {account_id!r}")
        return {currency: Balance(**balance) for currency, balance in balances.items()}

    @api.get(
        "/cash/{account_id}/statement",
        response_model=StatementPage,
        responses=refusals(_404="ACCOUNT_UNKNOWN: no account the caller may see", _422="REQUEST_INVALID"),
    )
    async def statement(
        account_id: Identifier,
        currency: Currency,
        reader: Identity = Security(authenticate, scopes=["operator", "broker"]),
        limit: Limit = 100,
        after: Annotated[int, Field(ge=0, le=INT64_MAX)] = 0,
    ) -> StatementPage:
        """The account's ledger legs in one currency, oldest first; pass `next` as `after`.
        Every posting's legs sum to zero across accounts (deposits against EXTERNAL)."""
        page = await settlement.statement(account_id, currency, reader, limit, after)
        if page is None:
            raise NotFound("ACCOUNT_UNKNOWN", f"no account {account_id!r}")
        return StatementPage(**page)

    for kind, path in MOVEMENTS:
        api.add_api_route(
            path,
            _mover(settlement, kind),
            methods=["POST"],
            status_code=201,
            response_model=MovementDone,
            responses={
                200: {"model": MovementDone, "description": "already recorded with these terms: nothing changed"},
                **refusals(
                    _404="ACCOUNT_UNKNOWN: the registry has no such account",
                    _409="CASH_MOVEMENT_ID_REUSED: the reference was recorded with other terms",
                    _422="REQUEST_INVALID, CASH_INSUFFICIENT (a withdrawal beyond what is available), "
                    "CASH_BALANCE_OVERFLOW",
                ),
            },
            summary=f"Record a {kind} the operator confirms",
        )

    return api
