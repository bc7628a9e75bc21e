"""Corresponding adjustments (Article 6.2): once per ITMO serial and side, at the event
its letter of authorization (LoA) names.

The first-transferring party (the LoA's host) adds the units to its emissions balance for
their vintage year when the LoA's `first_transfer` event happens:

- AT_AUTHORIZATION: when the LoA is recorded, for its whole quantity (no serials yet);
- AT_ISSUANCE: when authorized units are issued;
- AT_FIRST_INTERNATIONAL_TRANSFER: when they first cross a border (a trade's delivery or
  any other transfer abroad);
- AT_USE_OR_CANCELLATION: when they are retired or cancelled.

The acquiring party subtracts them when it uses them toward its NDC: a retirement whose
use is an NDC by an account of another jurisdiction than the host's.

`first_transferred` holds the serial runs already adjusted on the first-transferring side
(the service's index; only the runs overlapping the event's blocks are needed), so a
serial is adjusted once whatever path it takes; a retired serial never moves again, so the
acquiring side is adjusted once too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from google.protobuf.message import Message

from services.common.serials import Interval, subtract
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb

Loas = Mapping[str, rpb.RecordAuthorization]


def authorized(blocks: Iterable[rpb.SerialBlock]) -> list[rpb.SerialBlock]:
    return [b for b in blocks if b.attributes.authorization_id]


def serial_blocks(event: Message) -> list[rpb.SerialBlock]:
    """The authorized serials an event concerns, if it can owe an adjustment for them."""
    match event:
        case rpb.UnitsIssued():
            return authorized([event.block])
        case rpb.UnitsTransferred() if event.from_jurisdiction != event.to_jurisdiction:
            return authorized(event.blocks)
        case rpb.UnitsRetired():
            return authorized(event.blocks)
        case rpb.UnitsAllocated():
            # An issuance's share allocated abroad (a JCM split with Japan's side) crosses a border.
            return authorized(a.block for a in event.allocations if a.jurisdiction != a.block.attributes.host_party)
    return []


def added(changed: rpb.RecordAuthorization, before: rpb.RecordAuthorization | None) -> rpb.RecordAuthorization | None:
    """The tonnes a change of terms adds, as an authorization of them alone: what an
    authorization that is itself the first transfer owes (and AEF reports) at the change."""
    more = changed.quantity - (before.quantity if before is not None else 0)
    if more <= 0:
        return None
    widened = rpb.RecordAuthorization()
    widened.CopyFrom(changed)
    widened.quantity = more
    return widened


def owed(event: Message, source: str, loas: Loas, first_transferred: Mapping[str, Sequence[Interval]]) -> list[Message]:
    """The adjustments `event` causes (`source`: the trade or operation it belongs to)."""
    match event:
        case rpb.AuthorizationRecorded():
            loa = event.authorization
            if loa.first_transfer != rpb.AT_AUTHORIZATION:
                return []
            return [
                _adjustment(source, loa.host_party, spb.FIRST_TRANSFERRING, loa.vintage_from, loa, loa.quantity, [])
            ]
        case rpb.UnitsIssued():
            return _first_transferring(source, serial_blocks(event), loas, first_transferred, rpb.AT_ISSUANCE)
        case rpb.UnitsTransferred() | rpb.UnitsAllocated():
            trigger = rpb.AT_FIRST_INTERNATIONAL_TRANSFER
            return _first_transferring(source, serial_blocks(event), loas, first_transferred, trigger)
        case rpb.UnitsRetired():
            blocks = serial_blocks(event)
            used = _first_transferring(source, blocks, loas, first_transferred, rpb.AT_USE_OR_CANCELLATION)
            if event.use == rpb.CLAIM_NDC and not event.cancelled:
                used += _acquiring(source, event.jurisdiction, blocks, loas)
            return used
    return []


def _first_transferring(
    source: str,
    blocks: list[rpb.SerialBlock],
    loas: Loas,
    first_transferred: Mapping[str, Sequence[Interval]],
    trigger: rpb.FirstTransfer.ValueType,
) -> list[Message]:
    """The host's adjustment for the serials of LoAs naming `trigger` not adjusted yet."""
    fresh: dict[tuple[str, int, str], list[rpb.SerialBlock]] = defaultdict(list)
    for block in blocks:
        loa = loas.get(block.attributes.authorization_id)
        if loa is None or loa.first_transfer != trigger:
            continue
        for start, end in subtract((block.start, block.end), first_transferred.get(block.namespace, ())):
            key = (block.attributes.host_party, block.attributes.vintage, loa.authorization_id)
            fresh[key].append(rpb.SerialBlock(namespace=block.namespace, start=start, end=end))
    return [
        _adjustment(source, party, spb.FIRST_TRANSFERRING, vintage, loas[loa_id], _units(serials), serials)
        for (party, vintage, loa_id), serials in sorted(fresh.items())
    ]


def _acquiring(source: str, party: str, blocks: list[rpb.SerialBlock], loas: Loas) -> list[Message]:
    """The acquiring party's adjustment for ITMOs it uses toward its NDC."""
    used: dict[tuple[int, str], list[rpb.SerialBlock]] = defaultdict(list)
    for block in blocks:
        loa = loas.get(block.attributes.authorization_id)
        if loa is not None and party != block.attributes.host_party:
            serial = rpb.SerialBlock(namespace=block.namespace, start=block.start, end=block.end)
            used[(block.attributes.vintage, loa.authorization_id)].append(serial)
    return [
        _adjustment(source, party, spb.ACQUIRING, vintage, loas[loa_id], _units(serials), serials)
        for (vintage, loa_id), serials in sorted(used.items())
    ]


def _units(serials: Iterable[rpb.SerialBlock]) -> int:
    return sum(s.end - s.start + 1 for s in serials)


def _adjustment(
    source: str,
    party: str,
    side: spb.AdjustmentSide.ValueType,
    vintage: int,
    loa: rpb.RecordAuthorization,
    quantity: int,
    serials: list[rpb.SerialBlock],
) -> spb.CorrespondingAdjustmentApplied:
    suffix = ":acquiring" if side == spb.ACQUIRING else ""
    return spb.CorrespondingAdjustmentApplied(
        adjustment_id=f"{source}:{party}:{vintage}:{loa.authorization_id}{suffix}",
        trade_id=source,
        party=party,
        side=side,
        vintage=vintage,
        quantity=quantity,
        authorization_id=loa.authorization_id,
        event=rpb.AT_USE_OR_CANCELLATION if side == spb.ACQUIRING else loa.first_transfer,
        serials=serials,
    )
