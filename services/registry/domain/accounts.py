"""The registry's aggregates: an account (stream "account-<id>") and a host party's
authorization (stream "authorization-<id>").

Every command that changes an account's holdings appends to that account's stream
(a transfer to the source's), so its writers serialise on the stream's version. The
account knows its identity, the balance of each open reservation and the mandates it
gives brokers; its blocks live in the block index (docs/decisions/0007-registry-index.md).
"""

from __future__ import annotations

from typing import NamedTuple, Self

from google.protobuf.message import Message

from services.common.aggregate import Aggregate
from tonne.v1 import registry_pb2 as pb


class AccountRef(NamedTuple):
    """An account a decision only names (a transfer's target): its identity, which never
    changes once opened."""

    account_id: str
    jurisdiction: str


class Account(Aggregate):
    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.account_id = ""
        self.holder = ""
        self.jurisdiction = ""
        self.type: pb.AccountType.ValueType = pb.ACCOUNT_TYPE_UNSPECIFIED
        self.reservations: dict[str, int] = {}  # open reservation id -> units still reserved
        self.mandates: dict[str, str] = {}  # mandate id -> the broker it names

    @property
    def opened(self) -> bool:
        return bool(self.account_id)

    @property
    def ref(self) -> AccountRef:
        return AccountRef(self.account_id, self.jurisdiction)

    @property
    def reserved(self) -> int:
        return sum(self.reservations.values())

    def apply(self, event: Message) -> None:
        match event:
            case pb.AccountOpened():
                self.account_id, self.holder = event.account_id, event.holder
                self.jurisdiction, self.type = event.jurisdiction, event.type
            case pb.UnitsReserved():
                self.reservations[event.reservation_id] = event.quantity
            case pb.ReservationReleased() | pb.UnitsTransferred():
                left = self.reservations.pop(event.reservation_id) - event.quantity
                if left:
                    self.reservations[event.reservation_id] = left
            case pb.MandateGranted():
                self.mandates[event.mandate_id] = event.broker_id
            case pb.MandateRevoked():
                del self.mandates[event.mandate_id]

    def snapshot(self) -> bytes:
        message = pb.AccountSnapshot(
            account_id=self.account_id,
            holder=self.holder,
            jurisdiction=self.jurisdiction,
            type=self.type,
            reservations=[
                pb.ReservationBalance(reservation_id=r, quantity=q) for r, q in sorted(self.reservations.items())
            ],
            mandates=[pb.MandateEntry(mandate_id=m, broker_id=b) for m, b in sorted(self.mandates.items())],
        )
        return message.SerializeToString(deterministic=True)

    @classmethod
    def restore(cls, stream_id: str, state: bytes) -> Self:
        message = pb.AccountSnapshot.FromString(state)
        account = cls(stream_id)
        account.account_id, account.holder = message.account_id, message.holder
        account.jurisdiction, account.type = message.jurisdiction, message.type
        account.reservations = {r.reservation_id: r.quantity for r in message.reservations}
        account.mandates = {m.mandate_id: m.broker_id for m in message.mandates}
        return account


class Authorization(Aggregate):
    """A host party's Letter of Authorization, as recorded."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.authorization: pb.RecordAuthorization | None = None

    def apply(self, event: Message) -> None:
        if isinstance(event, pb.AuthorizationRecorded):
            self.authorization = event.authorization

    def snapshot(self) -> bytes:
        return pb.AuthorizationSnapshot(authorization=self.authorization).SerializeToString(deterministic=True)

    @classmethod
    def restore(cls, stream_id: str, state: bytes) -> Self:
        message = pb.AuthorizationSnapshot.FromString(state)
        authorization = cls(stream_id)
        authorization.authorization = message.authorization if message.HasField("authorization") else None
        return authorization
