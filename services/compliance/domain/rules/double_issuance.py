"""DOUBLE_ISSUANCE: a namespace's serials are issued once. An issuance shares no serial
with one compliance approved for issuance before (its own record, independent of the
registry's index: the log catches an overlap even if the registry's index were wrong)."""

from __future__ import annotations

from services.compliance.domain.rules.rule import SERIALS, Finding, ProposalCase, Rule, where


def double_issuance(case: ProposalCase) -> Finding:
    if not case.proposal.HasField("issuance"):
        return Finding([], "not an issuance")
    return Finding([f"{where(b)} issued already" for b in case.issued[:20]], "no serial issued before")


RULE = Rule(
    code="DOUBLE_ISSUANCE",
    numeric=8202,
    family=SERIALS,
    meaning="an issuance's serials share none with serials issued before in their namespace, by any registry",
    evidence="up to 20 `<namespace>:<start>-<end> issued already`; passed: `no serial issued before` or "
    "`not an issuance`",
    check=double_issuance,
)
