"""What compliance knows of the registries: folded from registry events it observed."""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import Message

from tonne.v1 import registry_pb2 as pb


@dataclass
class Facts:
    accounts: dict[str, str] = field(default_factory=dict)  # account id -> jurisdiction
    authorizations: dict[str, pb.RecordAuthorization] = field(default_factory=dict)
    reservations: dict[str, pb.UnitsReserved] = field(default_factory=dict)
    # Authorized quantity already first-transferred abroad, per LoA.
    authorization_used: dict[str, int] = field(default_factory=dict)

    def apply(self, event: Message) -> None:
        match event:
            case pb.AccountOpened():
                self.accounts[event.account_id] = event.jurisdiction
            case pb.AuthorizationRecorded():
                self.authorizations[event.authorization.authorization_id] = event.authorization
            case pb.UnitsReserved():
                self.reservations[event.reservation_id] = event
            case pb.UnitsTransferred() if event.from_jurisdiction != event.to_jurisdiction:
                for block in event.blocks:
                    loa = block.attributes.authorization_id
                    if loa:
                        self.authorization_used[loa] = self.authorization_used.get(loa, 0) + block.end - block.start + 1
