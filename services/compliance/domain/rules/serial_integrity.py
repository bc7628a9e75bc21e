"""SERIAL_INTEGRITY: the blocks delivered are well formed (start <= end) and disjoint
within their namespace, so no serial is counted twice in one transfer."""

from __future__ import annotations

import itertools

from services.compliance.domain.rules.rule import SERIALS, Case, Finding, Rule, where


def serial_integrity(case: Case) -> Finding:
    blocks = sorted(case.blocks, key=lambda b: (b.namespace, b.start))
    problems = [f"{where(b)} is empty" for b in blocks if b.start > b.end]
    problems += [
        f"{where(a)} overlaps {b.start}-{b.end}"
        for a, b in itertools.pairwise(blocks)
        if a.namespace == b.namespace and b.start <= a.end
    ]
    return Finding(problems, f"{len(blocks)} disjoint blocks")


RULE = Rule(
    code="SERIAL_INTEGRITY",
    numeric=8201,
    family=SERIALS,
    meaning="every reserved block has start <= end and none overlaps another of its namespace",
    evidence="`<namespace>:<start>-<end> is empty` or `... overlaps <start>-<end>` per fault; "
    "passed: `<n> disjoint blocks`",
    check=serial_integrity,
)
