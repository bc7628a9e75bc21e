"""The registry's ledger: decisions on accounts, authorizations and serial blocks.

Pure and deterministic. A decision takes the command and the facts it needs as plain
values (the account, the overlapping blocks, the eligible blocks, the reservation's
blocks, the authorization), loaded by the service layer from the block index and the
aggregates; it returns the events it would cause and changes nothing. A refused command
raises DomainError with a stable code and its evidence. `changes` says what an event
does to the block index; both index adapters (memory, PostgreSQL) apply exactly that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import NamedTuple

from google.protobuf.message import Message

from services.common.errors import DomainError
from services.common.inputs import is_identifier, is_party
from services.registry.domain import fingerprint, manifest
from services.registry.domain.accounts import Account, AccountRef, Authorization
from services.registry.domain.blocks import Block, Change, Holding, Move, Put, Status, Units, frozen_under
from services.registry.domain.fingerprint import Prior
from services.registry.domain.issuance_rules import IssuanceRules, account_type, allocate
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as pb

INT64_MAX = 2**63 - 1
CLAIM_USES = frozenset({pb.CLAIM_NDC, pb.CLAIM_OIMP, pb.CLAIM_VOLUNTARY})
# The years a retirement may claim for (Kyoto's first commitment period onwards).
CLAIM_YEARS = (2008, 2100)
# Evidence lists name at most this many blocks (a refusal must stay small on the wire).
EVIDENCE_LIMIT = 20

_TEXT_MAX = 200
# Blocks one inbound transfer may carry (each is looked up on its own).
BLOCKS_MAX = 100
_LABELS_MAX = 16
_ENTITIES_MAX = 100


def text_ok(value: str) -> bool:
    return 0 < len(value) <= _TEXT_MAX and all(ch.isprintable() and not "\ud800" <= ch <= "\udfff" for ch in value)


def _identifiers(command: Message) -> list[tuple[str, str]]:
    match command:
        case pb.OpenAccount():
            return [("account_id", command.account_id)]
        case pb.RecordAuthorization():
            approach = [("cooperative_approach", command.cooperative_approach)]
            return [("authorization_id", command.authorization_id), *approach]
        case pb.RevokeAuthorization():
            return [("authorization_id", command.authorization_id)]
        case pb.RecordIssuance():
            return [
                ("issuance_id", command.issuance_id),
                ("account_id", command.account_id),
                ("namespace", command.block.namespace),
                ("manifest_id", command.manifest_id),
                *_unit_ids(command.block.attributes),
            ]
        case pb.ReserveUnits():
            return [("reservation_id", command.reservation_id), ("account_id", command.account_id)]
        case pb.ReleaseReservation():
            return [("reservation_id", command.reservation_id)]
        case pb.TransferUnits():
            return [
                ("transfer_id", command.transfer_id),
                ("reservation_id", command.reservation_id),
                ("to_account_id", command.to_account_id),
            ]
        case pb.GrantMandate() | pb.RevokeMandate():
            return [
                ("mandate_id", command.mandate_id),
                ("account_id", command.account_id),
                ("broker_id", command.broker_id),
            ]
        case pb.FreezeAccount() | pb.UnfreezeAccount() | pb.SetTransferLimit() | pb.CloseAccount():
            return [("account_id", command.account_id)]
        case pb.FreezeBlocks():
            return [
                ("freeze_id", command.freeze_id),
                ("account_id", command.account_id),
                ("namespace", command.namespace),
            ]
        case pb.UnfreezeBlocks():
            return [("freeze_id", command.freeze_id), ("account_id", command.account_id)]
        case pb.FreezeProject() | pb.UnfreezeProject():
            return [("project_id", command.project_id)]
        case pb.ProposeTrustedAccount() | pb.ApproveTrustedAccount() | pb.RemoveTrustedAccount():
            return [("account_id", command.account_id), ("trusted_account_id", command.trusted_account_id)]
        case pb.RequestTransfer():
            return [
                ("transfer_id", command.transfer_id),
                ("account_id", command.account_id),
                ("to_account_id", command.to_account_id),
            ]
        case pb.ExecuteTransfer() | pb.CancelTransfer():
            return [("transfer_id", command.transfer_id), ("account_id", command.account_id)]
        case pb.RetireUnits():
            return [("retirement_id", command.retirement_id), ("account_id", command.account_id)]
        case pb.ExpireUnits():
            return [("expiry_id", command.expiry_id), ("account_id", command.account_id)]
        case pb.ProposeExternalTransfer():
            return [
                ("transfer_id", command.transfer_id),
                ("account_id", command.account_id),
                ("to_account", command.to_account),
            ]
        case pb.AnswerExternalTransfer():
            return [("transfer_id", command.transfer_id)]
        case pb.ExpireProposal() | cpb.ProposalScreened():
            return [("proposal_id", command.proposal_id), ("account_id", command.account_id)]
        case pb.ProposeInboundTransfer():
            return [
                ("transfer_id", command.transfer_id),
                ("from_account", command.from_account),
                ("to_account_id", command.to_account_id),
                *[("namespace", b.namespace) for b in command.blocks[:BLOCKS_MAX]],
                *[(name, value) for b in command.blocks[:BLOCKS_MAX] for name, value in _unit_ids(b.attributes)],
            ]
        case pb.ExpireExternalTransfer():
            return [("transfer_id", command.transfer_id), ("account_id", command.account_id)]
        case pb.AnswerHoldingsDigest():
            return [("digest_id", command.digest_id), *[("account_id", r.account_id) for r in command.theirs[:100]]]
    return []


def _unit_ids(a: pb.UnitAttributes) -> list[tuple[str, str]]:
    return [
        ("authorization_id", a.authorization_id),
        ("project_id", a.project_id),
        ("methodology", a.methodology),
        ("issuing_registry", a.issuing_registry),
        ("underlying_registry", a.underlying_registry),
        ("underlying_namespace", a.underlying_namespace),
    ]


def check(command: Message) -> None:
    """Refuse malformed identifiers and selectors before anything is looked up (empty
    ids are each decision's own business): a command from a topic can carry anything,
    and nothing oversize may be stored or echoed."""
    for name, value in _identifiers(command):
        if value and not is_identifier(value):
            raise DomainError(
                "IDENTIFIER_INVALID",
                f"{name} must be 1-64 characters of [A-Za-z0-9._:@-], starting alphanumeric",
                [f"{name}: {len(value)} characters"],
            )
    if (
        isinstance(command, pb.ReserveUnits | Picking)
        and command.selector.host_party
        and not is_party(command.selector.host_party)
    ):
        raise DomainError("SELECTOR_INVALID", "the selector's host party must be ISO 3166 alpha-2")


def _quantity(quantity: int) -> None:
    if quantity <= 0 or quantity > INT64_MAX:
        raise DomainError("QUANTITY_INVALID", "quantity must be positive and within int64", [str(quantity)])


def command_id(command: Message) -> str:
    """The command's own id (its field 1), or "" when it is not a valid identifier."""
    value = getattr(command, command.DESCRIPTOR.fields_by_number[1].name, "")
    return value if isinstance(value, str) and is_identifier(value) else ""


# The commands whose units are picked as a reservation would pick them.
Picking = pb.RetireUnits | pb.ExpireUnits | pb.RequestTransfer | pb.ProposeExternalTransfer
# Picked on the registry's own authority: a frozen account or a holder's transfer limit
# does not stop them (a reversal is often why the account was frozen).
_BY_AUTHORITY = frozenset({pb.CANCELLATION_MANDATORY, pb.CANCELLATION_OMGE})


class Held(NamedTuple):
    """What a decision that picks held units knows of them (sql_index.reserve_facts)."""

    used: bool  # the command's id is taken
    available: int  # held units the selector takes
    eligible: Sequence[Block]  # enough of their blocks to cover the quantity, when there are enough
    frozen: Set[str]  # the frozen projects


class Ledger:
    """The registry's decisions. Stateless: every fact arrives as an argument."""

    def open_account(self, command: pb.OpenAccount, existing: Account | None) -> list[Message]:
        if not command.account_id or not command.holder:
            raise DomainError("ACCOUNT_INVALID", "account id and holder are required")
        check(command)
        if not text_ok(command.holder):
            raise DomainError("ACCOUNT_INVALID", "holder must be 1-200 printable characters")
        if not is_party(command.jurisdiction):
            raise DomainError("ACCOUNT_INVALID", f"jurisdiction {command.jurisdiction[:8]!r} is not ISO 3166 alpha-2")
        if command.type == pb.ACCOUNT_TYPE_UNSPECIFIED or command.type not in pb.AccountType.values():
            raise DomainError("ACCOUNT_INVALID", "account type is required")
        if not command.account_id.startswith(f"{command.jurisdiction}-"):
            # As in the Union Registry ("EU-100-..."): an id names its registry, so ids of
            # different jurisdictions never collide and a refusal for an existing id only
            # speaks of the caller's own registry.
            raise DomainError(
                "ACCOUNT_INVALID", f"an account id of {command.jurisdiction} starts with '{command.jurisdiction}-'"
            )
        if existing is not None:
            raise DomainError("ACCOUNT_EXISTS", f"account {command.account_id!r} exists", [command.account_id])
        return [
            pb.AccountOpened(
                account_id=command.account_id,
                holder=command.holder,
                jurisdiction=command.jurisdiction,
                type=command.type,
            )
        ]

    def record_authorization(
        self, command: pb.RecordAuthorization, existing: pb.RecordAuthorization | None
    ) -> list[Message]:
        valid_terms(command)
        if existing is not None:
            raise DomainError("AUTHORIZATION_EXISTS", f"authorization {command.authorization_id!r} exists")
        return [pb.AuthorizationRecorded(authorization=command)]

    def change_authorization(self, command: pb.ChangeAuthorization, loa: Authorization) -> list[Message]:
        """New terms that only widen the old: more tonnes, more vintages, any entities.
        The use and the first-transfer event stay (outcomes were counted under them)."""
        new = command.authorization
        valid_terms(new)
        old = in_force(loa, new.authorization_id)
        reason(command.reason)
        kept = [
            name
            for name in ("host_party", "use", "first_transfer", "cooperative_approach")
            if getattr(new, name) != getattr(old, name)
        ]
        if kept:
            raise DomainError(
                "AUTHORIZATION_INVALID", "a change keeps the party, use, first transfer and approach", kept
            )
        if new.quantity < old.quantity or new.vintage_from > old.vintage_from or new.vintage_to < old.vintage_to:
            raise DomainError(
                "AUTHORIZATION_INVALID", "a change only widens the quantity and vintages (narrowing is a revocation)"
            )
        return [pb.AuthorizationChanged(authorization=new, reason=command.reason, version=loa.terms_version + 1)]

    def revoke_authorization(self, command: pb.RevokeAuthorization, loa: Authorization) -> list[Message]:
        check(command)
        old = in_force(loa, command.authorization_id)
        reason(command.reason)
        if command.host_party != old.host_party:
            raise DomainError("AUTHORIZATION_PARTY_MISMATCH", "only the host party revokes its authorization")
        return [
            pb.AuthorizationRevoked(
                authorization_id=old.authorization_id, host_party=old.host_party, reason=command.reason
            )
        ]

    def issue(
        self,
        command: pb.RecordIssuance,
        account: Account | None,
        *,
        issuance_used: bool,
        overlapping: Sequence[Block],
        authorization: pb.RecordAuthorization | None,
        authorization_revoked: bool = False,
        rules: IssuanceRules | None = None,
        roles: Mapping[str, AccountRef | None] | None = None,
        prior: Sequence[Prior] = (),
        stored: manifest.Stored | None = None,
    ) -> list[Message]:
        """`account`: the account the block is issued to (the rules' landing account, else
        the issuance's own); `overlapping`: blocks of the namespace that share a serial with
        the new block (the index's predecessor check and the blocks starting inside it, a
        bounded few); `rules`: the programme's issuance rules when they apply to this
        issuance, and `roles` the account of each of their roles (None: no such account);
        `prior`: issuances recorded under the command's fingerprint whose monitoring period
        shares a day with its own; `stored`: the manifest the command names, if stored."""
        block = command.block
        attributes = block.attributes
        check(command)
        if not command.issuance_id or issuance_used:
            raise DomainError("SEQUENCE_DUPLICATE_ID", f"issuance id {command.issuance_id!r} is missing or used")
        serial_range(block)
        if account is None:
            landing = rules.landing_account(command) if rules else command.account_id
            raise DomainError("ACCOUNT_UNKNOWN", f"no account {landing!r}", [landing])
        not_closed(account.ref)
        if account.terminal:
            raise DomainError(
                "ACCOUNT_TYPE_NOT_ALLOWED", "units are not issued into a retirement or cancellation account"
            )
        valid_units(block)
        landed = rules is not None and rules.landing is not None
        if not landed and attributes.host_party != account.jurisdiction and account.type != pb.GOVERNMENT:
            # Issuance lands in the host party's registry: its own accounts.
            raise DomainError(
                "ACCOUNT_TYPE_NOT_ALLOWED",
                f"units of {attributes.host_party} cannot be issued into a {account.jurisdiction} account",
            )
        if overlapping:
            raise DomainError(
                "DOUBLE_ISSUANCE_OVERLAP",
                "the block overlaps units already issued in its namespace",
                [b.label() for b in overlapping[:EVIDENCE_LIMIT]],
            )
        authorized(attributes, authorization, authorization_revoked)
        issued = pb.UnitsIssued(issuance_id=command.issuance_id, account_id=account.account_id, block=block)
        if command.manifest_id:
            issued.block.attributes.manifest_root = manifest.issued_root(command, stored)
            issued.manifest_id = command.manifest_id
        elif attributes.manifest_root:
            raise DomainError("MANIFEST_UNKNOWN", "a block carries the root of the manifest its issuance names")
        if command.HasField("fingerprint"):
            if command.fingerprint.host_party != attributes.host_party:
                raise DomainError("FINGERPRINT_INVALID", "the fingerprint's host party is not the units'")
            issued.fingerprint_key = fingerprint.key(command.fingerprint)
            fingerprint.issued_once(fingerprint.period_of(command.period), list(prior))
            issued.period.CopyFrom(command.period)
        if rules is None:
            return [issued]
        return [issued, allocated(command, account, rules, roles or {})]

    def reserve(
        self,
        command: pb.ReserveUnits,
        account: Account | None,
        *,
        reservation_used: bool,
        eligible: Sequence[Block],
        available: int,
        frozen_projects: Set[str] = frozenset(),
        by_authority: bool = False,
    ) -> list[Message]:
        """`eligible`: the account's held blocks the selector takes, in (namespace, start)
        order, enough to cover the quantity when `available` (their total) does;
        `frozen_projects`: those of their projects that are frozen; `by_authority`: the
        registry picks them itself (mandatory cancellation, expiry)."""
        check(command)
        if not command.reservation_id or reservation_used:
            raise DomainError("SEQUENCE_DUPLICATE_ID", f"reservation id {command.reservation_id!r} is missing or used")
        _quantity(command.quantity)
        if account is None:
            raise DomainError("ACCOUNT_UNKNOWN", f"no account {command.account_id!r}", [command.account_id])
        outgoing(account, command.quantity, by_authority=by_authority)
        picked = _take(eligible, command.quantity) if available >= command.quantity else None
        if picked is None:
            raise DomainError(
                "HOLDINGS_INSUFFICIENT",
                f"account holds {available} eligible units, {command.quantity} asked",
                [b.label() for b in eligible[:EVIDENCE_LIMIT]],
            )
        unfrozen(picked, frozen_projects)
        return [
            pb.UnitsReserved(
                reservation_id=command.reservation_id,
                account_id=account.account_id,
                quantity=command.quantity,
                blocks=[b.to_message() for b in picked],
            )
        ]

    def pick(
        self, command: Picking, account: Account | None, held: Held, *, by_authority: bool = False
    ) -> pb.UnitsReserved:
        """The reservation that picks a retirement's or a holder's transfer's units, under
        the command's own id, as an order's reservation would pick them."""
        [reserved] = self.reserve(
            picking(command),
            account,
            reservation_used=held.used,
            eligible=held.eligible,
            available=held.available,
            frozen_projects=held.frozen,
            by_authority=by_authority,
        )
        assert isinstance(reserved, pb.UnitsReserved)
        return reserved

    def retire(self, command: pb.RetireUnits, account: Account | None, held: Held) -> list[Message]:
        """Retire (or cancel) held units: they are picked as a reservation would pick them
        (UnitsReserved under the retirement's id), then end in the account as retired or
        cancelled (UnitsRetired), where nothing ever moves them again. A mandatory or OMGE
        cancellation is the registry's own act: a frozen account does not stop it."""
        check(command)
        kind = command.cancellation
        if kind not in pb.CancellationKind.values() or (kind and not command.cancel):
            raise DomainError("RETIREMENT_INVALID", "a cancellation kind names a cancellation", [str(kind)])
        if command.cancel and not kind:
            kind = pb.CANCELLATION_VOLUNTARY
        if not text_ok(command.purpose) or (not command.cancel and not text_ok(command.beneficiary)):
            raise DomainError(
                "RETIREMENT_INVALID", "a retirement names its beneficiary and purpose (a cancellation its purpose)"
            )
        if not command.cancel and (
            command.use not in CLAIM_USES or not CLAIM_YEARS[0] <= command.claim_year <= CLAIM_YEARS[1]
        ):
            raise DomainError(
                "RETIREMENT_INVALID",
                "a retirement names its use (NDC, OIMP or voluntary) and its claim year "
                f"({CLAIM_YEARS[0]}-{CLAIM_YEARS[1]})",
                [pb.ClaimUse.Name(command.use) if command.use in pb.ClaimUse.values() else str(command.use)],
            )
        reserved = self.pick(command, account, held, by_authority=kind in _BY_AUTHORITY)
        assert account is not None  # picked from it
        return [
            reserved,
            pb.UnitsRetired(
                retirement_id=command.retirement_id,
                account_id=account.account_id,
                jurisdiction=account.jurisdiction,
                quantity=command.quantity,
                blocks=reserved.blocks,
                beneficiary=command.beneficiary,
                purpose=command.purpose,
                cancelled=command.cancel,
                by=command.by,
                use=command.use,
                claim_year=command.claim_year,
                cancellation=kind,
            ),
        ]

    def expire(self, command: pb.ExpireUnits, account: Account | None, held: Held) -> list[Message]:
        """Expire held units whose validity has ended, on the registry's authority: picked
        as a reservation would pick them (UnitsReserved under the expiry's id), then kept
        in the account as expired (UnitsExpired), where nothing ever moves them again."""
        check(command)
        if not text_ok(command.reason):
            raise DomainError("EXPIRY_INVALID", "an expiry names its reason")
        reserved = self.pick(command, account, held, by_authority=True)
        assert account is not None  # picked from it
        return [
            reserved,
            pb.UnitsExpired(
                expiry_id=command.expiry_id,
                account_id=account.account_id,
                jurisdiction=account.jurisdiction,
                quantity=command.quantity,
                blocks=reserved.blocks,
                reason=command.reason,
                by=command.by,
            ),
        ]

    def release(
        self, command: pb.ReleaseReservation, owner: Account | None, reserved: Sequence[Block]
    ) -> list[Message]:
        """`owner`: the account holding the reservation (None: no such reservation);
        `reserved`: the reservation's blocks."""
        check(command)
        if owner is None:
            raise DomainError(
                "RESERVATION_UNKNOWN", f"no reservation {command.reservation_id!r}", [command.reservation_id]
            )
        venue_reservation(owner, command.reservation_id)
        ordered = sorted(reserved, key=lambda b: (b.namespace, -b.start))
        # The highest serials go back first; transfers take the lowest.
        valid = 0 < command.quantity <= INT64_MAX
        picked = _take(ordered, command.quantity, from_end=True) if valid else None
        if picked is None:
            raise DomainError(
                "RESERVATION_INSUFFICIENT",
                f"reservation holds {sum(b.quantity for b in reserved)} units, {command.quantity} to release",
                [command.reservation_id],
            )
        return [
            pb.ReservationReleased(
                reservation_id=command.reservation_id,
                account_id=owner.account_id,
                quantity=command.quantity,
                blocks=[b.to_message() for b in picked],
            )
        ]

    def transfer(
        self,
        command: pb.TransferUnits,
        owner: Account | None,
        target: AccountRef | None,
        reserved: Sequence[Block],
        frozen_projects: Set[str] = frozenset(),
        *,
        transfer_used: bool = False,
    ) -> list[Message]:
        """The venue's delivery of reserved units (settlement). `frozen_projects`: the
        reserved blocks' projects that are frozen; `transfer_used`: a transfer with this
        id was made (ids are unique across every transfer the registry records)."""
        check(command)
        if not command.transfer_id or transfer_used:
            raise DomainError("SEQUENCE_DUPLICATE_ID", f"transfer id {command.transfer_id!r} is missing or used")
        _quantity(command.quantity)
        if owner is None:
            raise DomainError(
                "RESERVATION_UNKNOWN", f"no reservation {command.reservation_id!r}", [command.reservation_id]
            )
        venue_reservation(owner, command.reservation_id)
        outgoing(owner)
        if target is None:
            raise DomainError("ACCOUNT_UNKNOWN", f"no account {command.to_account_id!r}", [command.to_account_id])
        return [
            transferred(
                command.transfer_id, command.reservation_id, owner, target, command.quantity, reserved, frozen_projects
            )
        ]

    def grant_mandate(self, command: pb.GrantMandate, account: Account | None, holder_of_id: str) -> list[Message]:
        """`holder_of_id`: the account that holds a mandate with this id now ("" if none):
        mandate ids are unique across accounts (brokers' and other services' tables key on
        them). Granting the same mandate again records nothing."""
        check(command)
        if not command.mandate_id or not command.broker_id:
            raise DomainError("MANDATE_INVALID", "mandate id and broker id are required")
        if account is None:
            raise DomainError("ACCOUNT_UNKNOWN", f"no account {command.account_id!r}", [command.account_id])
        not_closed(account.ref)
        if holder_of_id and holder_of_id != account.account_id:
            raise DomainError("MANDATE_EXISTS", f"mandate {command.mandate_id!r} exists", [command.mandate_id])
        granted = account.mandates.get(command.mandate_id)
        if granted == command.broker_id:
            return []
        if granted is not None:
            raise DomainError(
                "MANDATE_EXISTS", f"mandate {command.mandate_id!r} names another broker", [command.mandate_id]
            )
        return [
            pb.MandateGranted(
                mandate_id=command.mandate_id,
                account_id=account.account_id,
                broker_id=command.broker_id,
                jurisdiction=account.jurisdiction,
            )
        ]

    def revoke_mandate(self, command: pb.RevokeMandate, account: Account | None) -> list[Message]:
        """The broker id of the command, if given, must be the one the mandate names."""
        check(command)
        if account is None:
            raise DomainError("ACCOUNT_UNKNOWN", f"no account {command.account_id!r}", [command.account_id])
        broker_id = account.mandates.get(command.mandate_id)
        if broker_id is None:
            raise DomainError(
                "MANDATE_UNKNOWN", f"account holds no mandate {command.mandate_id!r}", [command.mandate_id]
            )
        if command.broker_id and command.broker_id != broker_id:
            raise DomainError(
                "MANDATE_BROKER_MISMATCH", f"mandate {command.mandate_id!r} names another broker", [command.mandate_id]
            )
        return [
            pb.MandateRevoked(
                mandate_id=command.mandate_id,
                account_id=account.account_id,
                broker_id=broker_id,
                jurisdiction=account.jurisdiction,
            )
        ]


def allocated(
    command: pb.RecordIssuance, account: Account, rules: IssuanceRules, roles: Mapping[str, AccountRef | None]
) -> pb.UnitsAllocated:
    """The block of `command`, issued to `account`, allocated as `rules` say among the
    accounts of their roles: each named, open and of the type its role needs."""
    if rules.landing is not None and account.type != pb.AccountType.Value(rules.landing.account_type):
        raise DomainError(
            "ACCOUNT_TYPE_NOT_ALLOWED", f"{rules.id} issues through a {rules.landing.account_type} account"
        )
    refs: dict[str, AccountRef] = {}
    for role, account_id in rules.account_ids(command).items():
        ref = roles.get(role)
        if not account_id:
            raise DomainError("ISSUANCE_ALLOCATION_INVALID", f"{rules.id} needs the {role} account named", [role])
        if ref is None:
            raise DomainError("ACCOUNT_UNKNOWN", f"no account {account_id!r} ({role})", [account_id])
        not_closed(ref)
        wanted = account_type(rules, role)
        if (wanted is not None and ref.type != wanted) or (wanted is None and ref.terminal):
            raise DomainError(
                "ACCOUNT_TYPE_NOT_ALLOWED",
                f"the {role} account {account_id!r} is {pb.AccountType.Name(ref.type)}",
                [account_id],
            )
        refs[role] = ref
    block = command.block
    return pb.UnitsAllocated(
        issuance_id=command.issuance_id,
        from_account_id=account.account_id,
        policy=rules.id,
        allocations=[
            pb.Allocation(
                role=piece.role,
                account_id=refs[piece.role].account_id,
                jurisdiction=refs[piece.role].jurisdiction,
                cancelled=piece.cancel,
                block=pb.SerialBlock(
                    namespace=block.namespace, start=piece.start, end=piece.end, attributes=block.attributes
                ),
            )
            for piece in allocate(rules, block.start, block.end)
        ],
    )


def picking(command: Picking) -> pb.ReserveUnits:
    """The reservation that picks a retirement's or a holder transfer's serials (its id is
    the command's own): the same selection as an order's."""
    match command:
        case pb.RetireUnits():
            own_id = command.retirement_id
        case pb.ExpireUnits():
            own_id = command.expiry_id
        case _:
            own_id = command.transfer_id
    return pb.ReserveUnits(
        reservation_id=own_id, account_id=command.account_id, selector=command.selector, quantity=command.quantity
    )


def transferred(
    transfer_id: str,
    reservation_id: str,
    owner: Account,
    target: AccountRef,
    quantity: int,
    reserved: Sequence[Block],
    frozen_projects: Set[str],
) -> pb.UnitsTransferred:
    """The lowest `quantity` serials of the reservation, moved to `target`."""
    not_closed(target)
    picked = _take(sorted(reserved, key=lambda b: (b.namespace, b.start)), quantity)
    if picked is None:
        raise DomainError(
            "RESERVATION_INSUFFICIENT",
            f"reservation holds {sum(b.quantity for b in reserved)} units, {quantity} asked",
            [reservation_id],
        )
    unfrozen(picked, frozen_projects)
    return pb.UnitsTransferred(
        transfer_id=transfer_id,
        reservation_id=reservation_id,
        from_account_id=owner.account_id,
        to_account_id=target.account_id,
        from_jurisdiction=owner.jurisdiction,
        to_jurisdiction=target.jurisdiction,
        quantity=quantity,
        blocks=[b.to_message() for b in picked],
    )


def outgoing(account: Account, quantity: int = 0, *, by_authority: bool = False) -> None:
    """Units may leave the account: it is open, not terminal, and (unless the registry
    acts on its own authority) not frozen, with `quantity` within its per-transfer limit."""
    not_closed(account.ref)
    if account.terminal:
        raise DomainError(
            "ACCOUNT_TERMINAL", f"units never leave {pb.AccountType.Name(account.type)} accounts", [account.account_id]
        )
    if by_authority:
        return
    if account.frozen:
        raise DomainError("ACCOUNT_FROZEN", f"account {account.account_id!r} is frozen", [account.account_id])
    if account.transfer_limit and quantity > account.transfer_limit:
        raise DomainError(
            "TRANSFER_LIMIT_EXCEEDED",
            f"the account's limit is {account.transfer_limit} units per transfer, {quantity} asked",
            [account.account_id],
        )


def serial_range(block: pb.SerialBlock) -> None:
    if not block.namespace or block.start < 1 or block.start > block.end or block.end > INT64_MAX:
        raise DomainError(
            "SERIAL_RANGE_INVALID",
            "a block needs a namespace and 1 <= start <= end <= 2^63-1",
            [f"{block.namespace}:{block.start}-{block.end}"],
        )


def valid_units(block: pb.SerialBlock) -> None:
    """The attributes every block must carry (DOMAIN.md §3), well formed; an underlying
    range, if named, whole and within the serials."""
    attributes = block.attributes
    if attributes.underlying_registry or attributes.underlying_namespace or attributes.underlying_offset:
        start, end = underlying(block.start, block.end, attributes)
        if not (is_identifier(attributes.underlying_registry) and is_identifier(attributes.underlying_namespace)):
            raise DomainError("UNITS_INVALID", "an underlying range names its registry and namespace")
        if not 1 <= start <= end <= INT64_MAX:
            raise DomainError("UNITS_INVALID", "the underlying serials are within 1..2^63-1", [f"{start}-{end}"])
    if attributes.standard == pb.STANDARD_UNSPECIFIED or attributes.vintage == 0:
        raise DomainError("UNITS_INVALID", "standard and vintage are required")
    if not is_party(attributes.host_party):
        raise DomainError("UNITS_INVALID", "host party must be ISO 3166 alpha-2")
    if len(attributes.quality_labels) > _LABELS_MAX or not all(map(is_identifier, attributes.quality_labels)):
        raise DomainError("UNITS_INVALID", f"at most {_LABELS_MAX} quality labels, each an identifier")


def underlying(start: int, end: int, attributes: pb.UnitAttributes) -> tuple[int, int]:
    """Serials `[start, end]`'s underlying units, in their own registry's numbering."""
    return start + attributes.underlying_offset, end + attributes.underlying_offset


def valid_terms(terms: pb.RecordAuthorization) -> None:
    if not terms.authorization_id or not is_party(terms.host_party):
        raise DomainError("AUTHORIZATION_INVALID", "authorization id and host party are required")
    check(terms)
    if terms.quantity <= 0 or terms.quantity > INT64_MAX or terms.use == pb.AUTHORIZED_USE_UNSPECIFIED:
        raise DomainError("AUTHORIZATION_INVALID", "quantity (within int64) and authorized use are required")
    if terms.first_transfer == pb.FIRST_TRANSFER_UNSPECIFIED:
        raise DomainError("AUTHORIZATION_INVALID", "the first-transfer event is required")
    if terms.vintage_from > terms.vintage_to:
        raise DomainError("AUTHORIZATION_INVALID", "vintage range is empty")
    entities = terms.authorized_entities
    if len(entities) > _ENTITIES_MAX or not all(map(text_ok, entities)) or len(set(entities)) != len(entities):
        raise DomainError(
            "AUTHORIZATION_INVALID", f"at most {_ENTITIES_MAX} distinct authorized entities, each printable text"
        )


def in_force(loa: Authorization, authorization_id: str) -> pb.RecordAuthorization:
    """The authorization's terms, if it was recorded and not revoked."""
    if loa.authorization is None:
        raise DomainError("AUTHORIZATION_UNKNOWN", f"no authorization {authorization_id!r}", [authorization_id])
    if loa.revoked:
        raise DomainError(
            "AUTHORIZATION_REVOKED", f"authorization {authorization_id!r} was revoked", [authorization_id]
        )
    return loa.authorization


def reason(text: str) -> None:
    if not text or not text_ok(text):
        raise DomainError("AUTHORIZATION_INVALID", "a change or revocation gives its reason (printable text)")


def authorized(
    attributes: pb.UnitAttributes, authorization: pb.RecordAuthorization | None, revoked: bool = False
) -> None:
    """Units that name an authorization name one recorded here, of their host party, and
    not revoked (nothing more is issued under a revoked authorization)."""
    if not attributes.authorization_id:
        return
    if authorization is None:
        raise DomainError("AUTHORIZATION_UNKNOWN", f"no authorization {attributes.authorization_id!r}")
    if authorization.host_party != attributes.host_party:
        raise DomainError("AUTHORIZATION_PARTY_MISMATCH", "the authorization is another party's")
    if revoked:
        raise DomainError(
            "AUTHORIZATION_REVOKED", "units are not issued under a revoked authorization", [attributes.authorization_id]
        )


def not_closed(account: AccountRef) -> None:
    """The account is open (a closed account takes no units in or out)."""
    if account.closed:
        raise DomainError("ACCOUNT_CLOSED", f"account {account.account_id!r} is closed", [account.account_id])


def unfrozen(blocks: Sequence[Block], frozen_projects: Set[str]) -> None:
    frozen = sorted({b.units.project_id for b in blocks} & frozen_projects)
    if frozen:
        raise DomainError("PROJECT_FROZEN", "units of a frozen project do not move", frozen[:EVIDENCE_LIMIT])


def venue_reservation(owner: Account, reservation_id: str) -> None:
    """The venue's release and delivery never touch the units of a holder's scheduled or
    external transfer, nor of a proposal the transaction log screens (those complete,
    return or are cancelled through their own path)."""
    if reservation_id in owner.scheduled or reservation_id in owner.external or reservation_id in owner.screening:
        raise DomainError(
            "RESERVATION_HELD_FOR_TRANSFER",
            f"{reservation_id!r} holds the units of a transfer or of a proposal under screening",
            [reservation_id],
        )


def bind(channel: str, command: Message, account: Account | None) -> None:
    """A national registry's channel (`registry.inbound.<channel>`) may only touch the
    accounts, parties and issuances of its own jurisdiction, and never moves units
    (reserve, release and transfer come from the venue's services on registry.commands).
    `account`: the account the command names, if it exists. Raises DomainError."""
    match command:
        case pb.OpenAccount():
            parties = [command.jurisdiction]
        case pb.RecordAuthorization() | pb.RevokeAuthorization():
            parties = [command.host_party]
        case pb.ChangeAuthorization():
            parties = [command.authorization.host_party]
        case pb.RecordIssuance():
            parties = [command.block.attributes.host_party]
        case pb.FreezeProject() | pb.UnfreezeProject():
            parties = [command.host_party]
        case pb.AnswerExternalTransfer() | pb.ProposeInboundTransfer() | pb.AnswerHoldingsDigest():
            parties = []  # the sending registry's own business: checked where it is decided
        case (
            pb.GrantMandate()
            | pb.RevokeMandate()
            | pb.FreezeAccount()
            | pb.UnfreezeAccount()
            | pb.FreezeBlocks()
            | pb.UnfreezeBlocks()
            | pb.RetireUnits()
            | pb.ExpireUnits()
        ):
            parties = []
        case _:
            # Moving units and the holder's controls (four eyes need two people, not
            # one channel) are not a national registry's messages.
            raise DomainError(
                "COMMAND_NOT_ALLOWED_ON_CHANNEL",
                f"{command.DESCRIPTOR.name} is not taken from a national registry's channel",
                [channel],
            )
    if account is not None:
        parties.append(account.jurisdiction)
    if any(party != channel for party in parties):
        raise DomainError(
            "CHANNEL_JURISDICTION_MISMATCH",
            f"the {channel} channel only acts for {channel}'s accounts, parties and issuances",
            [channel],
        )


# What the venue's own services send on registry.commands: nothing else is taken there.
VENUE_COMMANDS = (pb.ReserveUnits, pb.ReleaseReservation, pb.TransferUnits)


def bind_venue(command: Message) -> None:
    if not isinstance(command, VENUE_COMMANDS):
        raise DomainError(
            "COMMAND_NOT_ALLOWED_ON_CHANNEL",
            f"{command.DESCRIPTOR.name} is not taken from the venue's channel",
            ["registry.commands"],
        )


def selects(selector: pb.UnitSelector, units: Units) -> bool:
    return (
        (selector.standard == pb.STANDARD_UNSPECIFIED or units.standard == selector.standard)
        and (not selector.host_party or units.host_party == selector.host_party)
        and (selector.vintage == 0 or units.vintage == selector.vintage)
        and (selector.authorized_for == pb.AUTHORIZED_USE_UNSPECIFIED or bool(units.authorization_id))
    )


def _take(blocks: Sequence[Block], quantity: int, from_end: bool = False) -> list[Block] | None:
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


def exported(account_id: str, registry: str) -> Holding:
    """Where exported serials stay: in the exporting account, marked with the registry they
    went to ("@JP": no reservation id can start so), which alone can send them back."""
    return Holding(account_id, Status.EXPORTED, f"@{registry}")


def changes(event: Message) -> list[Change]:
    """What a recorded event does to the block index (nothing for other events)."""
    match event:
        case pb.UnitsIssued():
            b = event.block
            return [Put(Block(b.namespace, b.start, b.end, Holding(event.account_id), Units.of(b.attributes)))]
        case pb.InboundTransferAccepted():
            owner = Holding(event.to_account_id)
            new: list[Change] = [
                Put(Block(b.namespace, b.start, b.end, owner, Units.of(b.attributes))) for b in event.blocks
            ]
            back = [
                Move(r.block.namespace, r.block.start, r.block.end, exported(r.exported_by, event.from_registry), owner)
                for r in event.returning
            ]
            return new + back
        case pb.UnitsAllocated():
            source = Holding(event.from_account_id)
            return [
                Move(a.block.namespace, a.block.start, a.block.end, source, target)
                for a in event.allocations
                for target in [Holding(a.account_id, Status.CANCELLED if a.cancelled else Status.HELD)]
                if target != source
            ]
        case pb.UnitsReserved():
            source, target = Holding(event.account_id), Holding(event.account_id, Status.RESERVED, event.reservation_id)
        case pb.ReservationReleased():
            source, target = Holding(event.account_id, Status.RESERVED, event.reservation_id), Holding(event.account_id)
        case pb.UnitsTransferred():
            source = Holding(event.from_account_id, Status.RESERVED, event.reservation_id)
            target = Holding(event.to_account_id)
        case pb.UnitsRetired():
            source = Holding(event.account_id, Status.RESERVED, event.retirement_id)
            target = Holding(event.account_id, Status.CANCELLED if event.cancelled else Status.RETIRED)
        case pb.UnitsExpired():
            source = Holding(event.account_id, Status.RESERVED, event.expiry_id)
            target = Holding(event.account_id, Status.EXPIRED)
        case pb.BlocksFrozen():
            source, target = Holding(event.account_id), frozen_under(event.account_id, event.freeze_id)
        case pb.BlocksUnfrozen():
            source, target = frozen_under(event.account_id, event.freeze_id), Holding(event.account_id)
        case pb.ExternalTransferCompleted():
            source = Holding(event.account_id, Status.RESERVED, event.transfer_id)
            target = exported(event.account_id, event.to_registry)
        case pb.ExternalTransferReturned():
            source, target = Holding(event.account_id, Status.RESERVED, event.transfer_id), Holding(event.account_id)
        case _:
            return []
    return [Move(b.namespace, b.start, b.end, source, target) for b in event.blocks]
