"""Every completed registry transaction is an entry per account it touches, named by its
type code; holds (reservations) and what never completed are not transactions."""

from __future__ import annotations

from services.registry.domain.transactions import Entry, entries
from tests.unit.factories import issuance
from tonne.v1 import registry_pb2 as pb

BLOCK = issuance("I-1", "TH-GOV", 1, 100).block


def test_issuance_and_allocation() -> None:
    assert entries(pb.UnitsIssued(issuance_id="I-1", account_id="UN-PENDING", block=BLOCK)) == [
        Entry("I-1", "01-00", "UN-PENDING", "in", 100, blocks="JCM-TH:1-100")
    ]
    allocated = pb.UnitsAllocated(issuance_id="I-1", from_account_id="UN-PENDING")
    for account, start, end, cancelled in (
        ("UN-AF", 1, 5, False),
        ("UN-OMGE", 6, 7, True),
        ("UN-PENDING", 8, 8, False),
    ):
        share = allocated.allocations.add(account_id=account, cancelled=cancelled)
        share.block.CopyFrom(BLOCK)
        share.block.start, share.block.end = start, end
    assert [
        (e.transaction_type, e.account_id, e.direction, e.quantity, e.counterparty) for e in entries(allocated)
    ] == [
        ("01-01", "UN-PENDING", "out", 5, "UN-AF"),
        ("01-01", "UN-AF", "in", 5, "UN-PENDING"),
        ("01-01", "UN-PENDING", "out", 2, "UN-OMGE"),
        ("01-01", "UN-OMGE", "in", 2, "UN-PENDING"),
        ("04-03", "UN-OMGE", "out", 2, ""),  # cancelled on arrival
    ]


def test_transfers_in_and_out() -> None:
    moved = pb.UnitsTransferred(transfer_id="T-1", from_account_id="TH-GOV", to_account_id="CH-BUYER", quantity=100)
    moved.blocks.append(BLOCK)
    assert entries(moved) == [
        Entry("T-1", "10-00", "TH-GOV", "out", 100, "CH-BUYER", "JCM-TH:1-100"),
        Entry("T-1", "10-00", "CH-BUYER", "in", 100, "TH-GOV", "JCM-TH:1-100"),
    ]
    out = pb.ExternalTransferCompleted(
        transfer_id="X-1", account_id="TH-GOV", to_registry="SG", to_account="SG-7", quantity=100, blocks=[BLOCK]
    )
    assert entries(out) == [Entry("X-1", "03-00", "TH-GOV", "out", 100, "SG:SG-7", "JCM-TH:1-100")]
    arrived = pb.InboundTransferAccepted(
        transfer_id="X-2", from_registry="SG", from_account="SG-7", to_account_id="TH-GOV", quantity=100, blocks=[BLOCK]
    )
    assert entries(arrived) == [Entry("X-2", "03-00", "TH-GOV", "in", 100, "SG:SG-7", "JCM-TH:1-100")]


def test_uses_and_holds() -> None:
    retired = pb.UnitsRetired(retirement_id="R-1", account_id="CH-BUYER", quantity=100, blocks=[BLOCK])
    assert [e.transaction_type for e in entries(retired)] == ["05-00"]
    retired.cancelled, retired.cancellation = True, pb.CANCELLATION_MANDATORY
    assert [e.transaction_type for e in entries(retired)] == ["04-02"]
    expired = pb.UnitsExpired(expiry_id="E-1", account_id="CH-BUYER", quantity=100, blocks=[BLOCK])
    assert [(e.transaction_type, e.direction) for e in entries(expired)] == [("20-00", "out")]
    # Holds and proposals are not transactions.
    assert entries(pb.UnitsReserved(reservation_id="R", account_id="TH-GOV", quantity=1, blocks=[BLOCK])) == []
    assert entries(pb.ScreenProposal(proposal_id="R-2")) == []
    many = pb.UnitsRetired(retirement_id="R-3", account_id="CH-BUYER", quantity=30)
    many.blocks.extend(pb.SerialBlock(namespace="N", start=n, end=n) for n in range(1, 31))
    assert entries(many)[0].blocks.count(";") == 19  # at most 20 labels
