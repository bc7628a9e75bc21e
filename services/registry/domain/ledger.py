"""The registry's ledger: accounts, serial blocks, reservations and authorizations.

Pure and deterministic. Each operation checks a command completely and returns the
events it would cause, changing nothing; `apply` folds an event into the state. A
rejected command raises DomainError with a stable code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from google.protobuf.message import Message

from services.common.errors import DomainError
from services.registry.domain.blocks import Block, Status
from tonne.v1 import registry_pb2 as pb

ISO_PARTY_LENGTH = 2


@dataclass(frozen=True)
class Account:
    account_id: str
    holder: str
    jurisdiction: str
    type: pb.AccountType.ValueType


class Ledger:
    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.authorizations: dict[str, pb.RecordAuthorization] = {}
        self.blocks: dict[str, list[Block]] = {}  # namespace -> blocks sorted by start
        self.issuances: set[str] = set()
        self.reservations: dict[str, str] = {}  # reservation id -> account id

    # --- queries ---

    def holdings(self, account_id: str) -> list[Block]:
        return [b for blocks in self.blocks.values() for b in blocks if b.account_id == account_id]

    def reserved(self, reservation_id: str) -> list[Block]:
        return [
            b
            for blocks in self.blocks.values()
            for b in blocks
            if b.status is Status.RESERVED and b.reservation_id == reservation_id
        ]

    def account(self, account_id: str) -> Account:
        account = self.accounts.get(account_id)
        if account is None:
            raise DomainError("ACCOUNT_UNKNOWN", f"no account {account_id!r}", [account_id])
        return account

    # --- decisions ---

    def decide(self, command: Message) -> list[Message]:
        handlers = {
            pb.OpenAccount: self.open_account,
            pb.RecordAuthorization: self.record_authorization,
            pb.RecordIssuance: self.issue,
            pb.ReserveUnits: self.reserve,
            pb.ReleaseReservation: self.release,
            pb.TransferUnits: self.transfer,
        }
        handler = handlers.get(type(command))
        if handler is None:
            raise DomainError("COMMAND_UNSUPPORTED", f"registry does not take {type(command).__name__}")
        events: list[Message] = handler(command)  # type: ignore[operator]
        return events

    def open_account(self, command: pb.OpenAccount) -> list[Message]:
        if not command.account_id or not command.holder:
            raise DomainError("ACCOUNT_INVALID", "account id and holder are required")
        if len(command.jurisdiction) != ISO_PARTY_LENGTH or not command.jurisdiction.isupper():
            raise DomainError("ACCOUNT_INVALID", f"jurisdiction {command.jurisdiction!r} is not ISO 3166 alpha-2")
        if command.type == pb.ACCOUNT_TYPE_UNSPECIFIED:
            raise DomainError("ACCOUNT_INVALID", "account type is required")
        if command.account_id in self.accounts:
            raise DomainError("ACCOUNT_EXISTS", f"account {command.account_id!r} exists", [command.account_id])
        return [
            pb.AccountOpened(
                account_id=command.account_id,
                holder=command.holder,
                jurisdiction=command.jurisdiction,
                type=command.type,
            )
        ]

    def record_authorization(self, command: pb.RecordAuthorization) -> list[Message]:
        if not command.authorization_id or len(command.host_party) != ISO_PARTY_LENGTH:
            raise DomainError("AUTHORIZATION_INVALID", "authorization id and host party are required")
        if command.quantity <= 0 or command.use == pb.AUTHORIZED_USE_UNSPECIFIED:
            raise DomainError("AUTHORIZATION_INVALID", "quantity and authorized use are required")
        if command.first_transfer == pb.FIRST_TRANSFER_UNSPECIFIED:
            raise DomainError("AUTHORIZATION_INVALID", "the first-transfer event is required")
        if command.vintage_from > command.vintage_to:
            raise DomainError("AUTHORIZATION_INVALID", "vintage range is empty")
        if command.authorization_id in self.authorizations:
            raise DomainError("AUTHORIZATION_EXISTS", f"authorization {command.authorization_id!r} exists")
        return [pb.AuthorizationRecorded(authorization=command)]

    def issue(self, command: pb.RecordIssuance) -> list[Message]:
        block = command.block
        if not command.issuance_id or command.issuance_id in self.issuances:
            raise DomainError("SEQUENCE_DUPLICATE_ID", f"issuance id {command.issuance_id!r} is missing or used")
        if not block.namespace or block.start < 1 or block.start > block.end:
            raise DomainError(
                "SERIAL_RANGE_INVALID",
                "a block needs a namespace and 1 <= start <= end",
                [f"{block.namespace}:{block.start}-{block.end}"],
            )
        account = self.account(command.account_id)
        attributes = block.attributes
        if attributes.standard == pb.STANDARD_UNSPECIFIED or attributes.vintage == 0:
            raise DomainError("UNITS_INVALID", "standard and vintage are required")
        if attributes.host_party != account.jurisdiction and account.type != pb.GOVERNMENT:
            # Issuance lands in the host party's registry: its own accounts.
            raise DomainError(
                "ACCOUNT_TYPE_NOT_ALLOWED",
                f"units of {attributes.host_party} cannot be issued into a {account.jurisdiction} account",
            )
        clashes = [b for b in self.blocks.get(block.namespace, []) if b.overlaps(block.start, block.end)]
        if clashes:
            raise DomainError(
                "DOUBLE_ISSUANCE_OVERLAP",
                "the block overlaps units already issued in its namespace",
                [f"{b.namespace}:{b.start}-{b.end}" for b in clashes],
            )
        if attributes.authorization_id:
            loa = self.authorizations.get(attributes.authorization_id)
            if loa is None:
                raise DomainError("AUTHORIZATION_UNKNOWN", f"no authorization {attributes.authorization_id!r}")
            if loa.host_party != attributes.host_party:
                raise DomainError("AUTHORIZATION_PARTY_MISMATCH", "the authorization is another party's")
        return [pb.UnitsIssued(issuance_id=command.issuance_id, account_id=account.account_id, block=block)]

    def reserve(self, command: pb.ReserveUnits) -> list[Message]:
        if not command.reservation_id or command.reservation_id in self.reservations:
            raise DomainError("SEQUENCE_DUPLICATE_ID", f"reservation id {command.reservation_id!r} is missing or used")
        if command.quantity <= 0:
            raise DomainError("QUANTITY_INVALID", "quantity must be positive")
        self.account(command.account_id)
        held = sorted(
            (b for b in self.holdings(command.account_id) if b.status is Status.HELD and _selects(command.selector, b)),
            key=lambda b: (b.namespace, b.start),
        )
        picked = _take(held, command.quantity)
        if picked is None:
            available = sum(b.quantity for b in held)
            raise DomainError(
                "HOLDINGS_INSUFFICIENT",
                f"account holds {available} eligible units, {command.quantity} asked",
                [f"{b.namespace}:{b.start}-{b.end}" for b in held],
            )
        return [
            pb.UnitsReserved(
                reservation_id=command.reservation_id,
                account_id=command.account_id,
                quantity=command.quantity,
                blocks=[b.to_message() for b in picked],
            )
        ]

    def release(self, command: pb.ReleaseReservation) -> list[Message]:
        account_id = self._reservation(command.reservation_id)
        reserved = sorted(self.reserved(command.reservation_id), key=lambda b: (b.namespace, -b.start))
        # The highest serials go back first; transfers take the lowest.
        picked = _take(reserved, command.quantity, from_end=True) if command.quantity > 0 else None
        if picked is None:
            raise DomainError(
                "RESERVATION_INSUFFICIENT",
                f"reservation holds {sum(b.quantity for b in reserved)} units, {command.quantity} to release",
                [command.reservation_id],
            )
        return [
            pb.ReservationReleased(
                reservation_id=command.reservation_id,
                account_id=account_id,
                quantity=command.quantity,
                blocks=[b.to_message() for b in picked],
            )
        ]

    def transfer(self, command: pb.TransferUnits) -> list[Message]:
        if not command.transfer_id:
            raise DomainError("SEQUENCE_DUPLICATE_ID", "transfer id is required")
        if command.quantity <= 0:
            raise DomainError("QUANTITY_INVALID", "quantity must be positive")
        source = self.account(self._reservation(command.reservation_id))
        target = self.account(command.to_account_id)
        reserved = sorted(self.reserved(command.reservation_id), key=lambda b: (b.namespace, b.start))
        picked = _take(reserved, command.quantity)
        if picked is None:
            raise DomainError(
                "RESERVATION_INSUFFICIENT",
                f"reservation holds {sum(b.quantity for b in reserved)} units, {command.quantity} asked",
                [command.reservation_id],
            )
        return [
            pb.UnitsTransferred(
                transfer_id=command.transfer_id,
                reservation_id=command.reservation_id,
                from_account_id=source.account_id,
                to_account_id=target.account_id,
                from_jurisdiction=source.jurisdiction,
                to_jurisdiction=target.jurisdiction,
                quantity=command.quantity,
                blocks=[b.to_message() for b in picked],
            )
        ]

    def _reservation(self, reservation_id: str) -> str:
        account_id = self.reservations.get(reservation_id)
        if account_id is None:
            raise DomainError("RESERVATION_UNKNOWN", f"no reservation {reservation_id!r}", [reservation_id])
        return account_id

    # --- state ---

    def apply(self, event: Message) -> None:
        match event:
            case pb.AccountOpened():
                self.accounts[event.account_id] = Account(
                    event.account_id, event.holder, event.jurisdiction, event.type
                )
            case pb.AuthorizationRecorded():
                self.authorizations[event.authorization.authorization_id] = event.authorization
            case pb.UnitsIssued():
                self.issuances.add(event.issuance_id)
                b = event.block
                self._put(Block(b.namespace, b.start, b.end, event.account_id, b.attributes))
            case pb.UnitsReserved():
                self.reservations[event.reservation_id] = event.account_id
                for b in event.blocks:
                    self._move(b, status=Status.RESERVED, reservation_id=event.reservation_id)
            case pb.ReservationReleased():
                for b in event.blocks:
                    self._move(b, status=Status.HELD, reservation_id="")
            case pb.UnitsTransferred():
                for b in event.blocks:
                    self._move(b, status=Status.HELD, reservation_id="", account_id=event.to_account_id)

    def _put(self, block: Block) -> None:
        blocks = self.blocks.setdefault(block.namespace, [])
        blocks.append(block)
        blocks.sort(key=lambda b: b.start)

    def _move(self, serials: pb.SerialBlock, **changes: object) -> None:
        blocks = self.blocks[serials.namespace]
        source = next(b for b in blocks if b.contains(serials.start, serials.end))
        blocks.remove(source)
        rest, carved = source.split(serials.start, serials.end)
        for piece in [*rest, replace(carved, **changes)]:  # type: ignore[arg-type]
            self._put(piece)


def _selects(selector: pb.UnitSelector, block: Block) -> bool:
    a = block.attributes
    return (
        (selector.standard == pb.STANDARD_UNSPECIFIED or a.standard == selector.standard)
        and (not selector.host_party or a.host_party == selector.host_party)
        and (selector.vintage == 0 or a.vintage == selector.vintage)
        and (selector.authorized_for == pb.AUTHORIZED_USE_UNSPECIFIED or bool(a.authorization_id))
    )


def _take(blocks: list[Block], quantity: int, from_end: bool = False) -> list[Block] | None:
    """Serials adding up to `quantity` (the lowest of each block, or the highest),
    or None when there are too few."""
    picked: list[Block] = []
    for block in blocks:
        if quantity == 0:
            break
        if block.quantity <= quantity:
            piece = block
        else:
            piece = block.last(quantity) if from_end else block.first(quantity)
        picked.append(piece)
        quantity -= piece.quantity
    return picked if quantity == 0 else None
