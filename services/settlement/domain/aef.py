"""Article 6.2 reporting in the agreed electronic format (AEF): the actions each registry
event makes (table 3), and the consistency checks a report must pass before a party
submits it (in the spirit of the UN's CARP checks).

An action is reported by each participating party it concerns: a first transfer abroad is
the host's "First transfer" and the acquirer's "Acquisition"; a later transfer abroad is
the seller's "Transfer" and the buyer's "Acquisition"; a retirement for NDC or OIMP is the
retiring party's "Use"; a cancellation (voluntary, OMGE) its "Cancellation".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from google.protobuf.message import Message

from services.settlement.domain.adjustments import serial_blocks
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb

Action = spb.ItmoAction


def actions(event: Message, source: str, year: int, owed: Sequence[Message]) -> list[Action]:
    """The AEF actions of one registry event; `owed` its adjustments (what it
    first-transferred)."""
    match event:
        case rpb.AuthorizationRecorded():
            loa = event.authorization
            return [
                Action(
                    action_id=f"{source}:authorization",
                    party=loa.host_party,
                    year=year,
                    action=spb.ITMO_AUTHORIZATION,
                    authorization_id=loa.authorization_id,
                    first_transferring_party=loa.host_party,
                    vintage=loa.vintage_from,
                    quantity=loa.quantity,
                    purpose=rpb.AuthorizedUse.Name(loa.use),
                    source=source,
                )
            ]
        case rpb.UnitsTransferred():
            first = _first_transferred(owed)
            return _moved(serial_blocks(event), event.from_jurisdiction, event.to_jurisdiction, source, year, first)
        case rpb.UnitsAllocated():
            # An issuance's share allocated abroad (Japan's side of a JCM split) leaves the
            # host for the allocation's party: a (first) transfer and an acquisition.
            first = _first_transferred(owed)
            return [
                action
                for n, allocation in enumerate(event.allocations)
                if allocation.block in serial_blocks(event)
                for action in _moved(
                    [allocation.block],
                    allocation.block.attributes.host_party,
                    allocation.jurisdiction,
                    source,
                    year,
                    first,
                    f"a{n}.",
                )
            ]
        case rpb.UnitsRetired():
            kind = spb.ITMO_CANCELLATION if event.cancelled else spb.ITMO_USE
            return [
                _action(source, year, n, event.jurisdiction, kind, block, purpose=claim(event))
                for n, block in enumerate(serial_blocks(event))
            ]
    return []


def claim(retired: rpb.UnitsRetired) -> str:
    """The AEF purpose of a use: NDC, OIMP or VOLUNTARY ("" for a cancellation)."""
    return rpb.ClaimUse.Name(retired.use).removeprefix("CLAIM_") if retired.use else ""


def _first_transferred(owed: Sequence[Message]) -> dict[str, list[tuple[int, int]]]:
    ranges: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for adjustment in owed:
        if isinstance(adjustment, spb.CorrespondingAdjustmentApplied) and adjustment.side == spb.FIRST_TRANSFERRING:
            for serial in adjustment.serials:
                ranges[serial.namespace].append((serial.start, serial.end))
    return ranges


def _moved(
    blocks: Sequence[rpb.SerialBlock],
    transferring: str,
    acquiring: str,
    source: str,
    year: int,
    first: Mapping[str, list[tuple[int, int]]],
    prefix: str = "",
) -> list[Action]:
    """Authorized blocks that crossed from one party to another: each piece a first
    transfer (where this event first-transferred it) or a transfer, and an acquisition."""
    found: list[Action] = []
    parties = {"transferring": transferring, "acquiring": acquiring}
    for n, block in enumerate(blocks):
        for m, (start, end, is_first) in enumerate(_split(block, first.get(block.namespace, []))):
            piece = rpb.SerialBlock(namespace=block.namespace, start=start, end=end, attributes=block.attributes)
            kind = spb.ITMO_FIRST_TRANSFER if is_first else spb.ITMO_TRANSFER
            key = f"{prefix}{n}.{m}"
            found.append(_action(source, year, key, transferring, kind, piece, **parties))
            found.append(_action(source, year, key, acquiring, spb.ITMO_ACQUISITION, piece, **parties))
    return found


def _split(block: rpb.SerialBlock, first: Iterable[tuple[int, int]]) -> list[tuple[int, int, bool]]:
    """The block in serial order as pieces first-transferred by this event or not."""
    cuts = sorted((max(s, block.start), min(e, block.end)) for s, e in first if s <= block.end and e >= block.start)
    pieces: list[tuple[int, int, bool]] = []
    at = block.start
    for start, end in cuts:
        if at < start:
            pieces.append((at, start - 1, False))
        pieces.append((start, end, True))
        at = end + 1
    if at <= block.end:
        pieces.append((at, block.end, False))
    return pieces


def _action(
    source: str,
    year: int,
    key: object,
    party: str,
    kind: spb.ItmoActionType.ValueType,
    block: rpb.SerialBlock,
    transferring: str = "",
    acquiring: str = "",
    purpose: str = "",
) -> Action:
    a = block.attributes
    underlying = None
    if a.underlying_namespace:  # both ID ranges: the ITMO's, and its units' in the crediting registry
        offset = a.underlying_offset
        underlying = rpb.SerialBlock(
            namespace=a.underlying_namespace, start=block.start + offset, end=block.end + offset
        )
    return Action(
        action_id=f"{source}:{key}:{party}:{spb.ItmoActionType.Name(kind)}",
        party=party,
        year=year,
        action=kind,
        authorization_id=a.authorization_id,
        first_transferring_party=a.host_party,
        transferring_party=transferring,
        acquiring_party=acquiring,
        serials=rpb.SerialBlock(namespace=block.namespace, start=block.start, end=block.end),
        vintage=a.vintage,
        quantity=block.end - block.start + 1,
        purpose=purpose,
        source=source,
        underlying_registry=a.underlying_registry,
        underlying=underlying,
    )


# --- the checks a report passes ---


@dataclass(frozen=True)
class Finding:
    code: str
    detail: str
    rows: tuple[str, ...]  # action ids (table 3) or authorization ids (table 2)


def check(
    party: str,
    year: int,
    authorizations: Mapping[str, rpb.RecordAuthorization],
    history: Sequence[Action],
    ledger: Mapping[tuple[int, int], int],
) -> list[Finding]:
    """Findings of the party's report for `year`. `authorizations`: every LoA the actions
    name; `history`: the party's actions of every year up to `year` (holdings and
    authorization use accumulate); `ledger`: its adjustments of the year's actions, by
    (vintage, side)."""
    findings: list[Finding] = []
    this_year = [a for a in history if a.year == year]
    for a in this_year:
        if a.action == spb.ITMO_FIRST_TRANSFER and a.authorization_id not in authorizations:
            findings.append(
                Finding("FIRST_TRANSFER_UNAUTHORIZED", "no authorization for a first transfer", (a.action_id,))
            )
    spent: dict[str, int] = defaultdict(int)
    for a in history:
        if a.action == spb.ITMO_FIRST_TRANSFER:
            spent[a.authorization_id] += a.quantity
    for loa_id, quantity in sorted(spent.items()):
        loa = authorizations.get(loa_id)
        if loa is not None and quantity > loa.quantity:
            detail = f"{quantity} first-transferred under {loa.quantity} authorized"
            findings.append(Finding("AUTHORIZATION_EXCEEDED", detail, (loa_id,)))
    findings += _used_twice(history)
    findings += _adjustments_match(this_year, authorizations, ledger)
    for (namespace, vintage), held in sorted(holdings(history).items()):
        if held < 0:
            findings.append(Finding("HOLDINGS_NEGATIVE", f"{namespace} vintage {vintage}: {held}", ()))
    return findings


def _used_twice(history: Sequence[Action]) -> list[Finding]:
    ended = sorted(
        (a.serials.namespace, a.serials.start, a.serials.end, a.action_id)
        for a in history
        if a.action in (spb.ITMO_USE, spb.ITMO_CANCELLATION)
    )
    return [
        Finding("ITMO_USED_TWICE", f"{ns}:{start}-{end} used or cancelled again", (before, after))
        for (prev_ns, _, prev_end, before), (ns, start, end, after) in pairwise(ended)
        if ns == prev_ns and start <= prev_end
    ]


def _adjustments_match(
    this_year: Sequence[Action],
    authorizations: Mapping[str, rpb.RecordAuthorization],
    ledger: Mapping[tuple[int, int], int],
) -> list[Finding]:
    """The year's adjustments equal its first transfers (serial-based LoAs) and NDC uses."""
    reported: dict[tuple[int, int], int] = defaultdict(int)
    for a in this_year:
        loa = authorizations.get(a.authorization_id)
        serial_based = loa is not None and loa.first_transfer == rpb.AT_FIRST_INTERNATIONAL_TRANSFER
        if a.action == spb.ITMO_FIRST_TRANSFER and serial_based:
            reported[(a.vintage, spb.FIRST_TRANSFERRING)] += a.quantity
        elif a.action == spb.ITMO_USE and a.purpose == "NDC":
            reported[(a.vintage, spb.ACQUIRING)] += a.quantity
    return [
        Finding(
            "ADJUSTMENT_MISMATCH",
            f"vintage {vintage}: actions {reported.get((vintage, side), 0)}, "
            f"adjustments {ledger.get((vintage, side), 0)}",
            (),
        )
        for vintage, side in sorted(set(reported) | set(ledger))
        if reported.get((vintage, side), 0) != ledger.get((vintage, side), 0)
    ]


# How each action moves the reporting party's ITMO holdings.
_HELD = {spb.ITMO_ACQUISITION: 1, spb.ITMO_TRANSFER: -1, spb.ITMO_USE: -1, spb.ITMO_CANCELLATION: -1}


def holdings(history: Iterable[Action]) -> dict[tuple[str, int], int]:
    """Table 4: ITMOs the party holds at the end of the history, by namespace and vintage:
    acquired, less transferred on, used and cancelled. A host using or cancelling its own
    units (never acquired) holds no ITMOs for them."""
    held: dict[tuple[str, int], int] = defaultdict(int)
    for a in history:
        own = a.action in (spb.ITMO_USE, spb.ITMO_CANCELLATION) and a.party == a.first_transferring_party
        if a.action in _HELD and not own:
            held[(a.serials.namespace, a.vintage)] += _HELD[a.action] * a.quantity
    return dict(held)
