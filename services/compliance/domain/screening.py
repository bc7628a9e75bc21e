"""Screening a transfer before units move: the transaction log of the venue.

Each rule is a predicate with a stable code; a decision names every rule it ran,
whether it passed, and the evidence.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.compliance.domain.authorizations import by_authorization
from services.compliance.domain.facts import Facts
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as rpb

DEFAULT_POLICY = Path(__file__).parent.parent / "policy.toml"


@dataclass(frozen=True)
class Policy:
    version: str
    cross_border_use: rpb.AuthorizedUse.ValueType
    min_vintage: dict[str, int]
    denied_methodologies: frozenset[str]

    @classmethod
    def load(cls, path: Path = DEFAULT_POLICY) -> Policy:
        with path.open("rb") as f:
            data = tomllib.load(f)
        return cls(
            version=data["version"],
            cross_border_use=rpb.AuthorizedUse.Value(data["cross_border_use"]),
            min_vintage=dict(data["min_vintage"]),
            denied_methodologies=frozenset(data["methodology"]["denied"]),
        )


Rule = Callable[[cpb.ScreenTransfer, Facts, Policy], cpb.RuleResult]


def _result(code: str, problems: list[str], ok_evidence: str) -> cpb.RuleResult:
    return cpb.RuleResult(code=code, passed=not problems, evidence="; ".join(problems) or ok_evidence)


def _blocks(request: cpb.ScreenTransfer, facts: Facts) -> list[rpb.SerialBlock]:
    reservation = facts.reservations.get(request.reservation_id)
    return list(reservation.blocks) if reservation else []


def accounts_known(request: cpb.ScreenTransfer, facts: Facts, policy: Policy) -> cpb.RuleResult:
    missing = [a for a in (request.from_account_id, request.to_account_id) if a not in facts.accounts]
    return _result("ACCOUNTS_KNOWN", [f"unknown account {a}" for a in missing], "both accounts are open")


def holdings_reserved(request: cpb.ScreenTransfer, facts: Facts, policy: Policy) -> cpb.RuleResult:
    reservation = facts.reservations.get(request.reservation_id)
    if reservation is None:
        return _result("HOLDINGS_RESERVED", [f"no reservation {request.reservation_id}"], "")
    problems = []
    if reservation.account_id != request.from_account_id:
        problems.append(f"reservation is held by {reservation.account_id}, not {request.from_account_id}")
    if reservation.quantity < request.quantity:
        problems.append(f"reservation holds {reservation.quantity}, transfer asks {request.quantity}")
    return _result("HOLDINGS_RESERVED", problems, f"{reservation.quantity} units reserved by the seller")


def serial_integrity(request: cpb.ScreenTransfer, facts: Facts, policy: Policy) -> cpb.RuleResult:
    blocks = sorted(_blocks(request, facts), key=lambda b: (b.namespace, b.start))
    problems = [f"{b.namespace}:{b.start}-{b.end} is empty" for b in blocks if b.start > b.end]
    problems += [
        f"{a.namespace}:{a.start}-{a.end} overlaps {b.start}-{b.end}"
        for a, b in itertools.pairwise(blocks)
        if a.namespace == b.namespace and b.start <= a.end
    ]
    return _result("SERIAL_INTEGRITY", problems, f"{len(blocks)} disjoint blocks")


def quality_vintage(request: cpb.ScreenTransfer, facts: Facts, policy: Policy) -> cpb.RuleResult:
    problems = []
    for b in _blocks(request, facts):
        standard = rpb.Standard.Name(b.attributes.standard)
        floor = policy.min_vintage.get(standard)
        if floor is None or b.attributes.vintage < floor:
            problems.append(f"{b.namespace}:{b.start}-{b.end} {standard} vintage {b.attributes.vintage} < {floor}")
    return _result("QUALITY_VINTAGE", problems, "vintages within policy")


def quality_methodology(request: cpb.ScreenTransfer, facts: Facts, policy: Policy) -> cpb.RuleResult:
    problems = [
        f"{b.namespace}:{b.start}-{b.end} methodology {b.attributes.methodology} is denied"
        for b in _blocks(request, facts)
        if b.attributes.methodology in policy.denied_methodologies
    ]
    return _result("QUALITY_METHODOLOGY", problems, "methodologies allowed")


def _abroad(request: cpb.ScreenTransfer, facts: Facts) -> tuple[str, str] | None:
    """(source, target) jurisdictions when the transfer crosses a border."""
    source = facts.accounts.get(request.from_account_id)
    target = facts.accounts.get(request.to_account_id)
    return None if source is None or target is None or source == target else (source, target)


def claims(request: cpb.ScreenTransfer, facts: Facts) -> dict[str, int]:
    """What delivering `request` may spend of each LoA its blocks name: their units not yet
    first-transferred, at most the quantity delivered (the registry picks which reserved
    serials move, so the claim covers any pick). None for a domestic transfer."""
    if _abroad(request, facts) is None:
        return {}
    claimed = {
        loa_id: min(request.quantity, facts.usage_of(loa_id).fresh(blocks))
        for loa_id, blocks in sorted(by_authorization(_blocks(request, facts)).items())
    }
    return {loa_id: quantity for loa_id, quantity in claimed.items() if quantity}


def authorized_abroad(request: cpb.ScreenTransfer, facts: Facts, policy: Policy) -> cpb.RuleResult:
    """Double claiming: units crossing a border need the host party's authorization for
    the acquirer's purpose, in its vintage range, with quantity left for those crossing
    for the first time (resales spend nothing)."""
    code = "DOUBLE_CLAIMING_AUTHORIZATION"
    abroad = _abroad(request, facts)
    if abroad is None:
        return _result(code, [], "domestic transfer: no authorization needed")
    problems = []
    for b in _blocks(request, facts):
        a = b.attributes
        loa = facts.authorizations.get(a.authorization_id)
        where = f"{b.namespace}:{b.start}-{b.end}"
        if loa is None:
            problems.append(f"{where} has no authorization from {a.host_party}")
            continue
        if loa.host_party != a.host_party:
            problems.append(f"{where} authorization {loa.authorization_id} is {loa.host_party}'s")
        if loa.use not in (policy.cross_border_use, rpb.NDC_AND_OIMP):
            problems.append(f"{where} authorization does not cover {rpb.AuthorizedUse.Name(policy.cross_border_use)}")
        if not loa.vintage_from <= a.vintage <= loa.vintage_to:
            problems.append(f"{where} vintage {a.vintage} outside {loa.vintage_from}-{loa.vintage_to}")
    for loa_id, wanted in claims(request, facts).items():
        if loa_id in facts.authorizations:
            left = facts.usage_of(loa_id).left(facts.authorizations[loa_id].quantity)
            if left < wanted:
                problems.append(f"authorization {loa_id} has {left} left, transfer would first-transfer {wanted}")
    return _result(code, problems, "authorized for transfer {} -> {}".format(*abroad))


RULES: tuple[Rule, ...] = (
    accounts_known,
    holdings_reserved,
    serial_integrity,
    quality_vintage,
    quality_methodology,
    authorized_abroad,
)


def screen(request: cpb.ScreenTransfer, facts: Facts, policy: Policy) -> cpb.ScreeningDecision:
    results = [rule(request, facts, policy) for rule in RULES]
    return cpb.ScreeningDecision(
        request_id=request.request_id,
        trade_id=request.trade_id,
        verdict=cpb.APPROVED if all(r.passed for r in results) else cpb.REJECTED,
        results=results,
        policy_version=policy.version,
        request=request,
    )
