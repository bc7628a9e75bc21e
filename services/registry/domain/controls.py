"""The Union Registry's controls (docs/trust.md "Registry controls"), pure decisions.

- Freezes: the operator, a jurisdiction's registry operator or regulator freezes an
  account (no units leave it) or a project (its units neither reserve nor transfer),
  always with a reason.
- Trusted-account list per account: one representative proposes, another approves
  (four eyes), and the entry takes effect only after the registry's delay.
- Transfers the holder asks for: to an account trusted now they complete at once; to
  any other they are capped per transfer and scheduled after the registry's delay, so a
  hijacked account's transfer can still be cancelled. The account's own per-transfer
  limit applies to every outgoing transfer, the venue's included.

Like the ledger: every fact arrives as an argument (`now` too), events come back.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import DomainError
from services.common.inputs import is_party
from services.registry.domain.accounts import Account, AccountRef, Project
from services.registry.domain.blocks import Block, Holding
from services.registry.domain.ledger import (
    EVIDENCE_LIMIT,
    INT64_MAX,
    Held,
    Ledger,
    check,
    not_closed,
    outgoing,
    serial_range,
    text_ok,
    transferred,
)
from tonne.v1 import registry_pb2 as pb

# Who freezes what a reconciliation disputes, and the blocks of one account such a freeze
# names at most (a dispute over more freezes the account).
RECONCILIATION = "registry-reconciliation"
DISPUTE_BLOCKS_MAX = 1000


@dataclass(frozen=True)
class Policy:
    """The registry's own settings for the controls."""

    # An approved trusted account takes effect this long after the approval.
    trust_delay: timedelta = timedelta(days=7)
    # A transfer to an account outside the trusted list waits this long (the UR's 26 hours).
    untrusted_delay: timedelta = timedelta(hours=26)
    # Units per transfer to an account outside the trusted list (the UR's central limit).
    untrusted_cap: int = 2_000_000
    # How long a proposed external transfer waits for the acquiring registry's answer.
    external_expiry: timedelta = timedelta(hours=24)


def _reason(reason: str) -> None:
    if not text_ok(reason):
        raise DomainError("REASON_REQUIRED", "a freeze or cancellation needs a reason of 1-200 printable characters")


