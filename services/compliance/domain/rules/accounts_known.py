"""ACCOUNTS_KNOWN: both accounts of the transfer are ones compliance has seen opened."""

from __future__ import annotations

from services.compliance.domain.rules.rule import ACCOUNTS, Case, Finding, Rule


def accounts_known(case: Case) -> Finding:
    request = case.request
    missing = [a for a in (request.from_account_id, request.to_account_id) if a not in case.facts.accounts]
    return Finding([f"unknown account {a}" for a in missing], "both accounts are open")


RULE = Rule(
    code="ACCOUNTS_KNOWN",
    numeric=8101,
    family=ACCOUNTS,
    meaning="the transferring and the acquiring account were opened in a registry compliance observes",
    evidence="`unknown account <id>` per account not known; passed: `both accounts are open`",
    check=accounts_known,
)
