"""An account's transaction history through the registry's HTTP API: its completed
transactions (domain/transactions.py), oldest first, each with its type code, read by
whoever may read the account's blocks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Security
from pydantic import BaseModel

from services.common.auth import Identity
from services.common.inputs import Identifier, Limit
from services.registry.api import READ_RESPONSES, readable
from services.registry.service import Registry

TYPE_CODE = r"^\d\d-\d\d$"


class TransactionView(BaseModel):
    transaction_id: str
    transaction_type: str  # primary-supplementary: docs/registry-transaction-types.md
    direction: str  # in, out
    quantity: int
    counterparty: str  # the other account, "<registry>:<account>" for another registry's, or ""
    blocks: str  # "<namespace>:<start>-<end>; ..." (at most 20)
    recorded_at: datetime


class TransactionPage(BaseModel):
    items: list[TransactionView]
    next: str | None


def router(registry: Registry) -> APIRouter:
    api = APIRouter(tags=["registry"])
    reader = Security(registry.auth.authenticate, scopes=["operator", "registry-operator", "regulator", "broker"])

    @api.get("/accounts/{account_id}/transactions", response_model=TransactionPage, responses=READ_RESPONSES)
    async def transactions(
        account_id: Annotated[Identifier, Path()],
        identity: Identity = reader,
        limit: Annotated[Limit, Query()] = 100,
        after: Annotated[str | None, Query(pattern=r"^\d{1,18}$")] = None,
        kind: Annotated[str | None, Query(alias="type", pattern=TYPE_CODE)] = None,
        since: Annotated[datetime | None, Query()] = None,
        until: Annotated[datetime | None, Query()] = None,
    ) -> TransactionPage:
        """A page of the account's completed transactions, oldest first: issuance,
        allocation, transfers in and out, retirement, cancellation, expiry. Filter by
        `type` (a code such as `10-00`) and by when they were recorded (`since` inclusive,
        `until` exclusive); pass `next` as `after` for the following page."""
        async with registry.pool.acquire() as conn:
            await readable(conn, identity, account_id)
            rows = await conn.fetch(
                "SELECT position, transaction_id, transaction_type, direction, quantity, counterparty, blocks, "
                "recorded_at FROM transactions WHERE account_id = $1 AND position > $2 "
                "AND ($3::text IS NULL OR transaction_type = $3) "
                "AND ($4::timestamptz IS NULL OR recorded_at >= $4) AND ($5::timestamptz IS NULL OR recorded_at < $5) "
                "ORDER BY position LIMIT $6",
                account_id,
                int(after or 0),
                kind,
                since,
                until,
                limit + 1,
            )
        page = rows[:limit]
        items = [TransactionView(**{k: v for k, v in r.items() if k != "position"}) for r in page]
        return TransactionPage(items=items, next=str(page[-1]["position"]) if len(rows) > limit else None)

    return api
