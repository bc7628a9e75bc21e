"""Corresponding adjustments: exactly one per ITMO serial, on the event its LoA names."""

from __future__ import annotations

from collections import defaultdict

from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb

Interval = tuple[int, int]


def subtract(interval: Interval, taken: list[Interval]) -> list[Interval]:
    """The parts of `interval` that no interval in `taken` covers."""
    pieces = [interval]
    for t_start, t_end in taken:
        next_pieces = []
        for start, end in pieces:
            if t_end < start or end < t_start:
                next_pieces.append((start, end))
                continue
            if start < t_start:
                next_pieces.append((start, t_start - 1))
            if t_end < end:
                next_pieces.append((t_end + 1, end))
        pieces = next_pieces
    return pieces


def first_transfer_adjustments(
    trade_id: str,
    transfer: rpb.UnitsTransferred,
    authorizations: dict[str, rpb.RecordAuthorization],
    first_transferred: dict[str, list[Interval]],
) -> list[spb.CorrespondingAdjustmentApplied]:
    """Adjustments the host party owes for this transfer's serials that are being
    first-transferred now: international transfer of units whose LoA names the first
    international transfer, and not adjusted before. One event per (party, vintage, LoA)."""
    if transfer.from_jurisdiction == transfer.to_jurisdiction:
        return []
    owed: dict[tuple[str, int, str], int] = defaultdict(int)
    for block in transfer.blocks:
        attributes = block.attributes
        loa = authorizations.get(attributes.authorization_id)
        if loa is None or loa.first_transfer != rpb.AT_FIRST_INTERNATIONAL_TRANSFER:
            continue
        fresh = subtract((block.start, block.end), first_transferred.get(block.namespace, []))
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
