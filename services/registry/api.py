"""Registry HTTP API: registry operators, regulators, the venue's operator and brokers.
Reads come from the projection tables, a page at a time.

Authority (bearer tokens, services/common/auth.py): every route declares the roles that
may ever call it (403 for the others); then the caller's tenancy must cover the account:
`operator` covers all, `registry-operator:<JUR>` and `regulator:<JUR>` the accounts of
JUR (regulators only read), a `broker` the accounts it holds a mandate for (reads only).
An account outside the caller's tenancy is answered exactly like one that does not exist
(404 ACCOUNT_UNKNOWN), so existence is never revealed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Path, Query, Security
from fastapi.responses import JSONResponse
from google.protobuf.message import Message
from pydantic import BaseModel, Field

from services.common.auth import Identity, forbidden
from services.common.errors import DomainError, NotFound
from services.common.inputs import INT64_MAX, Identifier, Limit, Party, Positive64, Text
from services.common.problems import refusals
from services.registry.domain import adjustments
from services.registry.domain.adjustments import AdjustmentStatus
from services.registry.domain.blocks import Status
from services.registry.domain.ledger import underlying
from services.registry.service import Registry, signed
from services.registry.sql_index import B_COLUMNS, block_of
from tonne.v1 import registry_pb2 as pb
from tonne.v1.envelope_pb2 import CommandRejected

# Blocks shown inside an AccountView; the rest through /accounts/{id}/blocks.
FIRST_PAGE = 100
# How often the API looks whether the transaction log answered a proposal.
SCREENING_POLL = 0.02


class AccountType(StrEnum):
    """registry.proto's AccountType; CANCELLATION is voluntary cancellation."""

    HOLDING = "HOLDING"
    TRADING = "TRADING"
    GOVERNMENT = "GOVERNMENT"
    PENDING = "PENDING"
    SHARE_OF_PROCEEDS = "SHARE_OF_PROCEEDS"
    RETIREMENT = "RETIREMENT"
    CANCELLATION = "CANCELLATION"
    MANDATORY_CANCELLATION = "MANDATORY_CANCELLATION"
    OMGE_CANCELLATION = "OMGE_CANCELLATION"


class StandardName(StrEnum):
    CCER = "CCER"
    JCM = "JCM"
    A6_4ER = "A6_4ER"
    VCU = "VCU"
    GS_VER = "GS_VER"
    PHCER = "PHCER"


class OpenAccountRequest(BaseModel):
    account_id: Identifier
    holder: Text
    jurisdiction: Party
    type: AccountType = AccountType.HOLDING


class GrantMandateRequest(BaseModel):
    mandate_id: Identifier
    broker_id: Identifier


class UnitsWanted(BaseModel):
    """Which held units a request takes: its quantity, of these attributes (any if unset)."""

    quantity: Positive64
    standard: StandardName | None = None
    host_party: Party | None = None
    vintage: Annotated[int | None, Field(ge=1, le=9999)] = None

    def selector(self) -> pb.UnitSelector:
        return pb.UnitSelector(
            standard=pb.Standard.Value(self.standard.value) if self.standard else pb.STANDARD_UNSPECIFIED,
            host_party=self.host_party or "",
            vintage=self.vintage or 0,
        )


class ClaimUse(StrEnum):
    """What a retirement is used toward (registry.proto's ClaimUse)."""

    NDC = "NDC"
    OIMP = "OIMP"
    VOLUNTARY = "VOLUNTARY"


class Cancellation(StrEnum):
    """Why units are cancelled (registry.proto's CancellationKind)."""

    VOLUNTARY = "VOLUNTARY"
    MANDATORY = "MANDATORY"  # the registry's order: a frozen account does not stop it
    OMGE = "OMGE"  # overall mitigation in global emissions (A6.4)


class RetirementRequest(UnitsWanted):
    retirement_id: Identifier
    beneficiary: Text | None = None  # whose claim the retirement backs; not for a cancellation
    purpose: Text  # the claim in words
    cancel: bool = False
    cancellation: Cancellation | None = None  # with `cancel`; VOLUNTARY when unset
    use: ClaimUse | None = None  # required for a retirement
    claim_year: Annotated[int, Field(ge=0, le=9999)] = 0  # the year claimed for; required for a retirement


