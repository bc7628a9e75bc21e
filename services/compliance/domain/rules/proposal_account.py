"""PROPOSAL_ACCOUNT: the account a registry operation issues into or uses units from is one compliance has
seen opened, in the party the proposal names (the registry and its log agree on whose
units they are)."""

from __future__ import annotations

from services.compliance.domain.rules.rule import ACCOUNTS, Finding, ProposalCase, Rule
from tonne.v1 import registry_pb2 as rpb


def proposal_account(case: ProposalCase) -> Finding:
    proposal = case.proposal
    known = case.facts.accounts.get(proposal.account_id)
    # A frozen account passes the registry's own acts; an unknown or closed one nothing.
    if (standing := case.facts.standing(proposal.account_id, by_authority(proposal))) is not None:
        return Finding([standing], "")
    assert known is not None  # standing names an unknown account
    if known != proposal.jurisdiction:
        return Finding([f"account {proposal.account_id} is {known}'s, the proposal says {proposal.jurisdiction}"], "")
    return Finding([], f"account of {known}")


def by_authority(proposal: rpb.ScreenProposal) -> bool:
    """The registry's own act: a mandatory or OMGE cancellation, or an expiry."""
    authority = (rpb.CANCELLATION_MANDATORY, rpb.CANCELLATION_OMGE)
    cancelled = proposal.HasField("retirement") and proposal.retirement.cancellation in authority
    return cancelled or proposal.HasField("expiry")


RULE = Rule(
    code="PROPOSAL_ACCOUNT",
    numeric=8102,
    family=ACCOUNTS,
    meaning="the account a registry operation issues units into or takes them from was opened, is not closed, "
    "nor frozen (unless the registry itself acts: a mandatory or OMGE cancellation, an expiry), "
    "in the party the proposal names",
    evidence="`unknown account <id>`, `account <id> is closed`, `account <id> is frozen`, or "
    "`account <id> is <JUR>'s, the proposal says <JUR>`; passed: `account of <JUR>`",
    check=proposal_account,
)
