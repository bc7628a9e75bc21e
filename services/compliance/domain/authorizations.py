"""An authorization's usage: the aggregate that makes double claiming impossible.

A letter of authorization (LoA) lets its host party's units cross borders up to a
quantity. That quantity is spent by the *first* international transfer of each unit
(Article 6.2, the event an AT_FIRST_INTERNATIONAL_TRANSFER LoA names); resales of units
already first-transferred spend nothing. Compliance claims what a delivery may spend in
the transaction that approves it, on this aggregate (stream `authorization-<id>`), so
two deliveries screened at once serialise on the stream and can never both pass on one
remainder. The registry's transfer settles the claim with what it really first-transferred
(never more than claimed); a delivery that fails releases it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Self

from google.protobuf.message import Message

from services.common.aggregate import Aggregate
from services.common.serials import Interval, Runs
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as rpb

PREFIX = "authorization-"


def crosses_border(transfer: rpb.UnitsTransferred) -> bool:
    return transfer.from_jurisdiction != transfer.to_jurisdiction


def by_authorization(blocks: Iterable[rpb.SerialBlock]) -> dict[str, list[rpb.SerialBlock]]:
    """The authorized blocks among `blocks`, per authorization id, in their order."""
    found: dict[str, list[rpb.SerialBlock]] = defaultdict(list)
    for block in blocks:
        if block.attributes.authorization_id:
            found[block.attributes.authorization_id].append(block)
    return dict(found)


class AuthorizationUsage(Aggregate):
    SNAPSHOT_SCHEMA = 1

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.authorization_id = stream_id.removeprefix(PREFIX)
        self.first_transferred: dict[str, Runs] = defaultdict(Runs)  # namespace -> runs
        self.used = 0  # units first-transferred
        self.claims: dict[str, int] = {}  # request id -> units it may still spend

    @classmethod
    def of(cls, authorization_id: str) -> AuthorizationUsage:
        return cls(PREFIX + authorization_id)

    # --- reading ---

    def unspent(self, block: rpb.SerialBlock) -> list[Interval]:
        """The serials of `block` not first-transferred yet."""
        runs = self.first_transferred.get(block.namespace)
        return runs.missing((block.start, block.end)) if runs else [(block.start, block.end)]

    def fresh(self, blocks: Iterable[rpb.SerialBlock]) -> int:
        """Units of `blocks` not first-transferred yet: what moving them abroad would spend."""
        return sum(end - start + 1 for b in blocks for start, end in self.unspent(b))

    def left(self, authorized: int) -> int:
        """What the authorization can still spend: neither used nor claimed."""
        return authorized - self.used - sum(self.claims.values())

    # --- deciding (changes nothing) ---

    def claim(self, request_id: str, quantity: int) -> list[Message]:
        """Set `quantity` aside for an approved delivery (the screening checked `left`)."""
        if quantity <= 0 or request_id in self.claims:
            return []
        return [
            cpb.AuthorizationClaimed(authorization_id=self.authorization_id, request_id=request_id, quantity=quantity)
        ]

    def release(self, request_id: str, reason: str) -> list[Message]:
        """Give back the claim of a delivery that will not happen."""
        quantity = self.claims.get(request_id)
        if quantity is None:
            return []
        return [
            cpb.AuthorizationClaimReleased(
                authorization_id=self.authorization_id, request_id=request_id, quantity=quantity, reason=reason
            )
        ]

    def transferred(self, transfer: rpb.UnitsTransferred) -> list[Message]:
        """The registry moved units of this authorization abroad: spend those moved for the
        first time, and settle the claim made for this transfer."""
        if not crosses_border(transfer):
            return []
        blocks = by_authorization(transfer.blocks).get(self.authorization_id, [])
        ranges = [
            cpb.SerialRange(namespace=b.namespace, start=start, end=end)
            for b in sorted(blocks, key=lambda b: (b.namespace, b.start))
            for start, end in self.unspent(b)
        ]
        claim = self.claims.get(transfer.transfer_id, 0)
        if not ranges and not claim:
            return []
        return [
            cpb.AuthorizationFirstTransferred(
                authorization_id=self.authorization_id,
                transfer_id=transfer.transfer_id,
                ranges=ranges,
                quantity=sum(r.end - r.start + 1 for r in ranges),
                claim_settled=claim,
            )
        ]

    # --- folding what was recorded ---

    def apply(self, event: Message) -> None:
        match event:
            case cpb.AuthorizationClaimed():
                self.claims[event.request_id] = event.quantity
            case cpb.AuthorizationClaimReleased():
                self.claims.pop(event.request_id, None)
            case cpb.AuthorizationFirstTransferred():
                for r in event.ranges:
                    self.first_transferred[r.namespace].add((r.start, r.end))
                self.used += event.quantity
                self.claims.pop(event.transfer_id, None)

    def snapshot(self) -> bytes:
        state = cpb.AuthorizationUsageSnapshot(
            authorization_id=self.authorization_id,
            used=self.used,
            first_transferred=[
                cpb.SerialRange(namespace=namespace, start=start, end=end)
                for namespace in sorted(self.first_transferred)
                for start, end in self.first_transferred[namespace]
            ],
            claims=[
                cpb.AuthorizationUsageSnapshot.Claim(request_id=request_id, quantity=quantity)
                for request_id, quantity in sorted(self.claims.items())
            ],
        )
        return state.SerializeToString(deterministic=True)

    @classmethod
    def restore(cls, stream_id: str, state: bytes) -> Self:
        snapshot = cpb.AuthorizationUsageSnapshot.FromString(state)
        usage = cls(stream_id)
        usage.used = snapshot.used
        for r in snapshot.first_transferred:
            usage.first_transferred[r.namespace].add((r.start, r.end))
        usage.claims = {c.request_id: c.quantity for c in snapshot.claims}
        return usage
