"""HOLDINGS_RESERVED: the units delivered are reserved, by the seller, in the quantity
delivered (the registry reserved them when the sell order rested)."""

from __future__ import annotations

from services.compliance.domain.rules.rule import HOLDINGS, Case, Finding, Rule


def holdings_reserved(case: Case) -> Finding:
    request, reservation = case.request, case.reservation
    if reservation is None:
        return Finding([f"no reservation {request.reservation_id}"], "")
    problems = []
    if reservation.account_id != request.from_account_id:
        problems.append(f"reservation is held by {reservation.account_id}, not {request.from_account_id}")
    if reservation.quantity < request.quantity:
        problems.append(f"reservation holds {reservation.quantity}, transfer asks {request.quantity}")
    return Finding(problems, f"{reservation.quantity} units reserved by the seller")


RULE = Rule(
    code="HOLDINGS_RESERVED",
    numeric=8301,
    family=HOLDINGS,
    meaning="the reservation delivered from exists, is the transferring account's and holds the quantity delivered",
    evidence="`no reservation <id>`, or who holds it and how many units against the quantity asked; "
    "passed: `<n> units reserved by the seller`",
    check=holdings_reserved,
)
