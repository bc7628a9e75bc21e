"""What compliance knows of the registries: the registry events it observed.

Screening gets a `Facts` holding only what one request needs (loaded from the
projections); `apply` folds events into one, for the pure tests and as the definition
the projector mirrors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import Message

from services.compliance.domain.authorizations import AuthorizationUsage
from tonne.v1 import registry_pb2 as pb

# Observed registry events that screening may need later (a proposal the registry gave up
# on releases the serials its approval recorded as used).
OBSERVED = (
    pb.AccountOpened,
    pb.AccountFrozen,
    pb.AccountUnfrozen,
    pb.AccountClosed,
    pb.AuthorizationRecorded,
    pb.AuthorizationChanged,
    pb.AuthorizationRevoked,
    pb.UnitsReserved,
    pb.UnitsTransferred,
    pb.ProposalRejected,
)


def spent(event: pb.UnitsTransferred) -> dict[str, int]:
    """Authorized units a transfer moves abroad, per LoA (none when domestic); what the LoA
    spends of them is what its usage has not seen move abroad before."""
    used: dict[str, int] = {}
    if event.from_jurisdiction == event.to_jurisdiction:
        return used
    for block in event.blocks:
        loa = block.attributes.authorization_id
        if loa:
            used[loa] = used.get(loa, 0) + block.end - block.start + 1
    return used


def needed(event: Message) -> bool:
    """Whether screening can ever depend on this observed event (a domestic transfer or
    one without authorized units changes nothing compliance knows)."""
    if isinstance(event, pb.UnitsTransferred):
        return bool(spent(event))
    return isinstance(event, OBSERVED)


@dataclass
class Facts:
    accounts: dict[str, str] = field(default_factory=dict)  # account id -> jurisdiction
    frozen: set[str] = field(default_factory=set)  # of those accounts, frozen now
    closed: set[str] = field(default_factory=set)  # and closed
    authorizations: dict[str, pb.RecordAuthorization] = field(default_factory=dict)  # the terms in force
    revoked: set[str] = field(default_factory=set)  # authorizations nothing more is first-transferred under
    reservations: dict[str, pb.UnitsReserved] = field(default_factory=dict)
    # How each LoA the request names has been spent and claimed (domain/authorizations.py).
    usage: dict[str, AuthorizationUsage] = field(default_factory=dict)

    def standing(self, account_id: str, frozen_ok: bool = False) -> str | None:
        """What keeps the account from taking part: unknown, closed, or frozen (unless
        `frozen_ok`: it receives, or the registry itself acts); None if nothing."""
        if account_id not in self.accounts:
            return f"unknown account {account_id}"
        if account_id in self.closed:
            return f"account {account_id} is closed"
        if account_id in self.frozen and not frozen_ok:
            return f"account {account_id} is frozen"
        return None

    def usage_of(self, authorization_id: str) -> AuthorizationUsage:
        return self.usage.get(authorization_id) or AuthorizationUsage.of(authorization_id)

    def apply(self, event: Message) -> None:
        match event:
            case pb.AccountOpened():
                self.accounts[event.account_id] = event.jurisdiction
            case pb.AccountFrozen():
                self.frozen.add(event.account_id)
            case pb.AccountUnfrozen():
                self.frozen.discard(event.account_id)
            case pb.AccountClosed():
                self.closed.add(event.account_id)
            case pb.AuthorizationRecorded() | pb.AuthorizationChanged():
                self.authorizations[event.authorization.authorization_id] = event.authorization
            case pb.AuthorizationRevoked():
                self.revoked.add(event.authorization_id)
            case pb.UnitsReserved():
                self.reservations[event.reservation_id] = event
            case pb.UnitsTransferred():
                for loa in spent(event):
                    usage = self.usage.setdefault(loa, AuthorizationUsage.of(loa))
                    usage.mutate(usage.transferred(event))