class RetirementView(BaseModel):
    retirement_id: str
    account_id: str
    quantity: int
    cancelled: bool
    beneficiary: str
    purpose: str
    use: ClaimUse | None
    claim_year: int
    requested_by: str
    cancellation: Cancellation | None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> RetirementView:
        use = pb.ClaimUse.Name(row["use"]).removeprefix("CLAIM_") if row["use"] else None
        kind = row["cancellation"]
        cancellation = pb.CancellationKind.Name(kind).removeprefix("CANCELLATION_") if kind else None
        return cls(**{**row, "use": use, "cancellation": cancellation})


class ExpiryRequest(UnitsWanted):
    expiry_id: Identifier
    reason: Text  # why the units' validity ended (the programme's rule)


class ExpiryView(BaseModel):
    expiry_id: str
    account_id: str
    quantity: int
    reason: str
    requested_by: str


class RetirementPage(BaseModel):
    items: list[RetirementView]
    next: str | None


class MandateView(BaseModel):
    mandate_id: str
    account_id: str
    broker_id: str
    jurisdiction: str


class BlockView(BaseModel):
    namespace: str
    start: int
    end: int
    quantity: int
    status: str
    standard: str
    host_party: str
    project_id: str
    vintage: int
    authorization_id: str
    reservation_id: str
    manifest_root: str  # hex; a carbon-inclusion block's: its records' proofs check against it
    underlying: str  # an ITMO's underlying units, "<registry>:<namespace>:<start>-<end>"; "" if none
    adjustment: AdjustmentStatus  # the host party's corresponding adjustment for these serials

    @classmethod
    def of(cls, row: asyncpg.Record) -> BlockView:
        b = block_of(row)
        units = b.units.message()
        return cls(
            namespace=b.namespace,
            start=b.start,
            end=b.end,
            quantity=b.quantity,
            status=b.status,
            standard=pb.Standard.Name(pb.Standard.ValueType(b.units.standard)),
            host_party=b.units.host_party,
            project_id=units.project_id,
            vintage=b.units.vintage,
            authorization_id=b.units.authorization_id,
            reservation_id=b.reservation_id,
            manifest_root=units.manifest_root.hex(),
            underlying=underlying_label(b.start, b.end, units),
            adjustment=adjustments.status(
                bool(b.units.authorization_id), row["first_transfer"] or 0, b.quantity, row["adjusted"]
            ),
        )


def underlying_label(start: int, end: int, units: pb.UnitAttributes) -> str:
    if not units.underlying_namespace:
        return ""
    first, last = underlying(start, end, units)
    return f"{units.underlying_registry}:{units.underlying_namespace}:{first}-{last}"


class BlockPage(BaseModel):
    items: list[BlockView]
    next: str | None


class AccountView(BaseModel):
    account_id: str
    holder: str
    jurisdiction: str
    type: str
    holdings: list[BlockView]  # the first page of the account's blocks (held first)
    holdings_next: str | None  # cursor of the next page of /accounts/{id}/blocks
    held: int
    reserved: int
    retired: int
    cancelled: int
    expired: int
    frozen: bool  # no units leave a frozen account
    closed: bool  # no units enter or leave a closed account
    transfer_limit: int  # the account's own limit on units per outgoing transfer; 0: none


def http_status(code: str) -> int:
    if code.endswith("_EXISTS"):
        return 409
    if code.endswith("_UNKNOWN"):
        return 404
    return 422


def cursor(block: BlockView) -> str:
    return f"{block.status}:{block.namespace}:{block.start}"


def parse_cursor(after: str) -> tuple[str, str, int]:
    status, _, rest = after.partition(":")
    namespace, _, start = rest.rpartition(":")
    if status not in set(Status) or not namespace or not start.isdigit() or int(start) > INT64_MAX:
        raise DomainError("REQUEST_INVALID", "after is not a cursor this API returned", ["after"], 422)
    return status, namespace, int(start)


