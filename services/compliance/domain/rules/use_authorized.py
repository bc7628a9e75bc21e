"""USE_AUTHORIZED: a retirement toward a mitigation claim is double claiming unless the
host party gave its units up. Units used toward another party's NDC, or for other
international mitigation purposes (OIMP: CORSIA) by anyone, need the host party's
authorization for that use and their vintage (Article 6.2 LoA); the host's own NDC use of
its own units and voluntary claims need none. Cancellations and expiries claim nothing."""

from __future__ import annotations

from services.compliance.domain.policies import Use
from services.compliance.domain.rules.rule import CLAIMING, Finding, ProposalCase, Rule, unauthorized, where
from tonne.v1 import registry_pb2 as rpb


def use_authorized(case: ProposalCase) -> Finding:
    retired = case.retirement
    if retired is None or retired.cancelled or retired.use not in (rpb.CLAIM_NDC, rpb.CLAIM_OIMP):
        return Finding([], "no mitigation claim")
    use: Use = "NDC" if retired.use == rpb.CLAIM_NDC else "OIMP"
    claimed = [
        b
        for b in case.proposal.blocks
        # The host's own NDC use of its units: nothing leaves its books.
        if not (use == "NDC" and b.attributes.host_party == retired.jurisdiction)
    ]
    problems = [p for b in claimed for p in unauthorized(b, case.facts, use)]
    # Where the use is the first transfer, a revoked authorization no longer makes one.
    problems += [
        f"{where(b)} authorization {b.attributes.authorization_id} was revoked before its first transfer (at use)"
        for b in claimed
        if b.attributes.authorization_id in case.facts.revoked
        and case.facts.authorizations[b.attributes.authorization_id].first_transfer == rpb.AT_USE_OR_CANCELLATION
    ]
    return Finding(problems, f"authorized for {use} use by {retired.jurisdiction}")


RULE = Rule(
    code="USE_AUTHORIZED",
    numeric=8402,
    family=CLAIMING,
    meaning="a retirement for another party's NDC, or for OIMP, uses only units their host party authorized for "
    "that use and vintage (the host's own NDC use and voluntary claims need no authorization)",
    evidence="per block: no authorization for the use, another party's, a use or vintage it does not cover, "
    "revoked before a first transfer that is the use itself; "
    "passed: `authorized for <use> use by <JUR>` or `no mitigation claim`",
    check=use_authorized,
)
