"""Host parties' Letters of Authorization through the registry's HTTP API: the terms in
force, their version and whether revoked. Article 6.2 authorizations are public (parties
publish them, and AEF table 2 reports them), so any authenticated caller reads them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Security
from pydantic import BaseModel

from services.common.auth import Identity
from services.common.errors import NotFound
from services.common.inputs import Identifier, Limit, Party
from services.common.problems import refusals
from services.registry.service import Registry
from tonne.v1 import registry_pb2 as pb

_COLUMNS = (
    "authorization_id, host_party, quantity, use, first_transfer, vintage_from, vintage_to, cooperative_approach, "
    "authorized_entities, version, revoked"
)


class AuthorizationView(BaseModel):
    authorization_id: str
    host_party: str
    quantity: int
    use: str  # NDC, OIMP, NDC_AND_OIMP
    first_transfer: str  # AT_AUTHORIZATION, AT_ISSUANCE, AT_FIRST_INTERNATIONAL_TRANSFER, AT_USE_OR_CANCELLATION
    vintage_from: int
    vintage_to: int
    cooperative_approach: str
    authorized_entities: list[str]
    version: int  # 1: as recorded; each change adds one
    revoked: bool

    @classmethod
    def of(cls, row: Any) -> AuthorizationView:
        found = dict(row)
        found["use"] = pb.AuthorizedUse.Name(found["use"])
        found["first_transfer"] = pb.FirstTransfer.Name(found["first_transfer"])
        return cls(**found)


class AuthorizationPage(BaseModel):
    items: list[AuthorizationView]
    next: str | None


def router(registry: Registry) -> APIRouter:
    api = APIRouter(tags=["registry"])
    anyone = Security(registry.auth.authenticate)

    @api.get("/authorizations", response_model=AuthorizationPage, responses=refusals(_422="REQUEST_INVALID"))
    async def authorizations(
        _: Identity = anyone,
        party: Annotated[Party | None, Query()] = None,
        limit: Annotated[Limit, Query()] = 100,
        after: Annotated[Identifier | None, Query()] = None,
    ) -> AuthorizationPage:
        """A page of the authorizations recorded, by id; `party` for one host party's."""
        rows = await registry.pool.fetch(
            f"SELECT {_COLUMNS} FROM authorizations WHERE ($1::text IS NULL OR host_party = $1) "
            "AND authorization_id > $2 ORDER BY authorization_id LIMIT $3",
            party,
            after or "",
            limit + 1,
        )
        items = [AuthorizationView.of(r) for r in rows[:limit]]
        return AuthorizationPage(items=items, next=items[-1].authorization_id if len(rows) > limit else None)

    @api.get(
        "/authorizations/{authorization_id}",
        response_model=AuthorizationView,
        responses=refusals(_404="AUTHORIZATION_UNKNOWN", _422="REQUEST_INVALID"),
    )
    async def authorization(authorization_id: Annotated[Identifier, Path()], _: Identity = anyone) -> AuthorizationView:
        """One authorization: its terms in force, their version, and whether revoked."""
        row = await registry.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM authorizations WHERE authorization_id = $1", authorization_id
        )
        if row is None:
            raise NotFound("AUTHORIZATION_UNKNOWN", f"no authorization {authorization_id!r}")
        return AuthorizationView.of(row)

    return api
