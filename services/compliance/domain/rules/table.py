"""docs/compliance-rules.md, generated from the rules package so the doc cannot drift
(tests/unit/test_compliance_rules.py compares them). Regenerate:
`.venv/bin/python -m services.compliance.domain.rules.table > docs/compliance-rules.md`."""

from __future__ import annotations

from typing import Any

from services.common.codes import cell, families_table
from services.compliance.domain.rules import PROPOSAL_RULES, REQUEST_INVALID, RULES
from services.compliance.domain.rules.rule import FAMILIES, Code, Rule


def _module(rule: Rule[Any]) -> str:
    return rule.check.__module__.replace(".", "/") + ".py"


def _row(entry: Code, order: str, module: str) -> str:
    return (
        f"| {order} | {entry.numeric} | `{entry.code}` | {entry.family.name} | {cell(entry.meaning)} "
        f"| {cell(entry.evidence)} | `{module}` |"
    )


def markdown() -> str:
    lines = [
        "# Compliance screening rules",
        "",
        "<!-- Generated from services/compliance/domain/rules: edit the rule modules there, then run",
        "     `.venv/bin/python -m services.compliance.domain.rules.table > docs/compliance-rules.md`. -->",
        "",
        "Compliance is the venue's transaction log (DOMAIN.md §4, §6): every transfer is screened",
        "before units move, and the answer (`ScreeningDecision` on `compliance.decisions`,",
        "`proto/tonne/v1/compliance.proto`) lists every rule run, in the order below, each as a",
        "`RuleResult`: the stable string `code`, the `numeric_code` beside it (8xxx; the",
        "registry's reject codes are 7xxx, docs/registry-reject-codes.md), whether it `passed`, and",
        "the `evidence`. The transfer is approved only when every rule passes. The decision names",
        "the policy that decided it, `policy` = `<id>@<version>` (and `policy_version`).",
        "",
        "Numbers are never renumbered nor reused; a new rule takes the next free number of its",
        "family. An unknown string maps to 0.",
        "",
        "## Policies",
        "",
        "The rules read their thresholds and lists from one policy per acquiring jurisdiction and",
        "use, `services/compliance/policies/<JUR>-<USE>.toml`, else `default.toml`; the use is the",
        "request's (today's requests name none: the default policy's `cross_border_use`). Files",
        "are validated at start-up (`services/compliance/domain/policies.py`); a bad file stops the",
        "service, naming the file and the field. A vintage cutoff given as a date",
        "(`reductions_from`) is read conservatively: a block carries a vintage year, which may",
        "hold any day of that year, so the first vintage accepted is the first whole year on or",
        "after the date (CCER's 2020-09-22 admits vintage 2021 on, not 2020).",
        "",
        "## Families",
        "",
        *families_table(FAMILIES),
        "",
        "## Rules, in the order they run",
        "",
        "| order | numeric | code | family | meaning | evidence | module |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(_row(rule, str(n), _module(rule)) for n, rule in enumerate(RULES, start=1)),
        "",
        "## A registry operation's rules, in the order they run",
        "",
        "The registry completes a retirement, cancellation or expiry only once compliance approved",
        "its proposal (`ScreenProposal` on `compliance.requests`, from the registry; the answer",
        "`ProposalScreened` on `compliance.decisions`, with the same `RuleResult`s and policy).",
        "An approval records the proposal's serials as used, in compliance's own table; a",
        "proposal the registry then gives up on (`ProposalRejected`) releases them. A proposal",
        "whose account compliance has not seen opened yet waits for it (at most 30 s), so a",
        "valid request is not refused on stale facts.",
        "",
        "| order | numeric | code | family | meaning | evidence | module |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(_row(rule, str(n), _module(rule)) for n, rule in enumerate(PROPOSAL_RULES, start=1)),
        "",
        "## Before the rules",
        "",
        "A request with usable keys but malformed fields is rejected with this one result and no",
        "rule runs (a request whose `request_id` or `trade_id` is unusable gets no decision: it is",
        "dead-lettered).",
        "",
        "| order | numeric | code | family | meaning | evidence | module |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        _row(REQUEST_INVALID, "-", "services/compliance/domain/validation.py"),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
