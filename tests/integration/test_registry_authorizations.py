"""An authorization's change and revocation on a real PostgreSQL: the projection holds the
terms in force, their version and the revocation, and an issuance under a revoked
authorization is refused on the path the service takes (the index's facts query)."""

from __future__ import annotations

import httpx

from services.common.auth import DevIssuer
from services.common.runtime import Kernel
from services.registry.service import Registry
from tests.integration.test_registry_state import app_for, issued, kernel, run  # noqa: F401 (fixture)
from tests.unit.factories import issuance, loa, open_account
from tonne.v1 import registry_pb2 as pb
from tonne.v1.envelope_pb2 import CommandRejected


async def test_a_revoked_authorization_issues_nothing_more(kernel: Kernel) -> None:  # noqa: F811
    registry = Registry(kernel)
    await run(registry, open_account("TH-GOV", "TH", pb.GOVERNMENT))
    await run(registry, loa("LOA-TH-9", 4000))
    raised = loa("LOA-TH-9", 6000)
    [changed] = await run(registry, pb.ChangeAuthorization(authorization=raised, reason="more tonnes"))
    assert isinstance(changed, pb.AuthorizationChanged) and changed.version == 2
    await issued(registry, issuance("I-1", "TH-GOV", 1, 100, authorization_id="LOA-TH-9"))
    revoke = pb.RevokeAuthorization(authorization_id="LOA-TH-9", host_party="TH", reason="project withdrawn")
    [revoked] = await run(registry, revoke)
    assert isinstance(revoked, pb.AuthorizationRevoked)
    row = await registry.pool.fetchrow(
        "SELECT quantity, version, revoked FROM authorizations WHERE authorization_id = 'LOA-TH-9'"
    )
    assert dict(row) == {"quantity": 6000, "version": 2, "revoked": True}

    [refused] = await run(registry, issuance("I-2", "TH-GOV", 101, 200, authorization_id="LOA-TH-9"))
    assert isinstance(refused, CommandRejected) and (refused.code, list(refused.evidence)) == (
        "AUTHORIZATION_REVOKED",
        ["LOA-TH-9"],
    )
    # Another instance, loading the aggregate from the store, refuses a second revocation.
    [again] = await run(Registry(kernel), revoke)
    assert isinstance(again, CommandRejected) and again.code == "AUTHORIZATION_REVOKED"


async def test_authorizations_are_read_with_their_terms_in_force(kernel: Kernel, dev_issuer: DevIssuer) -> None:  # noqa: F811
    registry = Registry(kernel)
    terms = loa("LOA-TH-7", 4000)
    terms.cooperative_approach, terms.authorized_entities[:] = "JCM-JP-TH", ["Swiss buyer AG"]
    await run(registry, terms)
    await run(registry, loa("LOA-TH-8", 100))
    raised = pb.RecordAuthorization()
    raised.CopyFrom(terms)
    raised.quantity = 5000
    await run(registry, pb.ChangeAuthorization(authorization=raised, reason="more"))
    await run(registry, pb.RevokeAuthorization(authorization_id="LOA-TH-8", host_party="TH", reason="withdrawn"))
    broker = {"authorization": f"Bearer {dev_issuer.mint('broker-a', ['broker'], 'broker-a')}"}
    transport = httpx.ASGITransport(app=app_for(registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry", headers=broker) as client:
        one = (await client.get("/authorizations/LOA-TH-7")).json()
        assert (one["quantity"], one["version"], one["revoked"], one["use"]) == (5000, 2, False, "NDC")
        assert (one["cooperative_approach"], one["authorized_entities"]) == ("JCM-JP-TH", ["Swiss buyer AG"])
        first = (await client.get("/authorizations", params={"party": "TH", "limit": 1})).json()
        second = (await client.get("/authorizations", params={"party": "TH", "after": first["next"]})).json()
        assert [a["authorization_id"] for a in first["items"] + second["items"]] == ["LOA-TH-7", "LOA-TH-8"]
        assert second["items"][0]["revoked"] is True and second["next"] is None
        assert (await client.get("/authorizations", params={"party": "CH"})).json()["items"] == []
        unknown = await client.get("/authorizations/LOA-XX")
        assert (unknown.status_code, unknown.json()["code"]) == (404, "AUTHORIZATION_UNKNOWN")
        assert (await client.get("/authorizations/LOA-TH-7", headers={"authorization": ""})).status_code == 401
