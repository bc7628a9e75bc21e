"""Issuance goes through the transaction log too (transaction 01-00): decided when asked
(what is wrong already is refused then), proposed, and decided again once approved, since
another issuance may have taken its serials meanwhile; refused or unanswered, nothing is
issued and nothing was held."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from services.registry.domain import screening
from services.registry.domain.memory import MemoryRegistry
from tests.unit.factories import issuance, open_account, screened
from tests.unit.test_registry_fingerprint import refused
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as pb


@pytest.fixture
def registry() -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.execute(open_account("TH-GOV", "TH", pb.GOVERNMENT))
    return registry


def approve(registry: MemoryRegistry, proposal_id: str, verdict: cpb.Verdict.ValueType = cpb.APPROVED) -> list[Message]:
    return registry.execute(cpb.ProposalScreened(proposal_id=proposal_id, account_id="TH-GOV", verdict=verdict))


def test_an_issuance_is_proposed_then_issued_once_approved(registry: MemoryRegistry) -> None:
    [proposal] = registry.execute(issuance("I-1", "TH-GOV", 1, 100))
    assert isinstance(proposal, pb.ScreenProposal)
    assert (proposal.transaction_type, proposal.quantity, proposal.jurisdiction) == ("01-00", 100, "TH")
    assert proposal.issuance.issuance_id == "I-1" and list(proposal.blocks) == [proposal.issuance.block]
    assert registry.index.available("TH-GOV", pb.UnitSelector()) == 0  # nothing issued, nothing held
    assert refused(registry, issuance("I-1", "TH-GOV", 201, 300)).code == "SEQUENCE_DUPLICATE_ID"
    [issued] = approve(registry, "I-1")
    assert isinstance(issued, pb.UnitsIssued)
    assert registry.index.available("TH-GOV", pb.UnitSelector()) == 100
    assert registry.accounts["TH-GOV"].screening == {}
    assert approve(registry, "I-1") == []  # answered already


def test_the_later_of_two_overlapping_proposals_is_refused_at_approval(registry: MemoryRegistry) -> None:
    registry.execute(issuance("I-1", "TH-GOV", 1, 100))
    registry.execute(issuance("I-2", "TH-GOV", 51, 150))  # nothing issued yet: both proposed
    approve(registry, "I-1")
    [rejected] = approve(registry, "I-2")
    assert isinstance(rejected, pb.ProposalRejected)
    assert (rejected.code, rejected.proposal_id) == ("DOUBLE_ISSUANCE_OVERLAP", "I-2")
    assert registry.index.available("TH-GOV", pb.UnitSelector()) == 100


@pytest.mark.parametrize("outcome", ["rejected", "timed out"])
def test_a_refused_or_unanswered_issuance_issues_nothing(registry: MemoryRegistry, outcome: str) -> None:
    registry.execute(issuance("I-1", "TH-GOV", 1, 100))
    if outcome == "rejected":
        events = approve(registry, "I-1", cpb.REJECTED)
    else:
        registry.now += screening.WINDOW
        events = registry.execute(pb.ExpireProposal(proposal_id="I-1", account_id="TH-GOV"))
    [rejected] = events  # no ReservationReleased: nothing was held
    assert isinstance(rejected, pb.ProposalRejected)
    assert rejected.code == ("SCREENING_REJECTED" if outcome == "rejected" else "SCREENING_TIMEOUT")
    assert registry.index.blocks("JCM-TH") == []
    # Its id stays spent: a proposal is answered once.
    assert refused(registry, issuance("I-1", "TH-GOV", 1, 100)).code == "SEQUENCE_DUPLICATE_ID"
    assert screened(registry, issuance("I-2", "TH-GOV", 1, 100))
