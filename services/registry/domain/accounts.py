"""The registry's aggregates: an account (stream "account-<id>"), a host party's
authorization (stream "authorization-<id>") and a project (stream "project-<id>").

Every command that changes an account's holdings appends to that account's stream
(a transfer to the source's), so its writers serialise on the stream's version. The
account knows its identity, the balance of each open reservation, the mandates it
gives brokers and its Union Registry controls (freeze, trusted list, transfer limit,
scheduled transfers); its blocks live in the block index
(docs/decisions/0007-registry-index.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple, Self

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.aggregate import Aggregate
from tonne.v1 import registry_pb2 as pb


class AccountRef(NamedTuple):
    """An account a decision only names (a transfer's target): its identity, which never
    changes once opened, and whether it is closed."""

    account_id: str
    jurisdiction: str
    closed: bool = False
    type: pb.AccountType.ValueType = pb.ACCOUNT_TYPE_UNSPECIFIED

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL


# Units that reach these accounts never leave them.
TERMINAL = frozenset({pb.RETIREMENT, pb.CANCELLATION, pb.MANDATORY_CANCELLATION, pb.OMGE_CANCELLATION})


class Trust(NamedTuple):
    """An entry of an account's trusted list: pending until approved, then effective
    from `effective_at`."""

    proposed_by: str
    effective_at: datetime | None = None

    def effective(self, now: datetime) -> bool:
        return self.effective_at is not None and self.effective_at <= now


class Account(Aggregate):
    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.account_id = ""
        self.holder = ""
        self.jurisdiction = ""
        self.type: pb.AccountType.ValueType = pb.ACCOUNT_TYPE_UNSPECIFIED
        self.reservations: dict[str, int] = {}  # open reservation id -> units still reserved
        self.mandates: dict[str, str] = {}  # mandate id -> the broker it names
        self.frozen = False
        self.closed = False
        self.transfer_limit = 0  # units per outgoing transfer; 0: no limit of its own
        self.trusted: dict[str, Trust] = {}  # account id -> its entry on the trusted list
        self.scheduled: dict[str, pb.TransferScheduled] = {}  # transfer id -> waiting transfer
        self.external: dict[str, pb.ExternalTransferProposed] = {}  # transfer id -> unanswered proposal
        self.frozen_blocks: dict[str, int] = {}  # freeze id -> units frozen under it
        self.screening: dict[str, pb.ScreenProposal] = {}  # proposal id -> awaiting the transaction log

    @property
    def opened(self) -> bool:
        return bool(self.account_id)

    @property
    def ref(self) -> AccountRef:
        return AccountRef(self.account_id, self.jurisdiction, self.closed, self.type)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL

    @property
    def reserved(self) -> int:
        return sum(self.reservations.values())

    def trusts(self, account_id: str, now: datetime) -> bool:
        entry = self.trusted.get(account_id)
        return entry is not None and entry.effective(now)

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
                if isinstance(event, pb.UnitsTransferred):
                    self.scheduled.pop(event.transfer_id, None)
                    self.screening.pop(event.transfer_id, None)
            case pb.UnitsRetired():
                del self.reservations[event.retirement_id]  # spent whole on retiring
                self.screening.pop(event.retirement_id, None)
            case pb.UnitsExpired():
                del self.reservations[event.expiry_id]
                self.screening.pop(event.expiry_id, None)
            case pb.UnitsIssued():
                self.screening.pop(event.issuance_id, None)
            case pb.ScreenProposal():
                self.screening[event.proposal_id] = event
            case pb.ProposalRejected():
                del self.screening[event.proposal_id]  # its units: the ReservationReleased beside it, if any
            case pb.MandateGranted():
                self.mandates[event.mandate_id] = event.broker_id
            case pb.MandateRevoked():
                del self.mandates[event.mandate_id]
            case pb.AccountFrozen() | pb.AccountUnfrozen():
                self.frozen = isinstance(event, pb.AccountFrozen)
            case pb.AccountClosed():
                self.closed = True
            case pb.TransferLimitSet():
                self.transfer_limit = event.per_transfer
            case pb.TrustedAccountProposed():
                self.trusted[event.trusted_account_id] = Trust(event.by)
            case pb.TrustedAccountApproved():
                self.trusted[event.trusted_account_id] = Trust(event.proposed_by, _time(event.effective_at))
            case pb.TrustedAccountRemoved():
                del self.trusted[event.trusted_account_id]
            case pb.TransferScheduled():
                self.scheduled[event.transfer_id] = event
                self.screening.pop(event.transfer_id, None)
            case pb.TransferCancelled():
                del self.scheduled[event.transfer_id]
            case pb.BlocksFrozen():
                self.frozen_blocks[event.freeze_id] = sum(b.end - b.start + 1 for b in event.blocks)
            case pb.BlocksUnfrozen():
                del self.frozen_blocks[event.freeze_id]
            case pb.ExternalTransferProposed():
                self.external[event.transfer_id] = event
                self.screening.pop(event.transfer_id, None)
            case pb.ExternalTransferCompleted() | pb.ExternalTransferReturned():
                del self.external[event.transfer_id]
                del self.reservations[event.transfer_id]  # the proposal's units, spent whole

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
            frozen=self.frozen,
            transfer_limit=self.transfer_limit,
            trusted=[_entry(a, t) for a, t in sorted(self.trusted.items())],
            scheduled=[s for _, s in sorted(self.scheduled.items())],
            closed=self.closed,
            external=[e for _, e in sorted(self.external.items())],
            frozen_blocks=[
                pb.ReservationBalance(reservation_id=f, quantity=q) for f, q in sorted(self.frozen_blocks.items())
            ],
            screening=[p for _, p in sorted(self.screening.items())],
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
        account.frozen, account.closed, account.transfer_limit = message.frozen, message.closed, message.transfer_limit
        account.trusted = {
            t.account_id: Trust(t.proposed_by, _time(t.effective_at) if t.HasField("effective_at") else None)
            for t in message.trusted
        }
        account.scheduled = {s.transfer_id: s for s in message.scheduled}
        account.external = {e.transfer_id: e for e in message.external}
        account.frozen_blocks = {f.reservation_id: f.quantity for f in message.frozen_blocks}
        account.screening = {p.proposal_id: p for p in message.screening}
        return account


def _time(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _entry(account_id: str, trust: Trust) -> pb.TrustedEntry:
    entry = pb.TrustedEntry(account_id=account_id, proposed_by=trust.proposed_by)
    if trust.effective_at is not None:
        entry.effective_at.FromDatetime(trust.effective_at)
    return entry


class Authorization(Aggregate):
    """A host party's Letter of Authorization: its terms in force, how many times they
    were set (1: as recorded), and whether the party revoked it."""

    SNAPSHOT_SCHEMA = 2  # 2: the terms' version and the revocation

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.authorization: pb.RecordAuthorization | None = None
        self.terms_version = 0
        self.revoked = False

    def apply(self, event: Message) -> None:
        match event:
            case pb.AuthorizationRecorded() | pb.AuthorizationChanged():
                self.authorization = event.authorization
                self.terms_version += 1
            case pb.AuthorizationRevoked():
                self.revoked = True

    def snapshot(self) -> bytes:
        message = pb.AuthorizationSnapshot(
            authorization=self.authorization, version=self.terms_version, revoked=self.revoked
        )
        return message.SerializeToString(deterministic=True)

    @classmethod
    def restore(cls, stream_id: str, state: bytes) -> Self:
        message = pb.AuthorizationSnapshot.FromString(state)
        authorization = cls(stream_id)
        authorization.authorization = message.authorization if message.HasField("authorization") else None
        authorization.terms_version, authorization.revoked = message.version, message.revoked
        return authorization


class Project(Aggregate):
    """A project as the registry's controls know it: frozen or not, and whose it is."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.project_id = ""
        self.host_party = ""
        self.frozen = False

    def apply(self, event: Message) -> None:
        if isinstance(event, pb.ProjectFrozen | pb.ProjectUnfrozen):
            self.project_id, self.host_party = event.project_id, event.host_party
            self.frozen = isinstance(event, pb.ProjectFrozen)

    def snapshot(self) -> bytes:
        message = pb.ProjectSnapshot(project_id=self.project_id, host_party=self.host_party, frozen=self.frozen)
        return message.SerializeToString(deterministic=True)

    @classmethod
    def restore(cls, stream_id: str, state: bytes) -> Self:
        message = pb.ProjectSnapshot.FromString(state)
        project = cls(stream_id)
        project.project_id, project.host_party, project.frozen = message.project_id, message.host_party, message.frozen
        return project
