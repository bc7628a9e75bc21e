"""Screening before units move or are used up: the transaction log of the venue. A
delivery (`ScreenTransfer`, from settlement) and a registry operation (`ScreenProposal`:
retirement, cancellation, expiry) each run their rules.

Each rule is a predicate with a stable code, one module each under `rules/` (the table:
docs/compliance-rules.md); a decision names every rule it ran, whether it passed, the
evidence, and the policy (`<id>@<version>`) it ran under: the acquiring jurisdiction's for
the use of the transfer, else the default (domain/policies.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from services.compliance.domain.facts import Facts
from services.compliance.domain.policies import Policies, Policy, Use
from services.compliance.domain.rules import PROPOSAL_RULES, RULES, Case, ProposalCase, numeric
from services.compliance.domain.rules.double_claiming import claims
from services.compliance.domain.validation import refuse, refuse_proposal
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as rpb

__all__ = ["Policies", "Policy", "claims", "proposal_refusal", "refusal", "screen", "screen_proposal", "selected"]


def use_of(request: cpb.ScreenTransfer, policies: Policies) -> Use:
    """What the acquirer uses the units for: `ScreenTransfer` names no use yet, so the
    default policy's `cross_border_use`, as before policies were per use."""
    return policies.default.serves


def selected(request: cpb.ScreenTransfer, facts: Facts, policies: Policies | Policy) -> tuple[Policy, Use]:
    """The policy `request` is screened under and the use it is screened for. A single
    `Policy` is used as it is, for whoever acquires (tests, benches)."""
    if isinstance(policies, Policy):
        return policies, policies.serves
    use = use_of(request, policies)
    return policies.select(facts.accounts.get(request.to_account_id), use), use


def screen(request: cpb.ScreenTransfer, facts: Facts, policies: Policies | Policy) -> cpb.ScreeningDecision:
    policy, use = selected(request, facts, policies)
    case = Case(request, facts, policy, use)
    results = [rule.run(case) for rule in RULES]
    return cpb.ScreeningDecision(
        request_id=request.request_id,
        trade_id=request.trade_id,
        verdict=cpb.APPROVED if all(r.passed for r in results) else cpb.REJECTED,
        results=results,
        policy_version=policy.version,
        request=request,
        policy=policy.id,
    )


def refusal(request: cpb.ScreenTransfer, problems: list[str], policies: Policies | Policy) -> cpb.ScreeningDecision:
    """A malformed request's rejection (validation.refuse: no rule runs), numbered and
    naming the policy in force like every decision: the default, as no jurisdiction of a
    malformed request is looked up."""
    policy = policies if isinstance(policies, Policy) else policies.default
    decision = refuse(request, problems, policy.version)
    for result in decision.results:
        result.numeric_code = numeric(result.code)
    decision.policy = policy.id
    return decision


def proposal_policy(proposal: rpb.ScreenProposal, policies: Policies | Policy) -> Policy:
    """A retirement toward an NDC or OIMP claim is screened under the claiming party's
    policy for that use; every other proposal under the default."""
    if isinstance(policies, Policy):
        return policies
    retired = proposal.retirement
    if proposal.HasField("retirement") and not retired.cancelled and retired.use in (rpb.CLAIM_NDC, rpb.CLAIM_OIMP):
        use: Use = "NDC" if retired.use == rpb.CLAIM_NDC else "OIMP"
        return policies.select(proposal.jurisdiction, use)
    return policies.default


def screen_proposal(
    proposal: rpb.ScreenProposal,
    facts: Facts,
    used: Sequence[rpb.SerialBlock],
    policies: Policies | Policy,
    issued: Sequence[rpb.SerialBlock] = (),
) -> cpb.ProposalScreened:
    """`used`: the serials compliance recorded as used up that share one with the
    proposal; `issued`: for an issuance, those it recorded as issued."""
    policy = proposal_policy(proposal, policies)
    case = ProposalCase(proposal, facts, used, policy, issued)
    results = [rule.run(case) for rule in PROPOSAL_RULES]
    return cpb.ProposalScreened(
        proposal_id=proposal.proposal_id,
        account_id=proposal.account_id,
        verdict=cpb.APPROVED if all(r.passed for r in results) else cpb.REJECTED,
        results=results,
        policy=policy.id,
        request=proposal,
    )


def proposal_refusal(
    proposal: rpb.ScreenProposal, problems: list[str], policies: Policies | Policy
) -> cpb.ProposalScreened:
    policy = policies if isinstance(policies, Policy) else policies.default
    decision = refuse_proposal(proposal, problems, policy.id)
    for result in decision.results:
        result.numeric_code = numeric(result.code)
    return decision
