"""ACCOUNTS_KNOWN: both accounts of the transfer are ones compliance has seen opened, and
neither is closed nor frozen (as the registry's events said: the log checks it again)."""

from __future__ import annotations

from services.compliance.domain.rules.rule import ACCOUNTS, Case, Finding, Rule


def accounts_known(case: Case) -> Finding:
    request = case.request
    accounts = (request.from_account_id, request.to_account_id)
    problems = [p for a in accounts if (p := case.facts.standing(a)) is not None]
    return Finding(problems, "both accounts are open")


RULE = Rule(
    code="ACCOUNTS_KNOWN",
    numeric=8101,
    family=ACCOUNTS,
    meaning="the transferring and the acquiring account were opened in a registry compliance observes, and "
    "neither is closed or frozen",
    evidence="per account: `unknown account <id>`, `account <id> is closed` or `account <id> is frozen`; "
    "passed: `both accounts are open`",
    check=accounts_known,
)
