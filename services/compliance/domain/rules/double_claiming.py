"""DOUBLE_CLAIMING_AUTHORIZATION: units crossing a border need the host party's
authorization (Article 6.2 LoA) for the acquirer's use, in its vintage range, with
quantity left for those crossing for the first time (resales spend nothing), so no tonne
is counted by both the host and the acquirer. Domestic transfers need none."""

from __future__ import annotations

from services.compliance.domain.authorizations import by_authorization
from services.compliance.domain.facts import Facts
from services.compliance.domain.rules.rule import CLAIMING, Case, Finding, Rule, unauthorized
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as rpb


def abroad(request: cpb.ScreenTransfer, facts: Facts) -> tuple[str, str] | None:
    """(source, target) jurisdictions when the transfer crosses a border."""
    source = facts.accounts.get(request.from_account_id)
    target = facts.accounts.get(request.to_account_id)
    return None if source is None or target is None or source == target else (source, target)


def _blocks(request: cpb.ScreenTransfer, facts: Facts) -> list[rpb.SerialBlock]:
    reservation = facts.reservations.get(request.reservation_id)
    return list(reservation.blocks) if reservation else []


def claims(request: cpb.ScreenTransfer, facts: Facts) -> dict[str, int]:
    """What delivering `request` may spend of each LoA its blocks name: their units not yet
    first-transferred, at most the quantity delivered (the registry picks which reserved
    serials move, so the claim covers any pick). None for a domestic transfer."""
    if abroad(request, facts) is None:
        return {}
    claimed = {
        loa_id: min(request.quantity, facts.usage_of(loa_id).fresh(blocks))
        for loa_id, blocks in sorted(by_authorization(_blocks(request, facts)).items())
    }
    return {loa_id: quantity for loa_id, quantity in claimed.items() if quantity}


def authorized_abroad(case: Case) -> Finding:
    request, facts = case.request, case.facts
    crossing = abroad(request, facts)
    if crossing is None:
        return Finding([], "domestic transfer: no authorization needed")
    problems = [p for b in case.blocks for p in unauthorized(b, facts, case.use)]
    for loa_id, wanted in claims(request, facts).items():
        if loa_id in facts.revoked:
            problems.append(f"authorization {loa_id} was revoked, transfer would first-transfer {wanted}")
        elif loa_id in facts.authorizations:
            left = facts.usage_of(loa_id).left(facts.authorizations[loa_id].quantity)
            if left < wanted:
                problems.append(f"authorization {loa_id} has {left} left, transfer would first-transfer {wanted}")
    return Finding(problems, "authorized for transfer {} -> {}".format(*crossing))


RULE = Rule(
    code="DOUBLE_CLAIMING_AUTHORIZATION",
    numeric=8401,
    family=CLAIMING,
    meaning="a transfer across a border delivers only units whose host party authorized them for the "
    "acquirer's use (NDC or OIMP) and vintage, with quantity left for the units crossing for the first time",
    evidence="per block: no authorization, another party's, a use or vintage it does not cover; per LoA: "
    "`authorization <id> has <n> left, transfer would first-transfer <m>` or `authorization <id> was revoked, "
    "transfer would first-transfer <m>` (resales of units first-transferred before pass); passed: "
    "`authorized for transfer <from> -> <to>` or `domestic transfer: no authorization needed`",
    check=authorized_abroad,
)
