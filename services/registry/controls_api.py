"""HTTP API of the registry's Union Registry controls (domain/controls.py).

Freezes: the operator, the jurisdiction's registry operator or its regulator, always
with a reason. Trusted lists, transfer limits and transfers the holder asks for: the
operator or the account's registry operator (acting for the holder's representatives;
the proposer and the approver of a trusted account must be different callers). Reads:
whoever may read the account. An account outside the caller's tenancy is answered like
one that does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Path, Query, Security
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.common.auth import Identity, forbidden
from services.common.errors import DomainError
from services.common.inputs import INT64_MAX, Identifier, Limit, Party, Text
from services.common.problems import refusals
from services.registry.api import (
    SCREENING_RESPONSE,
    AccountView,
    ProposalView,
    UnitsWanted,
    account_view,
    command,
    governed,
    keyset,
    operates,
    readable,
    screened,
)
from services.registry.service import Registry
from tonne.v1 import registry_pb2 as pb


class Reason(BaseModel):
    reason: Text


class BlockFreeze(Reason):
    freeze_id: Identifier
    namespace: Identifier
    start: Annotated[int, Field(ge=1, le=INT64_MAX)]
    end: Annotated[int, Field(ge=1, le=INT64_MAX)]


class FrozenBlocks(BaseModel):
    freeze_id: str
    account_id: str
    state: Literal["frozen", "unfrozen"]
    blocks: list[tuple[str, int, int]]  # (namespace, start, end)


class ProjectFreeze(BaseModel):
    host_party: Party
    reason: Text


class ProjectView(BaseModel):
    project_id: str
    host_party: str
    frozen: bool
    reason: str


class TrustRequest(BaseModel):
    account_id: Identifier


class TrustedView(BaseModel):
    account_id: str
    trusted_account_id: str
    proposed_by: str
    approved_by: str
    effective_at: datetime | None  # None: proposed, waiting for a second approver


class TrustedPage(BaseModel):
    items: list[TrustedView]
    next: str | None


class TransferLimit(BaseModel):
    per_transfer: Annotated[int, Field(ge=0, le=INT64_MAX)]  # 0: no limit of the account's own


class TransferRequest(UnitsWanted):
    transfer_id: Identifier
    to_account_id: Identifier


class TransferView(BaseModel):
    transfer_id: str
    account_id: str
    to_account_id: str
    quantity: int
    state: Literal["completed", "scheduled", "cancelled"]
    execute_at: datetime | None  # when a scheduled transfer completes


class TransferPage(BaseModel):
    items: list[TransferView]
    next: str | None


GOVERN_RESPONSES = refusals(
    _404="ACCOUNT_UNKNOWN: no account the caller governs (unknown, or outside its tenancy)",
    _422="REQUEST_INVALID or REASON_REQUIRED",
)
BLOCK_RESPONSES = refusals(
    _404="ACCOUNT_UNKNOWN or FREEZE_UNKNOWN",
    _422="REQUEST_INVALID, REASON_REQUIRED, SEQUENCE_DUPLICATE_ID, SERIAL_RANGE_INVALID or UNITS_NOT_HELD",
)
CLOSE_RESPONSES = refusals(
    _404="ACCOUNT_UNKNOWN: no account the caller governs (unknown, or outside its tenancy)",
    _422="REQUEST_INVALID, REASON_REQUIRED, ACCOUNT_CLOSED or ACCOUNT_NOT_EMPTY",
)
TRUST_RESPONSES = refusals(
    _404="ACCOUNT_UNKNOWN or TRUSTED_ACCOUNT_UNKNOWN",
    _409="TRUSTED_ACCOUNT_EXISTS",
    _422="REQUEST_INVALID, TRUSTED_ACCOUNT_INVALID or FOUR_EYES_REQUIRED",
)
TRANSFER_RESPONSES = refusals(
    _404="ACCOUNT_UNKNOWN or TRANSFER_UNKNOWN",
    _422=(
        "REQUEST_INVALID, SEQUENCE_DUPLICATE_ID, ACCOUNT_FROZEN, PROJECT_FROZEN, TRANSFER_INVALID, "
        "TRANSFER_LIMIT_EXCEEDED, HOLDINGS_INSUFFICIENT, REASON_REQUIRED, SCREENING_REJECTED or ACCOUNT_CLOSED"
    ),
)
PROJECT_RESPONSES = refusals(_422="REQUEST_INVALID, PROJECT_INVALID, PROJECT_PARTY_MISMATCH or REASON_REQUIRED")


def trusted_view(row: asyncpg.Record) -> TrustedView:
    return TrustedView(**dict(row))


def scheduled_view(row: asyncpg.Record) -> TransferView:
    return TransferView(**dict(row), state="scheduled")


def router(registry: Registry) -> APIRouter:
    api = APIRouter(tags=["registry controls"])
    reader = Security(registry.auth.authenticate, scopes=["operator", "registry-operator", "regulator", "broker"])
    keeper = Security(registry.auth.authenticate, scopes=["operator", "registry-operator"])
    freezer = Security(registry.auth.authenticate, scopes=["operator", "registry-operator", "regulator"])

    # --- freezes ---

    @api.post("/accounts/{account_id}/freeze", response_model=AccountView, responses=GOVERN_RESPONSES)
    async def freeze_account(
        account_id: Annotated[Identifier, Path()], body: Reason, identity: Identity = freezer
    ) -> AccountView:
        """Freezes the account: no units leave it (orders' reservations, deliveries and
        transfers are refused) until it is unfrozen. Freezing a frozen account is a no-op."""
        await governed(registry, identity, account_id, regulators=True)
        await command(registry, pb.FreezeAccount(account_id=account_id, reason=body.reason), identity)
        return await account_view(registry, identity, account_id)

    @api.post("/accounts/{account_id}/unfreeze", response_model=AccountView, responses=GOVERN_RESPONSES)
    async def unfreeze_account(
        account_id: Annotated[Identifier, Path()], body: Reason, identity: Identity = freezer
    ) -> AccountView:
        """Lifts the account's freeze."""
        await governed(registry, identity, account_id, regulators=True)
        await command(registry, pb.UnfreezeAccount(account_id=account_id, reason=body.reason), identity)
        return await account_view(registry, identity, account_id)

    @api.post("/accounts/{account_id}/close", response_model=AccountView, responses=CLOSE_RESPONSES)
    async def close_account(
        account_id: Annotated[Identifier, Path()], body: Reason, identity: Identity = keeper
    ) -> AccountView:
        """Closes an account that holds nothing (no held or reserved units, no open
        reservation or scheduled transfer): no units enter or leave it afterwards. The
        operator, or the registry operator of its jurisdiction."""
        await governed(registry, identity, account_id)
        await command(registry, pb.CloseAccount(account_id=account_id, reason=body.reason), identity)
        return await account_view(registry, identity, account_id)

    @api.post(
        "/accounts/{account_id}/block-freezes", status_code=201, response_model=FrozenBlocks, responses=BLOCK_RESPONSES
    )
    async def freeze_blocks(
        account_id: Annotated[Identifier, Path()], body: BlockFreeze, identity: Identity = freezer
    ) -> FrozenBlocks:
        """Freezes serials [start, end] of a namespace that the account holds: they neither
        reserve, transfer, retire nor leave until the freeze is lifted."""
        await governed(registry, identity, account_id, regulators=True)
        request = pb.FreezeBlocks(
            freeze_id=body.freeze_id,
            account_id=account_id,
            namespace=body.namespace,
            start=body.start,
            end=body.end,
            reason=body.reason,
        )
        [frozen] = await command(registry, request, identity)
        assert isinstance(frozen, pb.BlocksFrozen)
        return FrozenBlocks(
            freeze_id=body.freeze_id,
            account_id=account_id,
            state="frozen",
            blocks=[(b.namespace, b.start, b.end) for b in frozen.blocks],
        )

    @api.post(
        "/accounts/{account_id}/block-freezes/{freeze_id}/release",
        response_model=FrozenBlocks,
        responses=BLOCK_RESPONSES,
    )
    async def unfreeze_blocks(
        account_id: Annotated[Identifier, Path()],
        freeze_id: Annotated[Identifier, Path()],
        body: Reason,
        identity: Identity = freezer,
    ) -> FrozenBlocks:
        """Lifts a block freeze: its serials are held again."""
        await governed(registry, identity, account_id, regulators=True)
        release = pb.UnfreezeBlocks(freeze_id=freeze_id, account_id=account_id, reason=body.reason)
        [thawed] = await command(registry, release, identity)
        assert isinstance(thawed, pb.BlocksUnfrozen)
        blocks = [(b.namespace, b.start, b.end) for b in thawed.blocks]
        return FrozenBlocks(freeze_id=freeze_id, account_id=account_id, state="unfrozen", blocks=blocks)

    async def freeze_project(project_id: str, body: ProjectFreeze, identity: Identity, freeze: bool) -> ProjectView:
        party = body.host_party
        if not (operates(identity, party) or party in identity.jurisdictions("regulator")):
            raise forbidden(f"only the operator and {party}'s registry operator or regulator freeze its projects")
        kind = pb.FreezeProject if freeze else pb.UnfreezeProject
        await command(registry, kind(project_id=project_id, host_party=party, reason=body.reason), identity)
        row = await registry.pool.fetchrow(
            "SELECT project_id, host_party, frozen, reason FROM projects WHERE project_id = $1", project_id
        )
        if row is None:  # thawing a project never frozen
            return ProjectView(project_id=project_id, host_party=party, frozen=False, reason="")
        return ProjectView(**dict(row))

    @api.post("/projects/{project_id}/freeze", response_model=ProjectView, responses=PROJECT_RESPONSES)
    async def freeze(
        project_id: Annotated[Identifier, Path()], body: ProjectFreeze, identity: Identity = freezer
    ) -> ProjectView:
        """Freezes a project of the host party: its units neither reserve nor transfer."""
        return await freeze_project(project_id, body, identity, freeze=True)

    @api.post("/projects/{project_id}/unfreeze", response_model=ProjectView, responses=PROJECT_RESPONSES)
    async def unfreeze(
        project_id: Annotated[Identifier, Path()], body: ProjectFreeze, identity: Identity = freezer
    ) -> ProjectView:
        """Lifts a project's freeze."""
        return await freeze_project(project_id, body, identity, freeze=False)

    # --- the trusted-account list ---

    async def entry(account_id: str, trusted_account_id: str) -> TrustedView:
        row = await registry.pool.fetchrow(
            "SELECT account_id, trusted_account_id, proposed_by, approved_by, effective_at FROM trusted_accounts "
            "WHERE account_id = $1 AND trusted_account_id = $2",
            account_id,
            trusted_account_id,
        )
        if row is None:  # removed meanwhile
            raise DomainError("TRUSTED_ACCOUNT_UNKNOWN", f"{trusted_account_id!r} is not on the list", [], 404)
        return trusted_view(row)

    @api.get(
        "/accounts/{account_id}/trusted",
        response_model=TrustedPage,
        responses=refusals(_404="ACCOUNT_UNKNOWN", _422="REQUEST_INVALID"),
    )
    async def trusted_list(
        account_id: Annotated[Identifier, Path()],
        identity: Identity = reader,
        limit: Annotated[Limit, Query()] = 100,
        after: Annotated[Identifier | None, Query()] = None,
    ) -> TrustedPage:
        """A page of the account's trusted list, by trusted account id."""
        async with registry.pool.acquire() as conn:
            await readable(conn, identity, account_id)
            rows, more = await keyset(
                conn,
                "SELECT account_id, trusted_account_id, proposed_by, approved_by, effective_at FROM trusted_accounts "
                "WHERE account_id = $1 AND trusted_account_id > $2 ORDER BY trusted_account_id LIMIT $3",
                account_id,
                after,
                limit,
            )
        items = [trusted_view(r) for r in rows]
        return TrustedPage(items=items, next=items[-1].trusted_account_id if more else None)

    @api.post("/accounts/{account_id}/trusted", status_code=201, response_model=TrustedView, responses=TRUST_RESPONSES)
    async def propose_trusted(
        account_id: Annotated[Identifier, Path()], body: TrustRequest, identity: Identity = keeper
    ) -> TrustedView:
        """Proposes an account for the trusted list; another caller must approve it."""
        await governed(registry, identity, account_id)
        proposal = pb.ProposeTrustedAccount(account_id=account_id, trusted_account_id=body.account_id)
        await command(registry, proposal, identity)
        return await entry(account_id, body.account_id)

    @api.post(
        "/accounts/{account_id}/trusted/{trusted_account_id}/approval",
        response_model=TrustedView,
        responses=TRUST_RESPONSES,
    )
    async def approve_trusted(
        account_id: Annotated[Identifier, Path()],
        trusted_account_id: Annotated[Identifier, Path()],
        identity: Identity = keeper,
    ) -> TrustedView:
        """Approves a proposal (a caller other than the proposer); the entry takes effect
        after the registry's delay (`effective_at`)."""
        await governed(registry, identity, account_id)
        approval = pb.ApproveTrustedAccount(account_id=account_id, trusted_account_id=trusted_account_id)
        await command(registry, approval, identity)
        return await entry(account_id, trusted_account_id)

    @api.delete(
        "/accounts/{account_id}/trusted/{trusted_account_id}", response_model=TrustedView, responses=TRUST_RESPONSES
    )
    async def remove_trusted(
        account_id: Annotated[Identifier, Path()],
        trusted_account_id: Annotated[Identifier, Path()],
        identity: Identity = keeper,
    ) -> TrustedView:
        """Takes an account off the trusted list at once; answers the entry as it was."""
        await governed(registry, identity, account_id)
        removed = await entry(account_id, trusted_account_id)
        await command(
            registry, pb.RemoveTrustedAccount(account_id=account_id, trusted_account_id=trusted_account_id), identity
        )
        return removed

    @api.put("/accounts/{account_id}/transfer-limit", response_model=AccountView, responses=GOVERN_RESPONSES)
    async def set_transfer_limit(
        account_id: Annotated[Identifier, Path()], body: TransferLimit, identity: Identity = keeper
    ) -> AccountView:
        """The account's own limit on units per outgoing transfer, the venue's deliveries
        included (0: none). Transfers outside the trusted list also meet the registry's limit."""
        await governed(registry, identity, account_id)
        await command(registry, pb.SetTransferLimit(account_id=account_id, per_transfer=body.per_transfer), identity)
        return await account_view(registry, identity, account_id)

    # --- transfers the holder asks for ---

    @api.post(
        "/accounts/{account_id}/transfers",
        status_code=201,
        response_model=TransferView,
        responses=TRANSFER_RESPONSES | SCREENING_RESPONSE,
    )
    async def request_transfer(
        account_id: Annotated[Identifier, Path()], body: TransferRequest, identity: Identity = keeper
    ) -> TransferView | JSONResponse:
        """Transfers held units selected by standard, host party and vintage: at once to
        an account on the trusted list (effective), otherwise scheduled after the
        registry's delay and capped per transfer. The transaction log screens it first
        (201 once approved, 202 with the proposal while it has not answered)."""
        await governed(registry, identity, account_id)
        request = pb.RequestTransfer(
            transfer_id=body.transfer_id,
            account_id=account_id,
            to_account_id=body.to_account_id,
            selector=body.selector(),
            quantity=body.quantity,
        )
        proposal = await screened(registry, await command(registry, request, identity))
        if isinstance(proposal, ProposalView):
            return JSONResponse(proposal.model_dump(mode="json"), status_code=202)
        scheduled = proposal.scheduled_transfer if proposal.HasField("scheduled_transfer") else None
        return TransferView(
            transfer_id=body.transfer_id,
            account_id=account_id,
            to_account_id=body.to_account_id,
            quantity=body.quantity,
            state="scheduled" if scheduled else "completed",
            execute_at=scheduled.execute_at.ToDatetime(tzinfo=UTC) if scheduled else None,
        )

    @api.get(
        "/accounts/{account_id}/transfers",
        response_model=TransferPage,
        responses=refusals(_404="ACCOUNT_UNKNOWN", _422="REQUEST_INVALID"),
    )
    async def scheduled_transfers(
        account_id: Annotated[Identifier, Path()],
        identity: Identity = reader,
        limit: Annotated[Limit, Query()] = 100,
        after: Annotated[Identifier | None, Query()] = None,
    ) -> TransferPage:
        """A page of the account's scheduled transfers, by transfer id."""
        async with registry.pool.acquire() as conn:
            await readable(conn, identity, account_id)
            rows, more = await keyset(
                conn,
                "SELECT transfer_id, account_id, to_account_id, quantity, execute_at FROM scheduled_transfers "
                "WHERE account_id = $1 AND transfer_id > $2 ORDER BY transfer_id LIMIT $3",
                account_id,
                after,
                limit,
            )
        items = [scheduled_view(r) for r in rows]
        return TransferPage(items=items, next=items[-1].transfer_id if more else None)

    @api.post(
        "/accounts/{account_id}/transfers/{transfer_id}/cancellation",
        response_model=TransferView,
        responses=TRANSFER_RESPONSES,
    )
    async def cancel_transfer(
        account_id: Annotated[Identifier, Path()],
        transfer_id: Annotated[Identifier, Path()],
        body: Reason,
        identity: Identity = keeper,
    ) -> TransferView:
        """Stops a scheduled transfer before it completes; its units return to the account."""
        await governed(registry, identity, account_id)
        row = await registry.pool.fetchrow(
            "SELECT transfer_id, account_id, to_account_id, quantity, execute_at FROM scheduled_transfers "
            "WHERE transfer_id = $1 AND account_id = $2",
            transfer_id,
            account_id,
        )
        cancel = pb.CancelTransfer(transfer_id=transfer_id, account_id=account_id, reason=body.reason)
        await command(registry, cancel, identity)
        assert row is not None  # the registry refuses a transfer it has not scheduled
        return TransferView(**dict(row), state="cancelled")

    return api
