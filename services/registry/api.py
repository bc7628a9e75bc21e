"""Registry HTTP API: account holders and registry operators."""

from __future__ import annotations

from enum import StrEnum

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.common.envelope import Context
from services.common.errors import DomainError
from services.registry.domain.blocks import Block
from services.registry.service import Registry
from tonne.v1 import registry_pb2 as pb
from tonne.v1.envelope_pb2 import CommandRejected


class AccountType(StrEnum):
    HOLDING = "HOLDING"
    GOVERNMENT = "GOVERNMENT"
    RETIREMENT = "RETIREMENT"
    CANCELLATION = "CANCELLATION"


class OpenAccountRequest(BaseModel):
    account_id: str = Field(min_length=1, max_length=64)
    holder: str = Field(min_length=1, max_length=200)
    jurisdiction: str = Field(pattern="^[A-Z]{2}$")
    type: AccountType = AccountType.HOLDING


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

    @classmethod
    def of(cls, b: Block) -> BlockView:
        a = b.attributes
        return cls(
            namespace=b.namespace,
            start=b.start,
            end=b.end,
            quantity=b.quantity,
            status=b.status,
            standard=pb.Standard.Name(a.standard),
            host_party=a.host_party,
            project_id=a.project_id,
            vintage=a.vintage,
            authorization_id=a.authorization_id,
            reservation_id=b.reservation_id,
        )


class AccountView(BaseModel):
    account_id: str
    holder: str
    jurisdiction: str
    type: str
    holdings: list[BlockView]
    held: int
    reserved: int


def http_status(code: str) -> int:
    if code.endswith("_EXISTS"):
        return 409
    if code.endswith("_UNKNOWN"):
        return 404
    return 422


def router(registry: Registry) -> APIRouter:
    api = APIRouter(tags=["registry"])

    def view(account_id: str) -> AccountView:
        account = registry.ledger.account(account_id)
        blocks = sorted(registry.ledger.holdings(account_id), key=lambda b: (b.namespace, b.start))
        return AccountView(
            account_id=account.account_id,
            holder=account.holder,
            jurisdiction=account.jurisdiction,
            type=pb.AccountType.Name(account.type),
            holdings=[BlockView.of(b) for b in blocks],
            held=sum(b.quantity for b in blocks if b.status == "held"),
            reserved=sum(b.quantity for b in blocks if b.status == "reserved"),
        )

    @api.post("/accounts", status_code=201, response_model=AccountView)
    async def open_account(body: OpenAccountRequest) -> AccountView:
        command = pb.OpenAccount(
            account_id=body.account_id,
            holder=body.holder,
            jurisdiction=body.jurisdiction,
            type=pb.AccountType.Value(body.type.value),
        )
        async with registry.pool.acquire() as conn, conn.transaction():
            events = await registry.execute(conn, command, Context.new(actor="registry-api"))
        if isinstance(events[0], CommandRejected):
            # The refusal is recorded (and audited); the caller gets its code.
            r = events[0]
            raise DomainError(r.code, r.reason, list(r.evidence), http_status(r.code))
        return view(body.account_id)

    @api.get("/accounts/{account_id}", response_model=AccountView)
    async def get_account(account_id: str) -> AccountView:
        try:
            return view(account_id)
        except DomainError as error:
            error.http_status = 404
            raise

    return api
