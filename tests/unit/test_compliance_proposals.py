"""The transaction log's rules for registry operations (retirement, cancellation, expiry):
each with passing and failing evidence, numbered, under the claiming party's policy, and a
malformed proposal refused before any rule runs."""

from __future__ import annotations

import pytest

from services.compliance.domain.facts import Facts
from services.compliance.domain.policies import Policies
from services.compliance.domain.rules import BY_CODE, PROPOSAL_RULES
from services.compliance.domain.screening import proposal_refusal, screen_proposal
from services.compliance.domain.validation import proposal_problems
from tests.unit.factories import issuance, loa
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as rpb


def block(start: int = 1, end: int = 100, **kwargs: object) -> rpb.SerialBlock:
    kwargs.setdefault("authorization_id", "LOA-TH-1")
    return issuance("I", "TH-GOV", start, end, **kwargs).block  # type: ignore[arg-type]


def retirement(
    *blocks: rpb.SerialBlock, account: str = "CH-BUYER", party: str = "CH", use: rpb.ClaimUse.ValueType = rpb.CLAIM_NDC
) -> rpb.ScreenProposal:
    blocks = blocks or (block(),)
    quantity = sum(b.end - b.start + 1 for b in blocks)
    retired = rpb.UnitsRetired(
        retirement_id="RT-1",
        account_id=account,
        jurisdiction=party,
        quantity=quantity,
        blocks=blocks,
        beneficiary="Swiss Confederation",
        purpose="NDC 2030",
        use=use,
        claim_year=2030,
    )
    return rpb.ScreenProposal(
        proposal_id="RT-1",
        transaction_type="05-00",
        account_id=account,
        jurisdiction=party,
        quantity=quantity,
        blocks=blocks,
        retirement=retired,
    )


def facts() -> Facts:
    known = Facts()
    for account, party in (("CH-BUYER", "CH"), ("JP-BUYER", "JP"), ("TH-GOV", "TH")):
        known.apply(rpb.AccountOpened(account_id=account, jurisdiction=party))
    known.apply(rpb.AuthorizationRecorded(authorization=loa()))
    return known


def result(decision: cpb.ProposalScreened, code: str) -> cpb.RuleResult:
    [found] = [r for r in decision.results if r.code == code]
    return found


def cancellation() -> rpb.ScreenProposal:
    proposal = retirement(use=rpb.CLAIM_USE_UNSPECIFIED)
    proposal.retirement.cancelled = True
    proposal.transaction_type = "04-01"
    return proposal


Example = tuple[str, rpb.ScreenProposal, list[rpb.SerialBlock], str]
PASSING: list[Example] = [
    ("PROPOSAL_ACCOUNT", retirement(), [], "account of CH"),
    ("DOUBLE_USE", retirement(block(1, 50), block(51, 100)), [], "2 blocks, none used before"),
    ("USE_AUTHORIZED", retirement(), [], "authorized for NDC use by CH"),
    ("USE_AUTHORIZED", retirement(block(authorization_id=""), account="TH-GOV", party="TH"), [], "by TH"),
    ("USE_AUTHORIZED", retirement(block(authorization_id=""), use=rpb.CLAIM_VOLUNTARY), [], "no mitigation claim"),
    ("USE_AUTHORIZED", cancellation(), [], "no mitigation claim"),
]
FAILING: list[Example] = [
    ("PROPOSAL_ACCOUNT", retirement(account="XX-NOBODY"), [], "unknown account XX-NOBODY"),
    ("PROPOSAL_ACCOUNT", retirement(party="JP"), [], "account CH-BUYER is CH's, the proposal says JP"),
    ("DOUBLE_USE", retirement(block(1, 60), block(50, 100)), [], "JCM-TH:1-60 overlaps 50-100"),
    ("DOUBLE_USE", retirement(), [rpb.SerialBlock(namespace="JCM-TH", start=90, end=95)], "JCM-TH:90-95 used"),
    ("USE_AUTHORIZED", retirement(block(authorization_id="")), [], "JCM-TH:1-100 has no authorization from TH"),
    ("USE_AUTHORIZED", retirement(use=rpb.CLAIM_OIMP), [], "authorization does not cover OIMP"),
    ("USE_AUTHORIZED", retirement(block(vintage=2019)), [], "vintage 2019 outside 2021-2030"),
    # OIMP needs the host's authorization even for its own entities' claims.
    (
        "USE_AUTHORIZED",
        retirement(block(authorization_id=""), account="TH-GOV", party="TH", use=rpb.CLAIM_OIMP),
        [],
        "JCM-TH:1-100 has no authorization from TH",
    ),
]


@pytest.mark.parametrize(("code", "proposal", "used", "evidence"), PASSING, ids=[p[0] for p in PASSING])
def test_a_proposal_rule_passes_with_its_evidence(
    code: str, proposal: rpb.ScreenProposal, used: list[rpb.SerialBlock], evidence: str
) -> None:
    found = result(screen_proposal(proposal, facts(), used, Policies.load()), code)
    assert found.passed and evidence in found.evidence, found