def _account(account: Account | None, account_id: str) -> Account:
    if account is None:
        raise DomainError("ACCOUNT_UNKNOWN", f"no account {account_id!r}", [account_id])
    return account


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class Controls:
    def __init__(self, policy: Policy, ledger: Ledger) -> None:
        self.policy = policy
        self.ledger = ledger

    # --- freezes ---

    def freeze_account(self, command: pb.FreezeAccount | pb.UnfreezeAccount, account: Account | None) -> list[Message]:
        """Freezing a frozen account (or thawing a thawed one) records nothing."""
        check(command)
        _reason(command.reason)
        account = _account(account, command.account_id)
        freeze = isinstance(command, pb.FreezeAccount)
        if account.frozen == freeze:
            return []
        kind = pb.AccountFrozen if freeze else pb.AccountUnfrozen
        return [
            kind(account_id=account.account_id, jurisdiction=account.jurisdiction, reason=command.reason, by=command.by)
        ]

    def freeze_disputed(self, account: Account, digest_id: str, held: Sequence[Block], reserved: int) -> list[Message]:
        """What a reconciliation's dispute freezes in `account`: its held blocks of the
        kinds in dispute (`held`, read up to one past DISPUTE_BLOCKS_MAX), under a freeze
        named after the digest; the whole account instead when `reserved` of those units
        are reserved (in flight to a settlement, which a block freeze would not stop) or
        more blocks than that share them."""
        reason = f"reconciliation {digest_id}: the registry's books differ"
        if reserved or len(held) > DISPUTE_BLOCKS_MAX:
            freeze = pb.FreezeAccount(account_id=account.account_id, reason=reason, by=RECONCILIATION)
            return self.freeze_account(freeze, account)
        freeze_id = f"reconciliation-{digest_id}"
        if not held or freeze_id in account.frozen_blocks:
            return []
        return [
            pb.BlocksFrozen(
                freeze_id=freeze_id,
                account_id=account.account_id,
                jurisdiction=account.jurisdiction,
                blocks=[b.to_message() for b in held],
                reason=reason,
                by=RECONCILIATION,
            )
        ]

    def close_account(self, command: pb.CloseAccount, account: Account | None, held: int) -> list[Message]:
        """Close an account that holds nothing: `held` is its held units; its reserved
        units, open reservations and scheduled transfers are the account's own."""
        check(command)
        _reason(command.reason)
        account = _account(account, command.account_id)
        not_closed(account.ref)
        if held or account.reservations or account.scheduled:
            raise DomainError(
                "ACCOUNT_NOT_EMPTY",
                "an account closes once it holds nothing",
                [f"held: {held}", f"reserved: {account.reserved}", f"scheduled transfers: {len(account.scheduled)}"],
            )
        return [
            pb.AccountClosed(
                account_id=account.account_id, jurisdiction=account.jurisdiction, reason=command.reason, by=command.by
            )
        ]

    def freeze_blocks(
        self, command: pb.FreezeBlocks, account: Account | None, covering: Sequence[Block]
    ) -> list[Message]:
        """Freeze serials the account holds: `covering`, the blocks sharing a serial with
        the range (a bounded few), must all be the account's held units and cover it."""
        check(command)
        _reason(command.reason)
        account = _account(account, command.account_id)
        if not command.freeze_id or command.freeze_id in account.frozen_blocks:
            raise DomainError("SEQUENCE_DUPLICATE_ID", f"freeze id {command.freeze_id!r} is missing or in force")
        serial_range(pb.SerialBlock(namespace=command.namespace, start=command.start, end=command.end))
        start, end = command.start, command.end
        covered = sum(min(b.end, end) - max(b.start, start) + 1 for b in covering)
        if covered != end - start + 1 or any(b.holding != Holding(account.account_id) for b in covering):
            raise DomainError(
                "UNITS_NOT_HELD",
                "only serials the account holds (not reserved, retired or frozen) are frozen",
                [b.label() for b in covering[:EVIDENCE_LIMIT]] or [f"{command.namespace}:{start}-{end}"],
            )
        pieces = [
            Block(b.namespace, max(b.start, start), min(b.end, end), b.holding, b.units).to_message() for b in covering
        ]
        return [
            pb.BlocksFrozen(
                freeze_id=command.freeze_id,
                account_id=account.account_id,
                jurisdiction=account.jurisdiction,
                blocks=pieces,
                reason=command.reason,
                by=command.by,
            )
        ]

    def unfreeze_blocks(
        self, command: pb.UnfreezeBlocks, account: Account | None, frozen: Sequence[Block]
    ) -> list[Message]:
        """`frozen`: the blocks frozen under the freeze id (blocks.frozen_under)."""
        check(command)
        _reason(command.reason)
        account = _account(account, command.account_id)
        if command.freeze_id not in account.frozen_blocks:
            raise DomainError("FREEZE_UNKNOWN", f"no freeze {command.freeze_id!r} in force", [command.freeze_id])
        return [
            pb.BlocksUnfrozen(
                freeze_id=command.freeze_id,
                account_id=account.account_id,
                jurisdiction=account.jurisdiction,
                blocks=[b.to_message() for b in frozen],
                reason=command.reason,
                by=command.by,
            )
        ]

    def freeze_project(self, command: pb.FreezeProject | pb.UnfreezeProject, project: Project) -> list[Message]:
        check(command)
        _reason(command.reason)
        if not command.project_id or not is_party(command.host_party):
            raise DomainError("PROJECT_INVALID", "a project id and its host party (ISO 3166 alpha-2) are required")
        if project.host_party and project.host_party != command.host_party:
            raise DomainError("PROJECT_PARTY_MISMATCH", f"project {command.project_id!r} is another party's")
        freeze = isinstance(command, pb.FreezeProject)
        if project.frozen == freeze:
            return []
        kind = pb.ProjectFrozen if freeze else pb.ProjectUnfrozen
        return [
            kind(project_id=command.project_id, host_party=command.host_party, reason=command.reason, by=command.by)
        ]

    # --- the trusted-account list ---

    def propose_trusted(
        self, command: pb.ProposeTrustedAccount, account: Account | None, trusted: AccountRef | None
    ) -> list[Message]:
        check(command)
        account = _account(account, command.account_id)
        if trusted is None:
            raise DomainError(
                "ACCOUNT_UNKNOWN", f"no account {command.trusted_account_id!r}", [command.trusted_account_id]
            )
        if trusted.account_id == account.account_id:
            raise DomainError("TRUSTED_ACCOUNT_INVALID", "an account does not trust itself")
        if trusted.account_id in account.trusted:
            raise DomainError("TRUSTED_ACCOUNT_EXISTS", f"{trusted.account_id!r} is on the list", [trusted.account_id])
        return [
            pb.TrustedAccountProposed(
                account_id=account.account_id, trusted_account_id=trusted.account_id, by=command.by
            )
        ]

    def approve_trusted(
        self, command: pb.ApproveTrustedAccount, account: Account | None, now: datetime
    ) -> list[Message]:
        check(command)
        account = _account(account, command.account_id)
        entry = account.trusted.get(command.trusted_account_id)
        if entry is None or entry.effective_at is not None:
            raise DomainError(
                "TRUSTED_ACCOUNT_UNKNOWN",
                f"no proposal to trust {command.trusted_account_id!r}",
                [command.trusted_account_id],
            )
        if not command.by or command.by == entry.proposed_by:
            raise DomainError("FOUR_EYES_REQUIRED", "the approver must be another person than the proposer")
        return [
            pb.TrustedAccountApproved(
                account_id=account.account_id,
                trusted_account_id=command.trusted_account_id,
                proposed_by=entry.proposed_by,
                by=command.by,
                effective_at=_stamp(now + self.policy.trust_delay),
            )
        ]

    def remove_trusted(self, command: pb.RemoveTrustedAccount, account: Account | None) -> list[Message]:
        """Takes effect at once: removing trust never needs waiting."""
        check(command)
        account = _account(account, command.account_id)
        if command.trusted_account_id not in account.trusted:
            raise DomainError(
                "TRUSTED_ACCOUNT_UNKNOWN",
                f"{command.trusted_account_id!r} is not on the list",
                [command.trusted_account_id],
            )
        return [
            pb.TrustedAccountRemoved(
                account_id=account.account_id, trusted_account_id=command.trusted_account_id, by=command.by
            )
        ]

    def set_transfer_limit(self, command: pb.SetTransferLimit, account: Account | None) -> list[Message]:
        check(command)
        account = _account(account, command.account_id)
        if command.per_transfer > INT64_MAX:
            raise DomainError("QUANTITY_INVALID", "the limit must be within int64 (0: none)")
        if command.per_transfer == account.transfer_limit:
            return []
        return [pb.TransferLimitSet(account_id=account.account_id, per_transfer=command.per_transfer, by=command.by)]

    # --- transfers the holder asks for ---

    def request_transfer(
        self,
        command: pb.RequestTransfer,
        account: Account | None,
        target: AccountRef | None,
        held: Held,
        now: datetime,
    ) -> list[Message]:
        """Reserve the units under the transfer's id; then either deliver them (the
        target is trusted now) or schedule the delivery after the delay."""
        check(command)
        account = _account(account, command.account_id)
        if target is None:
            raise DomainError("ACCOUNT_UNKNOWN", f"no account {command.to_account_id!r}", [command.to_account_id])
        if target.account_id == account.account_id:
            raise DomainError("TRANSFER_INVALID", "a transfer goes to another account")
        trusted = account.trusts(target.account_id, now)
        outgoing(account, command.quantity)
        if not trusted and command.quantity > self.policy.untrusted_cap:
            raise DomainError(
                "TRANSFER_LIMIT_EXCEEDED",
                f"at most {self.policy.untrusted_cap} units per transfer to an account outside the trusted list",
                [target.account_id],
            )
        reserved = self.ledger.pick(command, account, held)
        if trusted:
            blocks = [Block.reserved(b, account.account_id, command.transfer_id) for b in reserved.blocks]
            delivered = transferred(
                command.transfer_id, command.transfer_id, account, target, command.quantity, blocks, held.frozen
            )
            return [reserved, delivered]
        scheduled = pb.TransferScheduled(
            transfer_id=command.transfer_id,
            account_id=account.account_id,
            to_account_id=target.account_id,
            quantity=command.quantity,
            execute_at=_stamp(now + self.policy.untrusted_delay),
            by=command.by,
        )
        return [reserved, scheduled]

    def execute_transfer(
        self,
        command: pb.ExecuteTransfer,
        account: Account | None,
        target: AccountRef | None,
        reserved: Sequence[Block],
        frozen_projects: Set[str],
        now: datetime,
    ) -> list[Message]:
        """Deliver a scheduled transfer that has come due. One that can no longer be
        delivered (the account or a project frozen meanwhile) is cancelled with that
        reason, its units given back: every scheduled transfer ends exactly once. One
        already ended records nothing (another instance's scheduler got there first)."""
        check(command)
        account = _account(account, command.account_id)
        scheduled = account.scheduled.get(command.transfer_id)
        if scheduled is None:
            return []
        if now < scheduled.execute_at.ToDatetime(tzinfo=UTC):
            raise DomainError("TRANSFER_NOT_DUE", f"transfer {command.transfer_id!r} is not due yet")
        if target is None:  # accounts are never deleted: a corrupt fact, not a decision
            raise DomainError("ACCOUNT_UNKNOWN", f"no account {scheduled.to_account_id!r}", [scheduled.to_account_id])
        try:
            outgoing(account)
            return [
                transferred(
                    scheduled.transfer_id,
                    scheduled.transfer_id,
                    account,
                    target,
                    scheduled.quantity,
                    reserved,
                    frozen_projects,
                )
            ]
        except DomainError as refusal:
            return self._cancel(account, scheduled, reserved, refusal.code, refusal.reason, "registry")

    def cancel_transfer(
        self, command: pb.CancelTransfer, account: Account | None, reserved: Sequence[Block]
    ) -> list[Message]:
        check(command)
        _reason(command.reason)
        account = _account(account, command.account_id)
        scheduled = account.scheduled.get(command.transfer_id)
        if scheduled is None:
            raise DomainError(
                "TRANSFER_UNKNOWN", f"no scheduled transfer {command.transfer_id!r}", [command.transfer_id]
            )
        return self._cancel(account, scheduled, reserved, "TRANSFER_CANCELLED", command.reason, command.by)

    @staticmethod
    def _cancel(
        account: Account, scheduled: pb.TransferScheduled, reserved: Sequence[Block], code: str, reason: str, by: str
    ) -> list[Message]:
        return [
            pb.TransferCancelled(
                transfer_id=scheduled.transfer_id, account_id=account.account_id, code=code, reason=reason, by=by
            ),
            pb.ReservationReleased(
                reservation_id=scheduled.transfer_id,
                account_id=account.account_id,
                quantity=scheduled.quantity,
                blocks=[b.to_message() for b in sorted(reserved, key=lambda b: (b.namespace, b.start))],
            ),
        ]
