"""The registry's completed transactions, as a holder's statement lists them: each named by
its Kyoto-style primary-supplementary type code (docs/registry-transaction-types.md), one
entry per account it touches. Reservations are holds, not transactions: they have none.
Pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from tonne.v1 import registry_pb2 as pb

ISSUANCE = "01-00"
ALLOCATION = "01-01"  # an issuance's share the programme's rules allocate to another account
EXTERNAL_TRANSFER = "03-00"
CANCELLATIONS = {
    pb.CANCELLATION_VOLUNTARY: "04-01",
    pb.CANCELLATION_MANDATORY: "04-02",
    pb.CANCELLATION_OMGE: "04-03",
}
RETIREMENT = "05-00"
INTERNAL_TRANSFER = "10-00"
EXPIRY = "20-00"
LABELS_MAX = 20


@dataclass(frozen=True, slots=True)
class Entry:
    transaction_id: str
    transaction_type: str
    account_id: str
    direction: str  # "in": units arrive in the account; "out": they leave it or leave circulation
    quantity: int
    counterparty: str = ""  # the other account, or "<registry>:<account>" for another registry's
    blocks: str = ""  # "<namespace>:<start>-<end>", at most LABELS_MAX, "; "-separated


def labels(blocks: Iterable[pb.SerialBlock]) -> str:
    return "; ".join(f"{b.namespace}:{b.start}-{b.end}" for b in list(blocks)[:LABELS_MAX])


def entries(event: Message) -> list[Entry]:
    """The entries a recorded event makes: none for what is not a completed transaction."""
    match event:
        case pb.UnitsIssued():
            qty = event.block.end - event.block.start + 1
            return [Entry(event.issuance_id, ISSUANCE, event.account_id, "in", qty, blocks=labels([event.block]))]
        case pb.UnitsAllocated():
            return [e for allocation in event.allocations for e in _allocated(event, allocation)]
        case pb.UnitsTransferred():
            return _both(INTERNAL_TRANSFER, event.transfer_id, event.from_account_id, event.to_account_id, event.blocks)
        case pb.UnitsRetired():
            kind = CANCELLATIONS.get(event.cancellation, "04-01") if event.cancelled else RETIREMENT
            return [
                Entry(event.retirement_id, kind, event.account_id, "out", event.quantity, blocks=labels(event.blocks))
            ]
        case pb.UnitsExpired():
            return [
                Entry(event.expiry_id, EXPIRY, event.account_id, "out", event.quantity, blocks=labels(event.blocks))
            ]
        case pb.ExternalTransferCompleted():
            to = f"{event.to_registry}:{event.to_account}"
            return [
                Entry(
                    event.transfer_id,
                    EXTERNAL_TRANSFER,
                    event.account_id,
                    "out",
                    event.quantity,
                    to,
                    labels(event.blocks),
                )
            ]
        case pb.InboundTransferAccepted():
            arrived = [*event.blocks, *(r.block for r in event.returning)]
            source = f"{event.from_registry}:{event.from_account}"
            return [
                Entry(
                    event.transfer_id,
                    EXTERNAL_TRANSFER,
                    event.to_account_id,
                    "in",
                    event.quantity,
                    source,
                    labels(arrived),
                )
            ]
    return []


def _allocated(event: pb.UnitsAllocated, allocation: pb.Allocation) -> list[Entry]:
    """A share moved from the account the block was issued to: out of it and into the
    role's account; a share cancelled on arrival (OMGE) is that account's cancellation too."""
    if allocation.account_id == event.from_account_id:
        return []
    block = allocation.block
    moved = _both(ALLOCATION, event.issuance_id, event.from_account_id, allocation.account_id, [block])
    if not allocation.cancelled:
        return moved
    quantity = block.end - block.start + 1
    omge = CANCELLATIONS[pb.CANCELLATION_OMGE]
    return [*moved, Entry(event.issuance_id, omge, allocation.account_id, "out", quantity, blocks=labels([block]))]


def _both(kind: str, transaction_id: str, source: str, target: str, blocks: Sequence[pb.SerialBlock]) -> list[Entry]:
    quantity = sum(b.end - b.start + 1 for b in blocks)
    shown = labels(blocks)
    return [
        Entry(transaction_id, kind, source, "out", quantity, target, shown),
        Entry(transaction_id, kind, target, "in", quantity, source, shown),
    ]
