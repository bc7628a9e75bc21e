"""PROPOSAL_ACCOUNT: the account a registry operation issues into or uses units from is one compliance has
seen opened, in the party the proposal names (the registry and its log agree on whose
units they are)."""

from __future__ import annotations

from services.compliance.domain.rules.rule import ACCOUNTS, Finding, ProposalCase, Rule


def proposal_account(case: ProposalCase) -> Finding:
    proposal = case.proposal
    known = case.facts.accounts.get(proposal.account_id)
    if known is None:
        return Finding([f"unknown account {proposal.account_id}"], "")
    if known != proposal.jurisdiction:
        return Finding([f"account {proposal.account_id} is {known}'s, the proposal says {proposal.jurisdiction}"], "")
    return Finding([], f"account of {known}")


RULE = Rule(
    code="PROPOSAL_ACCOUNT",
    numeric=8102,
    family=ACCOUNTS,
    meaning="the account a registry operation issues units into or takes them from was opened, "
    "in the party the proposal names",
    evidence="`unknown account <id>` or `account <id> is <JUR>'s, the proposal says <JUR>`; passed: `account of <JUR>`",
    check=proposal_account,
)
