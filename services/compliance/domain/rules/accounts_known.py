"""ACCOUNTS_KNOWN: both accounts of the transfer are ones compliance has seen opened, and
neither is closed, nor the transferring one frozen (as the registry's events said: the log
checks it again)."""

from __future__ import annotations

from services.compliance.domain.rules.rule import ACCOUNTS, Case, Finding, Rule


def accounts_known(case: Case) -> Finding:
    request = case.request
    facts = case.facts
    problems = [p for p in [facts.standing(request.from_account_id)] if p is not None]
    # A frozen account sends nothing but may still receive; a closed one does neither.
    target = request.to_account_id
    if (standing := facts.standing(target)) is not None and not (target in facts.frozen and target not in facts.closed):
        problems.append(standing)
    return Finding(problems, "both accounts are open")


RULE = Rule(
    code="ACCOUNTS_KNOWN",
    numeric=8101,
    family=ACCOUNTS,
    meaning="the transferring and the acquiring account were opened in a registry compliance observes, "
    "neither is closed, and the transferring one is not frozen",
    evidence="per account: `unknown account <id>`, `account <id> is closed` or `account <id> is frozen`; "
    "passed: `both accounts are open`",
    check=accounts_known,
)
