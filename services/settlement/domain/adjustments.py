"""Corresponding adjustments: exactly one per ITMO serial, on the event its LoA names."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb

Interval = tuple[int, int]  # serials [start, end], inclusive


def subtract(interval: Interval, taken: Iterable[Interval]) -> list[Interval]:
    """The parts of `interval` that no interval in `taken` covers, in serial order.

    One sweep over `taken` sorted by start: O(k log k) for k intervals, whether or not
    they overlap each other."""
    start, end = interval
    pieces: list[Interval] = []
    for t_start, t_end in sorted(taken):
        if t_end < start or end < t_start:
            continue
        if start < t_start:
            pieces.append((start, t_start - 1))
        start = t_end + 1
        if start > end:
            return pieces
    pieces.append((start, end))
    return pieces


def absorb(interval: Interval, touching: Iterable[Interval]) -> Interval:
    """`interval` merged with the index intervals that overlap or adjoin it: the index
    keeps maximal runs, so it is disjoint and the same whatever order transfers came in."""
    start, end = interval
    for t_start, t_end in touching:
        start, end = min(start, t_start), max(end, t_end)
    return start, end


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
