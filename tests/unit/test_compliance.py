from __future__ import annotations

from services.compliance.domain import audit
from services.compliance.domain.facts import Facts
from services.compliance.domain.jurisdictions import concerned
from services.compliance.domain.screening import Policies, Policy, screen
from tests.unit.factories import issuance, loa
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb


def facts_with(block: rpb.SerialBlock, *, authorized: bool = True) -> Facts:
    facts = Facts()
    facts.apply(rpb.AccountOpened(account_id="TH-GOV", jurisdiction="TH"))
    facts.apply(rpb.AccountOpened(account_id="CH-BUYER", jurisdiction="CH"))
    facts.apply(rpb.AccountOpened(account_id="TH-CO", jurisdiction="TH"))
    if authorized:
        facts.apply(rpb.AuthorizationRecorded(authorization=loa(quantity=4000)))
    facts.apply(rpb.UnitsReserved(reservation_id="S1", account_id="TH-GOV", quantity=3000, blocks=[block]))
    return facts


def request(to: str = "CH-BUYER", quantity: int = 3000) -> cpb.ScreenTransfer:
    return cpb.ScreenTransfer(
        request_id="T1",
        trade_id="T1",
        reservation_id="S1",
        from_account_id="TH-GOV",
        to_account_id=to,
        quantity=quantity,
    )


def failed(decision: cpb.ScreeningDecision) -> list[str]:
    return [r.code for r in decision.results if not r.passed]


def block(**kwargs: object) -> rpb.SerialBlock:
    return issuance("I", "TH-GOV", 1, 3000, **kwargs).block  # type: ignore[arg-type]


def test_authorized_itmo_export_is_approved() -> None:
    decision = screen(request(), facts_with(block(authorization_id="LOA-TH-1")), Policy.load())
    assert decision.verdict == cpb.APPROVED, failed(decision)
    assert len(decision.results) == 6 and decision.policy_version
    assert decision.policy == f"default@{decision.policy_version}"
    assert all(r.numeric_code for r in decision.results)


def test_the_service_screens_under_the_policies_as_one_policy_does_for_the_default() -> None:
    """What the service passes (every policy) decides as the default policy alone for an
    acquirer without a policy of its own (Switzerland)."""
    facts = facts_with(block(authorization_id="LOA-TH-1"))
    assert screen(request(), facts, Policies.load()) == screen(request(), facts, Policy.load())


def test_unauthorized_export_is_refused_but_domestic_is_not() -> None:
    facts = facts_with(block(), authorized=False)
    assert failed(screen(request(), facts, Policy.load())) == ["DOUBLE_CLAIMING_AUTHORIZATION"]
    assert screen(request(to="TH-CO"), facts, Policy.load()).verdict == cpb.APPROVED


def test_authorization_quantity_is_spent_by_first_transfers() -> None:
    facts = facts_with(block(authorization_id="LOA-TH-1"))
    facts.apply(
        rpb.UnitsTransferred(
            from_jurisdiction="TH",
            to_jurisdiction="CH",
            blocks=[
                rpb.SerialBlock(
                    namespace="JCM-TH", start=5001, end=7000, attributes=rpb.UnitAttributes(authorization_id="LOA-TH-1")
                )
            ],
        )
    )
    decision = screen(request(), facts, Policy.load())
    assert failed(decision) == ["DOUBLE_CLAIMING_AUTHORIZATION"]
    assert "has 2000 left" in decision.results[-1].evidence


def test_quality_rules_use_the_policy() -> None:
    old = facts_with(block(vintage=2015, authorization_id="LOA-TH-1"))
    assert "QUALITY_VINTAGE" in failed(screen(request(), old, Policy.load()))
    denied = facts_with(block(methodology="AM0001", authorization_id="LOA-TH-1"))
    assert failed(screen(request(), denied, Policy.load())) == ["QUALITY_METHODOLOGY"]


def test_unknown_reservation_fails_holdings() -> None:
    facts = facts_with(block(authorization_id="LOA-TH-1"))
    req = request()
    req.reservation_id = "nope"
    assert "HOLDINGS_RESERVED" in failed(screen(req, facts, Policy.load()))


def test_trade_concerns_both_parties() -> None:
    facts = facts_with(block())
    trade = mpb.TradeExecuted(buyer_account_id="CH-BUYER", seller_account_id="TH-GOV")
    assert concerned(trade, facts) == {"CH", "TH"}


def test_audit_chain_detects_tampering() -> None:
    records = []
    previous = None
    for n in range(5):
        previous = audit.link(
            previous, jurisdiction="TH", source_topic="t", event_id=str(n), event_type="x", envelope=bytes([n])
        )
        records.append(previous)
    assert audit.first_break(records) is None
    records[2].envelope = b"forged"
    assert audit.first_break(records) == 3
