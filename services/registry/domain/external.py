"""External transfers (DOMAIN.md §4, transaction 03): units leave for an account in a
registry tonne does not keep. The holder proposes (the units are reserved under the
transfer's id and the proposal goes to that registry's channel); that registry answers on
its own channel; a refusal, or no answer by the proposal's expiry, returns the units.
Accepted units are exported: their serials stay known here, in the transferring account
with status "exported", so they can neither be issued again nor move again here.

Pure: every fact arrives as an argument (docs/national-registry-protocol.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message

from services.common.errors import DomainError
from services.common.inputs import is_party
from services.registry.domain.accounts import Account
from services.registry.domain.blocks import Block, Units
from services.registry.domain.ledger import (
    BLOCKS_MAX,
    EVIDENCE_LIMIT,
    Held,
    Ledger,
    authorized,
    check,
    exported,
    not_closed,
    outgoing,
    serial_range,
    text_ok,
    unfrozen,
    valid_units,
)
from tonne.v1 import registry_pb2 as pb


class ExternalTransfers:
    def __init__(self, ledger: Ledger, registries: Set[str], expiry: timedelta) -> None:
        """`registries`: the parties whose registries have a channel here; `expiry`: how
        long a proposal waits for its answer."""
        self.ledger = ledger
        self.registries = registries
        self.expiry = expiry

    def propose(
        self, command: pb.ProposeExternalTransfer, account: Account | None, held: Held, now: datetime
    ) -> list[Message]:
        """`held`: the facts of the units it would pick (its id counts as a transfer's)."""
        check(command)
        if account is None:
            raise DomainError("ACCOUNT_UNKNOWN", f"no account {command.account_id!r}", [command.account_id])
        if not is_party(command.to_registry) or command.to_registry not in self.registries:
            raise DomainError(
                "EXTERNAL_REGISTRY_UNKNOWN", "no registry of that party has a channel here", [command.to_registry[:8]]
            )
        if command.to_registry == account.jurisdiction or not command.to_account:
            raise DomainError("TRANSFER_INVALID", "an external transfer names an account in another party's registry")
        reserved = self.ledger.pick(command, account, held)
        proposed = pb.ExternalTransferProposed(
            transfer_id=command.transfer_id,
            account_id=account.account_id,
            jurisdiction=account.jurisdiction,
            to_registry=command.to_registry,
            to_account=command.to_account,
            quantity=command.quantity,
            blocks=reserved.blocks,
            by=command.by,
        )
        proposed.expires_at.FromDatetime(now + self.expiry)
        return [reserved, proposed]

    def answer(
        self,
        command: pb.AnswerExternalTransfer,
        owner: Account | None,
        channel: str,
        reserved: Sequence[Block],
        frozen_projects: Set[str] = frozenset(),
    ) -> list[Message]:
        """The acquiring registry's answer (`channel`: the registry it came from);
        `owner`: the account whose reservation the transfer's id names, if any. Units of
        an account or project frozen since the proposal do not leave: the acceptance is
        refused and the proposal waits (for a later answer, or its expiry)."""
        check(command)
        proposal = _pending(owner, command.transfer_id)
        if channel != proposal.to_registry:
            raise DomainError(
                "CHANNEL_JURISDICTION_MISMATCH",
                f"only {proposal.to_registry}'s registry answers this proposal",
                [channel or "api"],
            )
        if command.accepted:
            assert owner is not None  # _pending found its proposal
            outgoing(owner)
            unfrozen(reserved, frozen_projects)
            return [
                pb.ExternalTransferCompleted(
                    transfer_id=proposal.transfer_id,
                    account_id=proposal.account_id,
                    jurisdiction=proposal.jurisdiction,
                    to_registry=proposal.to_registry,
                    to_account=proposal.to_account,
                    quantity=proposal.quantity,
                    blocks=[b.to_message() for b in reserved],
                )
            ]
        if not text_ok(command.reason):
            raise DomainError("REASON_REQUIRED", "a refusal says why, in 1-200 printable characters")
        return [returned(proposal, reserved, "EXTERNAL_TRANSFER_REFUSED", command.reason)]

    def expire(
        self, command: pb.ExpireExternalTransfer, owner: Account | None, reserved: Sequence[Block], now: datetime
    ) -> list[Message]:
        """Return the units of a proposal unanswered at its expiry; nothing for one that was
        answered meanwhile or is not yet due (schedulers may race: each returns once)."""
        check(command)
        proposal = owner.external.get(command.transfer_id) if owner is not None else None
        if proposal is None or now < proposal.expires_at.ToDatetime(tzinfo=UTC):
            return []
        reason = f"no answer from {proposal.to_registry}'s registry by {proposal.expires_at.ToJsonString()}"
        return [returned(proposal, reserved, "EXTERNAL_TRANSFER_EXPIRED", reason)]


def receive(
    command: pb.ProposeInboundTransfer,
    channel: str,
    target: Account | None,
    registries: Set[str],
    *,
    transfer_used: bool,
    overlapping: Sequence[Block],
    authorizations: Mapping[str, pb.RecordAuthorization],
) -> list[Message]:
    """Units from `channel`'s registry into `target`, an open account here that is not
    terminal. `transfer_used`: that registry sent this transfer id before; `overlapping`:
    blocks here that share a serial with those proposed (a bounded few): serials known here
    are refused (they cannot be both here and there) unless every one of them was exported
    to that very registry, with the same attributes: those come back; `authorizations`:
    those the blocks name, as recorded here."""
    check(command)
    if channel not in registries:
        raise DomainError(
            "COMMAND_NOT_ALLOWED_ON_CHANNEL", "only a registry's own channel transfers units in", [channel or "api"]
        )
    if not command.transfer_id or transfer_used:
        raise DomainError("SEQUENCE_DUPLICATE_ID", f"transfer id {command.transfer_id!r} is missing or used")
    if not 0 < len(command.blocks) <= BLOCKS_MAX:
        raise DomainError("TRANSFER_INVALID", f"an inbound transfer carries 1-{BLOCKS_MAX} blocks")
    if target is None:
        raise DomainError("ACCOUNT_UNKNOWN", f"no account {command.to_account_id!r}", [command.to_account_id])
    not_closed(target.ref)
    if target.terminal:
        raise DomainError("ACCOUNT_TYPE_NOT_ALLOWED", "units are not transferred into a terminal account")
    ordered = sorted(command.blocks, key=lambda b: (b.namespace, b.start))
    for block, following in zip(ordered, [*ordered[1:], None], strict=True):
        serial_range(block)
        valid_units(block)
        authorized(block.attributes, authorizations.get(block.attributes.authorization_id))
        if following is not None and following.namespace == block.namespace and following.start <= block.end:
            raise DomainError(
                "SERIAL_RANGE_INVALID", "the blocks overlap each other", [f"{block.namespace}:{block.start}"]
            )
    new: list[pb.SerialBlock] = []
    returning: list[pb.ReturningBlock] = []
    for block in ordered:
        known = [
            o for o in overlapping if o.namespace == block.namespace and o.start <= block.end and block.start <= o.end
        ]
        if not known:
            new.append(block)
        elif coming_back(block, known, channel):
            returning += [
                pb.ReturningBlock(
                    block=_piece(block, max(o.start, block.start), min(o.end, block.end)), exported_by=o.account_id
                )
                for o in known
            ]
        else:
            raise DomainError(
                "EXTERNAL_SERIALS_KNOWN",
                "serials proposed are known here, and not as exported to this registry",
                [o.label() for o in known[:EVIDENCE_LIMIT]],
            )
    return [
        pb.InboundTransferAccepted(
            transfer_id=command.transfer_id,
            from_registry=channel,
            from_account=command.from_account,
            to_account_id=target.account_id,
            jurisdiction=target.jurisdiction,
            quantity=sum(b.end - b.start + 1 for b in command.blocks),
            blocks=new,
            returning=returning,
        )
    ]


def coming_back(block: pb.SerialBlock, known: Sequence[Block], registry: str) -> bool:
    """Every serial of `block` is covered by `known` blocks exported to `registry` with the
    block's attributes."""
    units = Units.of(block.attributes)
    if any(o.holding != exported(o.account_id, registry) or o.units != units for o in known):
        return False
    covered = sum(min(o.end, block.end) - max(o.start, block.start) + 1 for o in known)
    return covered == block.end - block.start + 1


def _piece(block: pb.SerialBlock, start: int, end: int) -> pb.SerialBlock:
    return pb.SerialBlock(namespace=block.namespace, start=start, end=end, attributes=block.attributes)


def named(owner: Account | None, transfer_id: str) -> Account:
    """The account whose reservation the transfer's id names: what an answer or an expiry
    is recorded on (a transfer id that names none is refused)."""
    if owner is None:
        raise DomainError("EXTERNAL_TRANSFER_UNKNOWN", "no external transfer awaits an answer", [transfer_id])
    return owner


def _pending(owner: Account | None, transfer_id: str) -> pb.ExternalTransferProposed:
    proposal = owner.external.get(transfer_id) if owner is not None else None
    if proposal is None:
        # Never proposed, or answered (or expired) already: an answer changes nothing now.
        raise DomainError("EXTERNAL_TRANSFER_UNKNOWN", "no external transfer awaits an answer", [transfer_id])
    return proposal


def returned(
    proposal: pb.ExternalTransferProposed, reserved: Sequence[Block], code: str, reason: str
) -> pb.ExternalTransferReturned:
    return pb.ExternalTransferReturned(
        transfer_id=proposal.transfer_id,
        account_id=proposal.account_id,
        jurisdiction=proposal.jurisdiction,
        to_registry=proposal.to_registry,
        quantity=proposal.quantity,
        blocks=[b.to_message() for b in reserved],
        code=code,
        reason=reason,
    )
