"""ACCOUNTS_KNOWN: both accounts of the transfer are ones compliance has seen opened, and
neither is closed, nor the transferring one frozen (as the registry's events said: the log
checks it again)."""

from __future__ import annotations

from services.compliance.domain.rules.rule import ACCOUNTS, Case, Finding, Rule


def accounts_known(case: Case) -> Finding:
    request = case.request
    # A frozen account sends nothing but may still receive; a closed one does neither.
    standings = (case.facts.standing(request.from_account_id), case.facts.standing(request.to_account_id, True))
    return Finding([s for s in standings if s is not None], "both accounts are open")


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