async def blocks_page(
    conn: asyncpg.Connection,
    account_id: str,
    limit: int,
    after: tuple[str, str, int] | None = None,
    status: Status | None = None,
    standard: int = 0,
    vintage: int = 0,
) -> BlockPage:
    """One page in (status, namespace, start) order: the (account_id, status, namespace,
    start) index's order, so a page costs O(page) (filters on attributes aside)."""
    after_status, namespace, start = after or ("", "", 0)
    rows = await conn.fetch(
        # With each block, its authorization's first-transfer event and how many of its
        # serials were adjusted (adjusted ranges are disjoint: their overlaps add up).
        f"SELECT {B_COLUMNS}, l.first_transfer, (SELECT coalesce(sum(least(s.serial_end, b.serial_end) "
        "- greatest(s.serial_start, b.serial_start) + 1), 0) FROM adjusted_serials s WHERE s.namespace = b.namespace "
        "AND s.serial_start <= b.serial_end AND s.serial_end >= b.serial_start)::bigint AS adjusted "
        "FROM blocks b LEFT JOIN authorizations l ON l.authorization_id = b.authorization_id "
        "WHERE b.account_id = $1 AND (b.account_id, b.status, b.namespace, b.serial_start) > "
        "($1, $2, $3, $4) AND ($5::text IS NULL OR b.status = $5) AND ($6::int = 0 OR b.standard = $6) "
        "AND ($7::int = 0 OR b.vintage = $7) ORDER BY b.status, b.namespace, b.serial_start LIMIT $8",
        account_id,
        after_status,
        namespace,
        start,
        status.value if status else None,
        standard,
        vintage,
        limit + 1,
    )
    items = [BlockView.of(r) for r in rows[:limit]]
    return BlockPage(items=items, next=cursor(items[-1]) if len(rows) > limit else None)


async def keyset(
    conn: asyncpg.Connection, query: str, account_id: str, after: str | None, limit: int
) -> tuple[list[asyncpg.Record], bool]:
    """A page of an account's rows in key order, and whether more follow: `query` takes
    ($1 account id, $2 the key to start after, $3 rows to read)."""
    rows = await conn.fetch(query, account_id, after or "", limit + 1)
    return rows[:limit], len(rows) > limit


def operates(identity: Identity, jurisdiction: str) -> bool:
    """Runs the registry of `jurisdiction`: its accounts and their mandates."""
    return identity.operator or jurisdiction in identity.jurisdictions("registry-operator")


async def may_read(conn: asyncpg.Connection, identity: Identity, account: asyncpg.Record) -> bool:
    jurisdiction = account["jurisdiction"]
    if operates(identity, jurisdiction) or jurisdiction in identity.jurisdictions("regulator"):
        return True
    if "broker" not in identity.roles or not identity.broker_id:
        return False
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM mandates WHERE account_id = $1 AND broker_id = $2)",
            account["account_id"],
            identity.broker_id,
        )
    )


def unknown(account_id: str) -> NotFound:
    return NotFound("ACCOUNT_UNKNOWN", f"no account {account_id!r}")


READ_RESPONSES = refusals(
    _404="ACCOUNT_UNKNOWN: no account the caller may see (unknown, or outside its tenancy)",
    _422="REQUEST_INVALID",
)
KEEP_RESPONSES = refusals(
    _404="ACCOUNT_UNKNOWN (no account the caller may keep) or MANDATE_UNKNOWN",
    _409="MANDATE_EXISTS: the mandate id names another broker or account",
    _422="REQUEST_INVALID or MANDATE_INVALID",
)


async def readable(conn: asyncpg.Connection, identity: Identity, account_id: str) -> asyncpg.Record:
    """The account's row, if the caller may read it; else the answer of an unknown one."""
    account = await conn.fetchrow(
        "SELECT account_id, holder, jurisdiction, type, frozen, closed, transfer_limit FROM accounts "
        "WHERE account_id = $1",
        account_id,
    )
    if account is None or not await may_read(conn, identity, account):
        raise unknown(account_id)
    return account


async def governed(registry: Registry, identity: Identity, account_id: str, *, regulators: bool = False) -> str:
    """The account's jurisdiction, if the caller runs its registry (or, with `regulators`,
    regulates it); else the answer of an unknown account."""
    jurisdiction = await registry.pool.fetchval("SELECT jurisdiction FROM accounts WHERE account_id = $1", account_id)
    if jurisdiction is None or not (
        operates(identity, jurisdiction) or (regulators and jurisdiction in identity.jurisdictions("regulator"))
    ):
        raise unknown(account_id)
    return str(jurisdiction)


async def command(registry: Registry, command: Message, identity: Identity) -> list[Message]:
    """Decide and record as the caller; a refusal is recorded (and audited) and the
    caller gets its code."""
    events = await registry.decide(signed(command, identity.subject), f"registry-api:{identity.subject}")
    for event in events:
        if isinstance(event, CommandRejected):
            raise DomainError(event.code, event.reason, list(event.evidence), http_status(event.code))
    return events


