"""An authorization's change and revocation on a real PostgreSQL: the projection holds the
terms in force, their version and the revocation, and an issuance under a revoked
authorization is refused on the path the service takes (the index's facts query)."""

from __future__ import annotations

from services.common.runtime import Kernel
from services.registry.service import Registry
from tests.integration.test_registry_state import issued, kernel, run  # noqa: F401 (fixture)
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
