"""The transaction log's part in registry operations (DOMAIN.md §4; Kyoto's ITL): an
operation that uses units up (retirement, cancellation, expiry) or moves them (a holder's
transfer, an external transfer's proposal) is not completed when it is asked for. Its
units are reserved under the operation's id and the registry records a `ScreenProposal`
carrying the very event it would record; compliance screens it and answers
`ProposalScreened`. An approval completes the operation (that event, recorded); a
rejection, or no answer by the proposal's `expires_at`, gives the units back
(`ProposalRejected` beside `ReservationReleased`). Pure."""

from __future__ import annotations

from collections.abc import Sequence, Set
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from google.protobuf.message import Message

from services.common.errors import DomainError
from services.registry.domain.accounts import Account, AccountRef
from services.registry.domain.blocks import Block
from services.registry.domain.ledger import outgoing, transferred
from services.registry.domain.transactions import (
    CANCELLATIONS,
    EXPIRY,
    EXTERNAL_TRANSFER,
    INTERNAL_TRANSFER,
    ISSUANCE,
    RETIREMENT,
)
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as pb

# How long a proposal waits for the answer by default (TONNE_SCREENING_WINDOW_SECONDS).
WINDOW = timedelta(minutes=10)


def propose(decided: list[Message], party: str, now: datetime, window: timedelta) -> list[Message]:
    """The events of a decided retirement, cancellation, expiry, holder's transfer or
    external transfer ([UnitsReserved, the outcome]) of an account of `party`, as a
    proposal: the reservation, then the ScreenProposal that carries the outcome until the
    transaction log approves it."""
    reserved, outcome = decided
    assert isinstance(reserved, pb.UnitsReserved)
    proposal = pb.ScreenProposal(
        proposal_id=reserved.reservation_id,
        account_id=reserved.account_id,
        jurisdiction=party,
        quantity=reserved.quantity,
        blocks=reserved.blocks,
    )
    match outcome:
        case pb.UnitsRetired():
            proposal.retirement.CopyFrom(outcome)
            proposal.transaction_type = CANCELLATIONS[outcome.cancellation] if outcome.cancelled else RETIREMENT
        case pb.UnitsExpired():
            proposal.expiry.CopyFrom(outcome)
            proposal.transaction_type = EXPIRY
        case pb.ExternalTransferProposed():
            proposal.external_transfer.CopyFrom(outcome)
            proposal.transaction_type = EXTERNAL_TRANSFER
        case pb.UnitsTransferred():
            proposal.internal_transfer.CopyFrom(outcome)
            proposal.transaction_type = INTERNAL_TRANSFER
        case pb.TransferScheduled():
            proposal.scheduled_transfer.CopyFrom(outcome)
            proposal.transaction_type = INTERNAL_TRANSFER
        case _:
            raise TypeError(f"{outcome.DESCRIPTOR.name} is not screened as a proposal")
    proposal.expires_at.FromDatetime(now + window)
    return [reserved, proposal]


def propose_issuance(command: pb.RecordIssuance, account: Account, now: datetime, window: timedelta) -> list[Message]:
    """A decided issuance into `account` (the rules' landing account) as a proposal: it
    carries the command, decided again once approved (another issuance may have taken
    its serials meanwhile); nothing is reserved, nothing is issued yet."""
    block = command.block
    proposal = pb.ScreenProposal(
        proposal_id=command.issuance_id,
        transaction_type=ISSUANCE,
        account_id=account.account_id,
        jurisdiction=account.jurisdiction,
        quantity=block.end - block.start + 1,
        blocks=[block],
        issuance=command,
    )
    proposal.expires_at.FromDatetime(now + window)
    return [proposal]


def outcome(proposal: pb.ScreenProposal) -> Message:
    """The event the proposal completes with."""
    kind = proposal.WhichOneof("outcome")
    assert kind is not None  # propose sets one
    completed: Message = getattr(proposal, kind)
    return completed


def pending(account: Account | None, proposal_id: str) -> pb.ScreenProposal:
    proposal = account.screening.get(proposal_id) if account else None
    if proposal is None:
        raise DomainError("PROPOSAL_UNKNOWN", "no proposal awaits screening under this id", [proposal_id[:64]])
    return proposal


class Delivery(NamedTuple):
    """What completing a holder's transfer to a trusted account needs to know now (the
    facts may have moved since it was proposed): its target, its reserved blocks, the
    frozen projects among theirs."""

    target: AccountRef | None
    reserved: Sequence[Block]
    frozen: Set[str]


def answer(decision: cpb.ProposalScreened, account: Account | None, delivery: Delivery | None = None) -> list[Message]:
    """Complete the proposal the transaction log approved, or give its units back. A
    holder's transfer completes only if its units can still leave for its target (the
    account or a project not frozen, the target not closed since): else its units go back
    with the refusal's code."""
    proposal = pending(account, decision.proposal_id)
    if decision.verdict == cpb.APPROVED and proposal.HasField("internal_transfer"):
        assert account is not None and delivery is not None  # pending found it; the caller read the facts
        moved, (target, reserved, frozen) = proposal.internal_transfer, delivery
        try:
            if target is None:
                raise DomainError("ACCOUNT_UNKNOWN", f"no account {moved.to_account_id!r}", [moved.to_account_id])
            outgoing(account)
            return [
                transferred(moved.transfer_id, moved.transfer_id, account, target, moved.quantity, reserved, frozen)
            ]
        except DomainError as refusal:
            return rejected(proposal, refusal.code, refusal.reason, [])
    if decision.verdict == cpb.APPROVED:
        return [outcome(proposal)]
    failed = [r for r in decision.results if not r.passed]
    reason = "; ".join(f"{r.code}: {r.evidence}" for r in failed)[:500] or "rejected by the transaction log"
    return rejected(proposal, "SCREENING_REJECTED", reason, [r.code for r in failed])


def expire(account: Account | None, proposal_id: str, now: datetime) -> list[Message]:
    """A proposal still unanswered at its `expires_at` is rejected (nothing before)."""
    proposal = pending(account, proposal_id)
    if now < proposal.expires_at.ToDatetime(tzinfo=UTC):
        return []
    return rejected(proposal, "SCREENING_TIMEOUT", "the transaction log did not answer in time", [])


def rejected(proposal: pb.ScreenProposal, code: str, reason: str, rules: list[str]) -> list[Message]:
    """The refusal, and the proposal's units held again (an issuance held none)."""
    refused = pb.ProposalRejected(
        proposal_id=proposal.proposal_id,
        account_id=proposal.account_id,
        jurisdiction=proposal.jurisdiction,
        code=code,
        reason=reason,
        rules=rules,
    )
    if proposal.HasField("issuance"):
        return [refused]
    released = pb.ReservationReleased(
        reservation_id=proposal.proposal_id,
        account_id=proposal.account_id,
        quantity=proposal.quantity,
        blocks=proposal.blocks,
    )
    return [refused, released]