async def account_view(registry: Registry, identity: Identity, account_id: str) -> AccountView:
    async with registry.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        account = await readable(conn, identity, account_id)
        totals = dict(
            await conn.fetch(
                "SELECT status, sum(quantity) FROM holdings WHERE account_id = $1 GROUP BY status", account_id
            )
        )
        page = await blocks_page(conn, account_id, FIRST_PAGE)
    return AccountView(
        account_id=account["account_id"],
        holder=account["holder"],
        jurisdiction=account["jurisdiction"],
        type=pb.AccountType.Name(account["type"]),
        holdings=page.items,
        holdings_next=page.next,
        held=int(totals.get(Status.HELD.value, 0)),
        reserved=int(totals.get(Status.RESERVED.value, 0)),
        retired=int(totals.get(Status.RETIRED.value, 0)),
        cancelled=int(totals.get(Status.CANCELLED.value, 0)),
        expired=int(totals.get(Status.EXPIRED.value, 0)),
        frozen=account["frozen"],
        closed=account["closed"],
        transfer_limit=account["transfer_limit"],
    )


class ProposalView(BaseModel):
    """An operation the transaction log screens before it completes (domain/screening.py)."""

    proposal_id: str
    account_id: str
    transaction_type: str  # docs/registry-transaction-types.md
    quantity: int
    state: str  # screening, completed or rejected
    expires_at: datetime  # unanswered by then, its units are held again (SCREENING_TIMEOUT)
    code: str  # why rejected: SCREENING_REJECTED or SCREENING_TIMEOUT
    reason: str


SCREENING_RESPONSE: dict[int | str, dict[str, Any]] = {
    202: {"model": ProposalView, "description": "the transaction log has not answered yet: the proposal"}
}
_PROPOSAL = "SELECT proposal_id, account_id, transaction_type, quantity, state, expires_at, code, reason FROM proposals"


async def screened(registry: Registry, events: list[Message]) -> pb.ScreenProposal | ProposalView:
    """The proposal `events` recorded, once the transaction log approved it; its view if
    the answer has not come within the registry's wait. A rejection is raised as the
    caller's refusal: SCREENING_REJECTED with the failed rules, SCREENING_TIMEOUT, or the
    code of what stopped an approved transfer (ACCOUNT_FROZEN, ACCOUNT_CLOSED, ...)."""
    proposal = events[-1]
    assert isinstance(proposal, pb.ScreenProposal)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + registry.screening_wait
    while True:
        row = await registry.pool.fetchrow(f"{_PROPOSAL} WHERE proposal_id = $1", proposal.proposal_id)
        assert row is not None  # recorded by `events`
        if row["state"] == "completed":
            return proposal
        if row["state"] == "rejected":
            # SCREENING_REJECTED, SCREENING_TIMEOUT, or why a transfer could no longer complete.
            code = str(row["code"])
            raise DomainError(code, row["reason"], [proposal.proposal_id], 422)
        if loop.time() >= deadline:
            return ProposalView(**dict(row))
        await asyncio.sleep(SCREENING_POLL)


