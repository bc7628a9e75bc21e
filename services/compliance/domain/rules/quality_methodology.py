"""QUALITY_METHODOLOGY: no block was issued under a methodology the policy denies
(discredited ones, e.g. HFC-23 destruction)."""

from __future__ import annotations

from services.compliance.domain.rules.rule import QUALITY, Case, Finding, Rule, where


def quality_methodology(case: Case) -> Finding:
    denied = case.policy.methodology.denied
    problems = [
        f"{where(b)} methodology {b.attributes.methodology} is denied"
        for b in case.blocks
        if b.attributes.methodology in denied
    ]
    return Finding(problems, "methodologies allowed")


RULE = Rule(
    code="QUALITY_METHODOLOGY",
    numeric=8502,
    family=QUALITY,
    meaning="no block's methodology is on the policy's deny list",
    evidence="`<namespace>:<start>-<end> methodology <m> is denied` per block; passed: `methodologies allowed`",
    check=quality_methodology,
)
