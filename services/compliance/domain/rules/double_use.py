"""DOUBLE_USE: no serial is used up twice, nor moves or is issued again once used. The
blocks a registry operation names are well formed and disjoint, and none
shares a serial with one compliance recorded as used already (its own record of every
approved use, independent of the registry's index): a retired ITMO is used at most once."""

from __future__ import annotations

import itertools

from services.compliance.domain.rules.rule import HOLDINGS, Finding, ProposalCase, Rule, where


def double_use(case: ProposalCase) -> Finding:
    blocks = sorted(case.proposal.blocks, key=lambda b: (b.namespace, b.start))
    problems = [f"{where(b)} is empty" for b in blocks if b.start > b.end]
    problems += [
        f"{where(a)} overlaps {b.start}-{b.end}"
        for a, b in itertools.pairwise(blocks)
        if a.namespace == b.namespace and b.start <= a.end
    ]
    if sum(b.end - b.start + 1 for b in blocks if b.start <= b.end) != case.proposal.quantity:
        problems.append(f"the blocks do not add up to {case.proposal.quantity}")
    problems += [f"{where(u)} used already" for u in case.used[:20]]
    return Finding(problems, f"{len(blocks)} blocks, none used before")


RULE = Rule(
    code="DOUBLE_USE",
    numeric=8302,
    family=HOLDINGS,
    meaning="the serials a registry operation names are well formed, disjoint, "
    "add up to its quantity, and none was used (retired, cancelled, expired) before",
    evidence="`<namespace>:<start>-<end> is empty`, `... overlaps <start>-<end>`, `the blocks do not add up to <n>`, "
    "or up to 20 `<namespace>:<start>-<end> used already`; passed: `<n> blocks, none used before`",
    check=double_use,
)