@pytest.mark.parametrize(("code", "proposal", "used", "evidence"), FAILING, ids=[f[0] for f in FAILING])
def test_a_proposal_rule_fails_with_its_evidence(
    code: str, proposal: rpb.ScreenProposal, used: list[rpb.SerialBlock], evidence: str
) -> None:
    decision = screen_proposal(proposal, facts(), used, Policies.load())
    found = result(decision, code)
    assert not found.passed and evidence in found.evidence, found
    assert decision.verdict == cpb.REJECTED


def test_a_revoked_authorization_blocks_a_use_only_where_the_use_is_its_first_transfer() -> None:
    known = facts()
    known.apply(rpb.AuthorizationRevoked(authorization_id="LOA-TH-1", host_party="TH", reason="withdrawn"))
    # First-transferred when they crossed to Switzerland: still used as before.
    assert result(screen_proposal(retirement(), known, [], Policies.load()), "USE_AUTHORIZED").passed
    known.authorizations["LOA-TH-1"].first_transfer = rpb.AT_USE_OR_CANCELLATION
    refused = result(screen_proposal(retirement(), known, [], Policies.load()), "USE_AUTHORIZED")
    assert not refused.passed
    assert "JCM-TH:1-100 authorization LOA-TH-1 was revoked before its first transfer (at use)" in refused.evidence


def test_a_frozen_account_proposes_only_what_the_registry_itself_does() -> None:
    known = facts()
    known.apply(rpb.AccountFrozen(account_id="CH-BUYER", jurisdiction="CH"))
    held = result(screen_proposal(retirement(), known, [], Policies.load()), "PROPOSAL_ACCOUNT")
    assert (held.passed, held.evidence) == (False, "account CH-BUYER is frozen")
    mandatory = cancellation()
    mandatory.retirement.cancellation = rpb.CANCELLATION_MANDATORY
    assert result(screen_proposal(mandatory, known, [], Policies.load()), "PROPOSAL_ACCOUNT").passed
    known.apply(rpb.AccountClosed(account_id="CH-BUYER", jurisdiction="CH"))
    closed = result(screen_proposal(mandatory, known, [], Policies.load()), "PROPOSAL_ACCOUNT")
    assert (closed.passed, closed.evidence) == (False, "account CH-BUYER is closed")


def test_an_issuance_is_screened_against_the_serials_issued_before() -> None:
    command = issuance("I-9", "TH-GOV", 1, 100)
    proposal = rpb.ScreenProposal(
        proposal_id="I-9",
        transaction_type="01-00",
        account_id="TH-GOV",
        jurisdiction="TH",
        quantity=100,
        blocks=[command.block],
        issuance=command,
    )
    fresh = screen_proposal(proposal, facts(), [], Policies.load())
    assert fresh.verdict == cpb.APPROVED
    assert result(fresh, "DOUBLE_ISSUANCE").evidence == "no serial issued before"
    before = [rpb.SerialBlock(namespace="JCM-TH", start=90, end=200)]
    again = screen_proposal(proposal, facts(), [], Policies.load(), issued=before)
    assert again.verdict == cpb.REJECTED
    assert result(again, "DOUBLE_ISSUANCE").evidence == "JCM-TH:90-200 issued already"
    # A retired serial issued again is a recycled unit: DOUBLE_USE catches it.
    recycled = screen_proposal(proposal, facts(), before, Policies.load())
    assert not result(recycled, "DOUBLE_USE").passed
    assert result(screen_proposal(retirement(), facts(), [], Policies.load()), "DOUBLE_ISSUANCE").evidence == (
        "not an issuance"
    )


def test_an_approval_names_every_rule_its_number_and_the_claiming_party_s_policy() -> None:
    japan = retirement(account="JP-BUYER", party="JP")
    decision = screen_proposal(japan, facts(), [], Policies.load())
    assert decision.verdict == cpb.APPROVED
    assert [(r.code, r.numeric_code) for r in decision.results] == [(r.code, r.numeric) for r in PROPOSAL_RULES]
    assert decision.policy.startswith("JP-NDC@")
    assert decision.request == japan
    assert screen_proposal(retirement(), facts(), [], Policies.load()).policy.startswith("default@")  # no CH file
    assert all(BY_CODE[r.code].numeric == r.numeric_code for r in decision.results)
    assert screen_proposal(cancellation(), facts(), [], Policies.load()).policy.startswith("default@")


def test_a_malformed_proposal_is_refused_before_any_rule() -> None:
    hostile = retirement(rpb.SerialBlock(namespace="bad namespace", start=0, end=2**63))
    hostile.ClearField("retirement")
    problems = proposal_problems(hostile)
    assert any("blocks[0].namespace is not an identifier" in p for p in problems)
    assert any("serials must be within" in p for p in problems)
    assert any("carries its outcome" in p for p in problems)
    refused = proposal_refusal(hostile, problems, Policies.load())
    assert refused.verdict == cpb.REJECTED
    assert [(r.code, r.numeric_code) for r in refused.results] == [("REQUEST_INVALID", 8001)]
    assert not refused.request.blocks  # nothing malformed is kept
    assert proposal_problems(retirement()) == []
