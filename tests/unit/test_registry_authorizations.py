"""A host party's authorization changes and ends by events: a change only widens it (more
tonnes, more vintages, other entities) and keeps its use and first-transfer event; a
revocation stops issuance under it; each needs the host party and a reason."""

from __future__ import annotations

import pytest

from services.common.errors import DomainError
from services.registry.domain.ledger import bind
from services.registry.domain.memory import MemoryRegistry
from tests.unit.factories import issuance, loa, open_account, screened
from tests.unit.test_registry_fingerprint import refused
from tonne.v1 import registry_pb2 as pb


@pytest.fixture
def registry() -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.execute(open_account("TH-GOV", "TH", pb.GOVERNMENT))
    registry.execute(loa("LOA-TH-1", 4000))
    return registry


def change(entities: list[str] | None = None, /, **terms: int | str) -> pb.ChangeAuthorization:
    new = loa("LOA-TH-1", 4000)
    for name, value in terms.items():
        setattr(new, name, value)
    new.authorized_entities.extend(entities or [])
    return pb.ChangeAuthorization(authorization=new, reason="Joint Committee raised the amount")


def test_a_change_widens_the_terms_and_counts_their_versions(registry: MemoryRegistry) -> None:
    [changed] = registry.execute(change(["Swiss buyer AG"], quantity=6000, vintage_to=2031))
    assert isinstance(changed, pb.AuthorizationChanged)
    assert (changed.version, changed.authorization.quantity) == (2, 6000)
    [again] = registry.execute(change(quantity=6500, vintage_to=2031))
    assert again.version == 3  # type: ignore[attr-defined]
    held = registry.authorizations["LOA-TH-1"]
    assert (held.terms_version, held.authorization.quantity if held.authorization else 0) == (3, 6500)
    # Its snapshot keeps both.
    restored = type(held).restore(held.stream_id, held.snapshot())
    assert (restored.terms_version, restored.revoked) == (3, False)


@pytest.mark.parametrize(
    ("terms", "evidence"),
    [
        ({"quantity": 3999}, []),
        ({"vintage_from": 2022}, []),
        ({"vintage_to": 2029}, []),
        ({"use": pb.NDC_AND_OIMP}, ["use"]),
        ({"first_transfer": pb.AT_ISSUANCE}, ["first_transfer"]),
        ({"cooperative_approach": "JCM-JP-TH-2"}, ["cooperative_approach"]),
    ],
)
def test_a_change_never_narrows_nor_rewrites_what_was_counted(
    registry: MemoryRegistry, terms: dict[str, int | str], evidence: list[str]
) -> None:
    error = refused(registry, change(**terms))
    assert (error.code, error.evidence) == ("AUTHORIZATION_INVALID", evidence)


def test_a_revocation_stops_issuance_and_further_changes(registry: MemoryRegistry) -> None:
    screened(registry, issuance("I-1", "TH-GOV", 1, 100, authorization_id="LOA-TH-1"))
    revoke = pb.RevokeAuthorization(authorization_id="LOA-TH-1", host_party="TH", reason="project withdrawn")
    [revoked] = registry.execute(revoke)
    assert isinstance(revoked, pb.AuthorizationRevoked) and revoked.host_party == "TH"
    issued = refused(registry, issuance("I-2", "TH-GOV", 101, 200, authorization_id="LOA-TH-1"))
    assert (issued.code, issued.evidence) == ("AUTHORIZATION_REVOKED", ["LOA-TH-1"])
    assert refused(registry, revoke).code == "AUTHORIZATION_REVOKED"
    assert refused(registry, change(quantity=5000)).code == "AUTHORIZATION_REVOKED"
    assert registry.index.available("TH-GOV", pb.UnitSelector()) == 100  # what was issued stays


def test_only_the_host_party_with_a_reason_changes_or_revokes(registry: MemoryRegistry) -> None:
    unknown = refused(registry, pb.RevokeAuthorization(authorization_id="LOA-X", host_party="TH", reason="x"))
    assert (unknown.code, unknown.evidence) == ("AUTHORIZATION_UNKNOWN", ["LOA-X"])
    other = refused(registry, pb.RevokeAuthorization(authorization_id="LOA-TH-1", host_party="CH", reason="x"))
    assert other.code == "AUTHORIZATION_PARTY_MISMATCH"
    assert refused(registry, pb.RevokeAuthorization(authorization_id="LOA-TH-1", host_party="TH")).code == (
        "AUTHORIZATION_INVALID"
    )
    silent = change(quantity=5000)
    silent.reason = ""
    assert refused(registry, silent).code == "AUTHORIZATION_INVALID"
    # A national registry's channel acts for its own party only.
    with pytest.raises(DomainError) as caught:
        bind("CH", change(quantity=5000), None)
    assert caught.value.code == "CHANNEL_JURISDICTION_MISMATCH"
