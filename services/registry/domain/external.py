"""External transfers (DOMAIN.md §4, transaction 03): units leave for an account in a
registry tonne does not keep. The holder proposes (the units are reserved under the
transfer's id and the proposal goes to that registry's channel); that registry answers on
its own channel; a refusal, or no answer by the proposal's expiry, returns the units.
Accepted units are exported: their serials stay known here, in the transferring account
with status "exported", so they can neither be issued again nor move again here.

Pure: every fact arrives as an argument (docs/national-registry-protocol.md)."""

from __future__ import annotations

from collections.abc import Sequence, Set
from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message

from services.common.errors import DomainError
from services.registry.domain.accounts import Account
from services.registry.domain.blocks import Block
from services.registry.domain.ledger import Held, Ledger, check, is_party, outgoing, text_ok, unfrozen
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
