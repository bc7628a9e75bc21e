"""Corresponding adjustments: exactly one per ITMO serial, on the event its LoA names."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from services.common.serials import Interval, subtract
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb


def owes_first_transfer(transfer: rpb.UnitsTransferred) -> bool:
    """An international transfer: the event an AT_FIRST_INTERNATIONAL_TRANSFER LoA names."""
    return transfer.from_jurisdiction != transfer.to_jurisdiction


def authorized_blocks(transfer: rpb.UnitsTransferred) -> list[rpb.SerialBlock]:
    """The blocks of an international transfer that are authorized (ITMO candidates):
    what the first-transferred index records."""
    if not owes_first_transfer(transfer):
        return []
    return [b for b in transfer.blocks if b.attributes.authorization_id]


def first_transfer_adjustments(
    trade_id: str,
    transfer: rpb.UnitsTransferred,
    authorizations: Mapping[str, rpb.RecordAuthorization],
    first_transferred: Mapping[str, Sequence[Interval]],
) -> list[spb.CorrespondingAdjustmentApplied]:
    """Adjustments the host party owes for this transfer's serials that are being
    first-transferred now: international transfer of units whose LoA names the first
    international transfer, and not adjusted before. One event per (party, vintage, LoA).

    `first_transferred` needs only the intervals of each namespace that overlap this
    transfer's blocks (the service loads them from its index); more do no harm."""
    if not owes_first_transfer(transfer):
        return []
    owed: dict[tuple[str, int, str], int] = defaultdict(int)
    for block in transfer.blocks:
        attributes = block.attributes
        loa = authorizations.get(attributes.authorization_id)
        if loa is None or loa.first_transfer != rpb.AT_FIRST_INTERNATIONAL_TRANSFER:
            continue
        fresh = subtract((block.start, block.end), first_transferred.get(block.namespace, ()))
        quantity = sum(end - start + 1 for start, end in fresh)
        if quantity:
            owed[(attributes.host_party, attributes.vintage, loa.authorization_id)] += quantity
    return [
        spb.CorrespondingAdjustmentApplied(
            adjustment_id=f"{trade_id}:{party}:{vintage}:{authorization_id}",
            trade_id=trade_id,
            party=party,
            side=spb.FIRST_TRANSFERRING,
            vintage=vintage,
            quantity=quantity,
            authorization_id=authorization_id,
        )
        for (party, vintage, authorization_id), quantity in sorted(owed.items())
    ]
