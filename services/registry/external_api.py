"""External transfers through the registry's HTTP API (domain/external.py): the holder's
keeper proposes, the acquiring registry answers on its own Kafka channel, and anyone who
may read the account follows the proposal here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Path, Query, Security
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.common.auth import Identity
from services.common.inputs import Identifier, Limit, Party
from services.common.problems import refusals
from services.registry.api import (
    SCREENING_RESPONSE,
    ProposalView,
    UnitsWanted,
    command,
    governed,
    keyset,
    readable,
    screened,
)
from services.registry.service import Registry
from tonne.v1 import registry_pb2 as pb

_COLUMNS = "transfer_id, account_id, to_registry, to_account, quantity, expires_at, state, code, reason"


class ExternalTransferRequest(UnitsWanted):
    transfer_id: Identifier
    to_registry: Party
    to_account: Identifier


class ExternalTransferView(BaseModel):
    transfer_id: str
    account_id: str
    to_registry: str
    to_account: str
    quantity: int
    expires_at: datetime  # unanswered by then, the units return
    state: Literal["proposed", "completed", "returned"]
    code: str  # why returned: EXTERNAL_TRANSFER_REFUSED or EXTERNAL_TRANSFER_EXPIRED
    reason: str


class ExternalTransferPage(BaseModel):
    items: list[ExternalTransferView]
    next: str | None


PROPOSE_RESPONSES = (
    refusals(
        _404="ACCOUNT_UNKNOWN: no account the caller keeps (unknown, or outside its tenancy)",
        _422=(
            "REQUEST_INVALID, EXTERNAL_REGISTRY_UNKNOWN, TRANSFER_INVALID, SEQUENCE_DUPLICATE_ID, "
            "HOLDINGS_INSUFFICIENT, ACCOUNT_FROZEN, ACCOUNT_CLOSED, ACCOUNT_TERMINAL, PROJECT_FROZEN, "
            "TRANSFER_LIMIT_EXCEEDED or SCREENING_REJECTED"
        ),
    )
    | SCREENING_RESPONSE
)


def router(registry: Registry) -> APIRouter:
    api = APIRouter(tags=["registry external transfers"])
    reader = Security(registry.auth.authenticate, scopes=["operator", "registry-operator", "regulator", "broker"])
    keeper = Security(registry.auth.authenticate, scopes=["operator", "registry-operator"])

    async def view(conn: asyncpg.Connection, transfer_id: str) -> ExternalTransferView:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM external_transfers WHERE transfer_id = $1", transfer_id)
        return ExternalTransferView(**dict(row))

    @api.post(
        "/accounts/{account_id}/external-transfers",
        status_code=201,
        response_model=ExternalTransferView,
        responses=PROPOSE_RESPONSES,
    )
    async def propose(
        account_id: Annotated[Identifier, Path()], body: ExternalTransferRequest, identity: Identity = keeper
    ) -> ExternalTransferView | JSONResponse:
        """Proposes held units to an account in another party's registry: they are reserved
        now and, once the transaction log approved (201; 202 with the proposal while it has
        not answered, 422 SCREENING_REJECTED if it refused), proposed to that registry: exported
        when it accepts on its channel, held again if it refuses or does not answer before
        `expires_at`."""
        await governed(registry, identity, account_id)
        proposal = pb.ProposeExternalTransfer(
            transfer_id=body.transfer_id,
            account_id=account_id,
            to_registry=body.to_registry,
            to_account=body.to_account,
            selector=body.selector(),
            quantity=body.quantity,
        )
        screened_proposal = await screened(registry, await command(registry, proposal, identity))
        if isinstance(screened_proposal, ProposalView):
            return JSONResponse(screened_proposal.model_dump(mode="json"), status_code=202)
        async with registry.pool.acquire() as conn:
            return await view(conn, body.transfer_id)

    @api.get(
        "/accounts/{account_id}/external-transfers",
        response_model=ExternalTransferPage,
        responses=refusals(_404="ACCOUNT_UNKNOWN", _422="REQUEST_INVALID"),
    )
    async def external_transfers(
        account_id: Annotated[Identifier, Path()],
        identity: Identity = reader,
        limit: Annotated[Limit, Query()] = 100,
        after: Annotated[Identifier | None, Query()] = None,
    ) -> ExternalTransferPage:
        """A page of the account's external transfers, by transfer id."""
        async with registry.pool.acquire() as conn:
            await readable(conn, identity, account_id)
            rows, more = await keyset(
                conn,
                f"SELECT {_COLUMNS} FROM external_transfers WHERE account_id = $1 AND transfer_id > $2 "
                "ORDER BY transfer_id LIMIT $3",
                account_id,
                after,
                limit,
            )
        items = [ExternalTransferView(**dict(r)) for r in rows]
        return ExternalTransferPage(items=items, next=items[-1].transfer_id if more else None)

    return api
