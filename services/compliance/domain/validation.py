"""Checks of what arrives from Kafka, which can carry anything: identifiers the size and
shape of the API's (services.common.inputs), quantities within int64, bounded text.

A refusal names fields and sizes, never echoes the offending value (it may be 1 MB).
"""

from __future__ import annotations

from google.protobuf.message import Message

from services.common.errors import DomainError
from services.common.inputs import is_identifier
from services.compliance.domain.facts import spent
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as rpb

INT64_MAX = 2**63 - 1
_TEXT_MAX = 200


def _identifier(name: str, value: str) -> list[str]:
    if is_identifier(value):
        return []
    return [f"{name} is not an identifier (1-64 of A-Z a-z 0-9 . _ : @ -; got {len(value)} characters)"]


def _text(name: str, value: str) -> list[str]:
    if 0 < len(value) <= _TEXT_MAX and all(ch.isprintable() and not "\ud800" <= ch <= "\udfff" for ch in value):
        return []
    return [f"{name} must be 1-{_TEXT_MAX} printable characters (got {len(value)})"]


def _quantity(name: str, value: int) -> list[str]:
    return [] if 0 < value <= INT64_MAX else [f"{name} must be within 1..{INT64_MAX}"]


def request_problems(request: cpb.ScreenTransfer) -> list[str]:
    """What is wrong with a screening request's fields, beyond its two keys."""
    return [
        *_identifier("reservation_id", request.reservation_id),
        *_identifier("from_account_id", request.from_account_id),
        *_identifier("to_account_id", request.to_account_id),
        *_quantity("quantity", request.quantity),
    ]


def check_request_keys(request: cpb.ScreenTransfer) -> None:
    """The decision is keyed by these: without them there is nothing to answer to."""
    problems = [*_identifier("request_id", request.request_id), *_identifier("trade_id", request.trade_id)]
    if problems:
        raise DomainError("REQUEST_INVALID", "the screening request cannot be keyed", problems)


def refuse(request: cpb.ScreenTransfer, problems: list[str], policy_version: str) -> cpb.ScreeningDecision:
    """A rejection that runs no rule and keeps none of the malformed fields."""
    return cpb.ScreeningDecision(
        request_id=request.request_id,
        trade_id=request.trade_id,
        verdict=cpb.REJECTED,
        results=[cpb.RuleResult(code="REQUEST_INVALID", passed=False, evidence="; ".join(problems))],
        policy_version=policy_version,
        request=cpb.ScreenTransfer(request_id=request.request_id, trade_id=request.trade_id),
    )


def check_fact(event: Message) -> None:
    """An observed registry event compliance would store: refused with FACT_INVALID
    (the record is dead-lettered) rather than stored when malformed."""
    problems: list[str] = []
    match event:
        case rpb.AccountOpened():
            problems += _identifier("account_id", event.account_id) + _text("jurisdiction", event.jurisdiction)
        case rpb.AccountFrozen() | rpb.AccountUnfrozen() | rpb.AccountClosed():
            problems += _identifier("account_id", event.account_id)
        case rpb.AuthorizationRevoked():
            problems += _identifier("authorization_id", event.authorization_id)
        case rpb.AuthorizationRecorded() | rpb.AuthorizationChanged():
            loa = event.authorization
            problems += _identifier("authorization_id", loa.authorization_id) + _text("host_party", loa.host_party)
            problems += _quantity("quantity", loa.quantity)
        case rpb.ProposalRejected():
            problems += _identifier("proposal_id", event.proposal_id)
        case rpb.UnitsReserved():
            problems += _identifier("reservation_id", event.reservation_id)
            problems += _identifier("account_id", event.account_id) + _quantity("quantity", event.quantity)
        case rpb.UnitsTransferred():
            for n, block in enumerate(event.blocks):
                if block.attributes.authorization_id:
                    problems += _identifier(f"blocks[{n}].authorization_id", block.attributes.authorization_id)
                if block.start > block.end:
                    problems.append(f"blocks[{n}] ends before it starts")
            if not problems:
                problems += [p for loa, q in spent(event).items() for p in _quantity(f"units of {loa}", q)]
    if problems:
        raise DomainError("FACT_INVALID", f"observed {event.DESCRIPTOR.name} is malformed", problems[:20])


# Blocks one proposal may carry: the registry picks at most this many for one operation.
PROPOSAL_BLOCKS_MAX = 10_000


def check_proposal_keys(proposal: rpb.ScreenProposal) -> None:
    """A proposal's answer is keyed by its id and account: without them nothing answers."""
    problems = [*_identifier("proposal_id", proposal.proposal_id), *_identifier("account_id", proposal.account_id)]
    if problems:
        raise DomainError("REQUEST_INVALID", "the proposal cannot be keyed", problems)


def proposal_problems(proposal: rpb.ScreenProposal) -> list[str]:
    """What is wrong with a proposal's fields, beyond its keys: what no rule could read."""
    problems = _text("jurisdiction", proposal.jurisdiction) + _quantity("quantity", proposal.quantity)
    if not 0 < len(proposal.blocks) <= PROPOSAL_BLOCKS_MAX:
        problems.append(f"a proposal carries 1-{PROPOSAL_BLOCKS_MAX} blocks (got {len(proposal.blocks)})")
    for n, block in enumerate(proposal.blocks[:PROPOSAL_BLOCKS_MAX]):
        problems += _identifier(f"blocks[{n}].namespace", block.namespace)
        if not 1 <= block.start <= INT64_MAX or not 1 <= block.end <= INT64_MAX:
            problems.append(f"blocks[{n}] serials must be within 1..{INT64_MAX}")
        if block.attributes.authorization_id:
            problems += _identifier(f"blocks[{n}].authorization_id", block.attributes.authorization_id)
    if proposal.WhichOneof("outcome") is None:
        problems.append("a proposal carries its outcome (an issuance, a retirement, an expiry or a transfer)")
    return problems[:20]


def refuse_proposal(proposal: rpb.ScreenProposal, problems: list[str], policy: str) -> cpb.ProposalScreened:
    """A rejection that runs no rule and keeps none of the malformed fields."""
    return cpb.ProposalScreened(
        proposal_id=proposal.proposal_id,
        account_id=proposal.account_id,
        verdict=cpb.REJECTED,
        results=[cpb.RuleResult(code="REQUEST_INVALID", passed=False, evidence="; ".join(problems))],
        policy=policy,
        request=rpb.ScreenProposal(proposal_id=proposal.proposal_id, account_id=proposal.account_id),
    )
