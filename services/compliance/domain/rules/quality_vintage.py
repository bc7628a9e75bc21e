"""QUALITY_VINTAGE: every block's vintage is at or after the policy's floor for its
standard. A floor is a year, or a date reductions must be on or after, read conservatively
(policies.first_whole_vintage: a vintage that starts before the date is refused). A
standard the policy names no floor for is refused: no policy, no pass."""

from __future__ import annotations

from services.compliance.domain.rules.rule import QUALITY, Case, Finding, Rule, where
from tonne.v1 import registry_pb2 as rpb


def quality_vintage(case: Case) -> Finding:
    problems = []
    for b in case.blocks:
        standard = rpb.Standard.Name(b.attributes.standard)
        floor = case.policy.vintage_floor(standard)
        if floor is None or b.attributes.vintage < floor:
            problems.append(f"{where(b)} {standard} vintage {b.attributes.vintage} < {floor}{_cutoff(case, standard)}")
    return Finding(problems, "vintages within policy")


def _cutoff(case: Case, standard: str) -> str:
    """Names the date a year floor comes from, so the evidence shows the rule as written."""
    cutoff = case.policy.reductions_from.get(standard)
    return f" (reductions on or after {cutoff.isoformat()})" if cutoff else ""


RULE = Rule(
    code="QUALITY_VINTAGE",
    numeric=8501,
    family=QUALITY,
    meaning="each block's vintage is at or after the policy's floor for its standard (a year, or a date read "
    "as the first vintage year wholly on or after it); a standard without a floor is refused",
    evidence="`<namespace>:<start>-<end> <standard> vintage <v> < <floor>` per block below it (`None`: no floor), "
    "with `(reductions on or after <date>)` for a date cutoff; passed: `vintages within policy`",
    check=quality_vintage,
)
