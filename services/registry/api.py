"""Registry HTTP API: account holders and registry operators. Reads come from the
projection tables, a page at a time."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from services.common.envelope import Context
from services.common.errors import DomainError, NotFound
from services.common.eventstore import ConcurrencyError
from services.common.inputs import INT64_MAX, Identifier, Limit, Party, Text
from services.registry.domain.blocks import Status
from services.registry.service import Registry
from services.registry.sql_index import COLUMNS, block_of
from tonne.v1 import registry_pb2 as pb
from tonne.v1.envelope_pb2 import CommandRejected

# Blocks shown inside an AccountView; the rest through /accounts/{id}/blocks.
FIRST_PAGE = 100
# A command whose stream another writer moved is decided again, this many times.
ATTEMPTS = 5


class AccountType(StrEnum):
    HOLDING = "HOLDING"
    GOVERNMENT = "GOVERNMENT"
    RETIREMENT = "RETIREMENT"
    CANCELLATION = "CANCELLATION"


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
    def of(cls, row: asyncpg.Record) -> BlockView:
        b = block_of(row)
        return cls(
            namespace=b.namespace,
            start=b.start,
            end=b.end,
            quantity=b.quantity,
            status=b.status,
            standard=pb.Standard.Name(pb.Standard.ValueType(b.units.standard)),
            host_party=b.units.host_party,
            project_id=b.units.message().project_id,
            vintage=b.units.vintage,
            authorization_id=b.units.authorization_id,
            reservation_id=b.reservation_id,
        )


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
        f"SELECT {COLUMNS} FROM blocks WHERE account_id = $1 AND (account_id, status, namespace, serial_start) > "
        "($1, $2, $3, $4) AND ($5::text IS NULL OR status = $5) AND ($6::int = 0 OR standard = $6) "
        "AND ($7::int = 0 OR vintage = $7) ORDER BY status, namespace, serial_start LIMIT $8",
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


def router(registry: Registry) -> APIRouter:
    api = APIRouter(tags=["registry"])

    async def view(account_id: str) -> AccountView:
        async with registry.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            account = await conn.fetchrow(
                "SELECT account_id, holder, jurisdiction, type FROM accounts WHERE account_id = $1", account_id
            )
            if account is None:
                raise NotFound("ACCOUNT_UNKNOWN", f"no account {account_id!r}")
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
        )

    @api.post("/accounts", status_code=201, response_model=AccountView)
    async def open_account(body: OpenAccountRequest) -> AccountView:
        command = pb.OpenAccount(
            account_id=body.account_id,
            holder=body.holder,
            jurisdiction=body.jurisdiction,
            type=pb.AccountType.Value(body.type.value),
        )
        context = Context.new(actor="registry-api")
        for attempt in range(ATTEMPTS):
            try:
                async with registry.unit_of_work() as uow:
                    [event] = await registry.execute(uow, command, context)
                break
            except ConcurrencyError:
                if attempt == ATTEMPTS - 1:
                    raise
        if isinstance(event, CommandRejected):
            # The refusal is recorded (and audited); the caller gets its code.
            raise DomainError(event.code, event.reason, list(event.evidence), http_status(event.code))
        return await view(body.account_id)

    @api.get("/accounts/{account_id}", response_model=AccountView)
    async def get_account(account_id: Annotated[Identifier, Path()]) -> AccountView:
        return await view(account_id)

    @api.get("/accounts/{account_id}/blocks", response_model=BlockPage)
    async def account_blocks(
        account_id: Annotated[Identifier, Path()],
        limit: Annotated[Limit, Query()] = 100,
        after: Annotated[Text | None, Query()] = None,
        status: Annotated[Status | None, Query()] = None,
        standard: Annotated[StandardName | None, Query()] = None,
        vintage: Annotated[int | None, Query(ge=1, le=9999)] = None,
    ) -> BlockPage:
        async with registry.pool.acquire() as conn:
            if not await conn.fetchval("SELECT true FROM accounts WHERE account_id = $1", account_id):
                raise NotFound("ACCOUNT_UNKNOWN", f"no account {account_id!r}")
            return await blocks_page(
                conn,
                account_id,
                limit,
                parse_cursor(after) if after is not None else None,
                status,
                pb.Standard.Value(standard.value) if standard else 0,
                vintage or 0,
            )

    return api