def router(registry: Registry) -> APIRouter:
    api = APIRouter(tags=["registry"])
    # Dependencies as defaults: annotations are strings here and cannot name these locals.
    reader = Security(registry.auth.authenticate, scopes=["operator", "registry-operator", "regulator", "broker"])
    keeper = Security(registry.auth.authenticate, scopes=["operator", "registry-operator"])

    @api.post(
        "/accounts",
        status_code=201,
        response_model=AccountView,
        responses=refusals(_409="ACCOUNT_EXISTS", _422="REQUEST_INVALID or ACCOUNT_INVALID"),
    )
    async def open_account(body: OpenAccountRequest, identity: Identity = keeper) -> AccountView:
        """Opens an account: the operator, or the registry operator of its jurisdiction."""
        if not operates(identity, body.jurisdiction):
            raise forbidden(f"only the operator and {body.jurisdiction}'s registry operator open its accounts")
        await command(
            registry,
            pb.OpenAccount(
                account_id=body.account_id,
                holder=body.holder,
                jurisdiction=body.jurisdiction,
                type=pb.AccountType.Value(body.type.value),
            ),
            identity,
        )
        return await account_view(registry, identity, body.account_id)

    @api.get("/accounts/{account_id}", response_model=AccountView, responses=READ_RESPONSES)
    async def get_account(account_id: Annotated[Identifier, Path()], identity: Identity = reader) -> AccountView:
        """The account, its totals and the first page of its blocks."""
        return await account_view(registry, identity, account_id)

    @api.get("/accounts/{account_id}/blocks", response_model=BlockPage, responses=READ_RESPONSES)
    async def account_blocks(
        account_id: Annotated[Identifier, Path()],
        identity: Identity = reader,
        limit: Annotated[Limit, Query()] = 100,
        after: Annotated[Text | None, Query()] = None,
        status: Annotated[Status | None, Query()] = None,
        standard: Annotated[StandardName | None, Query()] = None,
        vintage: Annotated[int | None, Query(ge=1, le=9999)] = None,
    ) -> BlockPage:
        """A page of the account's blocks in (status, namespace, start) order."""
        async with registry.pool.acquire() as conn:
            await readable(conn, identity, account_id)
            return await blocks_page(
                conn,
                account_id,
                limit,
                parse_cursor(after) if after is not None else None,
                status,
                pb.Standard.Value(standard.value) if standard else 0,
                vintage or 0,
            )

    @api.post("/accounts/{account_id}/mandates", status_code=201, response_model=MandateView, responses=KEEP_RESPONSES)
    async def grant_mandate(
        account_id: Annotated[Identifier, Path()], body: GrantMandateRequest, identity: Identity = keeper
    ) -> MandateView:
        """Lets `broker_id` act for the account. Granting the same mandate again is a no-op."""
        await governed(registry, identity, account_id)
        grant = pb.GrantMandate(mandate_id=body.mandate_id, account_id=account_id, broker_id=body.broker_id)
        await command(registry, grant, identity)
        row = await registry.pool.fetchrow(
            "SELECT mandate_id, account_id, broker_id, jurisdiction FROM mandates WHERE mandate_id = $1",
            body.mandate_id,
        )
        if row is None:  # revoked meanwhile
            raise NotFound("MANDATE_UNKNOWN", f"no mandate {body.mandate_id!r}")
        return MandateView(**dict(row))

    @api.delete("/accounts/{account_id}/mandates/{mandate_id}", response_model=MandateView, responses=KEEP_RESPONSES)
    async def revoke_mandate(
        account_id: Annotated[Identifier, Path()],
        mandate_id: Annotated[Identifier, Path()],
        identity: Identity = keeper,
    ) -> MandateView:
        """Ends the mandate: the broker may no longer act for the account."""
        await governed(registry, identity, account_id)
        [revoked] = await command(registry, pb.RevokeMandate(mandate_id=mandate_id, account_id=account_id), identity)
        assert isinstance(revoked, pb.MandateRevoked)
        return MandateView(
            mandate_id=revoked.mandate_id,
            account_id=revoked.account_id,
            broker_id=revoked.broker_id,
            jurisdiction=revoked.jurisdiction,
        )

    @api.post(
        "/accounts/{account_id}/retirements",
        status_code=201,
        response_model=RetirementView,
        responses=refusals(
            _404="ACCOUNT_UNKNOWN: no account the caller may keep",
            _422=(
                "REQUEST_INVALID, RETIREMENT_INVALID, SEQUENCE_DUPLICATE_ID, HOLDINGS_INSUFFICIENT, "
                "ACCOUNT_FROZEN, PROJECT_FROZEN, TRANSFER_LIMIT_EXCEEDED or SCREENING_REJECTED"
            ),
        )
        | SCREENING_RESPONSE,
    )
    async def retire(
        account_id: Annotated[Identifier, Path()], body: RetirementRequest, identity: Identity = keeper
    ) -> RetirementView | JSONResponse:
        """Retires held units for a beneficiary (or, with `cancel`, cancels them): they
        stay in the account as retired or cancelled and never move again. The transaction
        log screens it first: 201 once it approved, 202 with the proposal while it has not
        answered yet (GET /accounts/{id}/proposals/{retirement_id} follows it), 422
        SCREENING_REJECTED if it refused."""
        await governed(registry, identity, account_id)
        retirement = pb.RetireUnits(
            retirement_id=body.retirement_id,
            account_id=account_id,
            selector=body.selector(),
            quantity=body.quantity,
            beneficiary=body.beneficiary or "",
            purpose=body.purpose,
            cancel=body.cancel,
            use=pb.ClaimUse.Value(f"CLAIM_{body.use.value}") if body.use else pb.CLAIM_USE_UNSPECIFIED,
            claim_year=body.claim_year,
            cancellation=(
                pb.CancellationKind.Value(f"CANCELLATION_{body.cancellation.value}")
                if body.cancellation
                else pb.CANCELLATION_KIND_UNSPECIFIED
            ),
        )
        proposal = await screened(registry, await command(registry, retirement, identity))
        if isinstance(proposal, ProposalView):
            return JSONResponse(proposal.model_dump(mode="json"), status_code=202)
        retired = proposal.retirement
        return RetirementView.of(
            {
                "retirement_id": retired.retirement_id,
                "account_id": retired.account_id,
                "quantity": retired.quantity,
                "cancelled": retired.cancelled,
                "beneficiary": retired.beneficiary,
                "purpose": retired.purpose,
                "use": retired.use,
                "claim_year": retired.claim_year,
                "requested_by": retired.by,
                "cancellation": retired.cancellation,
            }
        )

    @api.post(
        "/accounts/{account_id}/expiries",
        status_code=201,
        response_model=ExpiryView,
        responses=refusals(
            _404="ACCOUNT_UNKNOWN: no account the caller may keep",
            _422=(
                "REQUEST_INVALID, EXPIRY_INVALID, SEQUENCE_DUPLICATE_ID, HOLDINGS_INSUFFICIENT, PROJECT_FROZEN "
                "or SCREENING_REJECTED"
            ),
        )
        | SCREENING_RESPONSE,
    )
    async def expire(
        account_id: Annotated[Identifier, Path()], body: ExpiryRequest, identity: Identity = keeper
    ) -> ExpiryView | JSONResponse:
        """Expires held units whose validity has ended (the registry's act: a frozen
        account does not stop it); they stay in the account as expired and never move again.
        Screened by the transaction log first, like a retirement (201, 202 or 422)."""
        await governed(registry, identity, account_id)
        expiry = pb.ExpireUnits(
            expiry_id=body.expiry_id,
            account_id=account_id,
            selector=body.selector(),
            quantity=body.quantity,
            reason=body.reason,
        )
        proposal = await screened(registry, await command(registry, expiry, identity))
        if isinstance(proposal, ProposalView):
            return JSONResponse(proposal.model_dump(mode="json"), status_code=202)
        expired = proposal.expiry
        return ExpiryView(
            expiry_id=expired.expiry_id,
            account_id=expired.account_id,
            quantity=expired.quantity,
            reason=expired.reason,
            requested_by=expired.by,
        )

    @api.get(
        "/accounts/{account_id}/proposals/{proposal_id}",
        response_model=ProposalView,
        responses=refusals(
            _404="ACCOUNT_UNKNOWN (no account the caller may see) or PROPOSAL_UNKNOWN", _422="REQUEST_INVALID"
        ),
    )
    async def proposal(
        account_id: Annotated[Identifier, Path()],
        proposal_id: Annotated[Identifier, Path()],
        identity: Identity = reader,
    ) -> ProposalView:
        """A retirement, cancellation or expiry as the transaction log screens it."""
        async with registry.pool.acquire() as conn:
            await readable(conn, identity, account_id)
            query = f"{_PROPOSAL} WHERE proposal_id = $1 AND account_id = $2"
            row = await conn.fetchrow(query, proposal_id, account_id)
        if row is None:
            raise NotFound("PROPOSAL_UNKNOWN", f"no proposal {proposal_id!r} of this account")
        return ProposalView(**dict(row))

    @api.get("/accounts/{account_id}/retirements", response_model=RetirementPage, responses=READ_RESPONSES)
    async def retirements(
        account_id: Annotated[Identifier, Path()],
        identity: Identity = reader,
        limit: Annotated[Limit, Query()] = 100,
        after: Annotated[Identifier | None, Query()] = None,
    ) -> RetirementPage:
        """A page of the account's retirements and cancellations, by id."""
        async with registry.pool.acquire() as conn:
            await readable(conn, identity, account_id)
            rows, more = await keyset(
                conn,
                "SELECT retirement_id, account_id, quantity, cancelled, beneficiary, purpose, use, claim_year, "
                "requested_by, cancellation FROM retirements WHERE account_id = $1 AND retirement_id > $2 "
                "ORDER BY retirement_id LIMIT $3",
                account_id,
                after,
                limit,
            )
        items = [RetirementView.of(r) for r in rows]
        return RetirementPage(items=items, next=items[-1].retirement_id if more else None)

    # The Union Registry's controls and external transfers build on this module's
    # helpers, hence imported here.
    from services.registry import authorizations_api, controls_api, external_api, manifest_api, transactions_api

    api.include_router(controls_api.router(registry))
    api.include_router(external_api.router(registry))
    api.include_router(manifest_api.router(registry))
    api.include_router(transactions_api.router(registry))
    api.include_router(authorizations_api.router(registry))
    return api
