"""What compliance refuses from Kafka before it stores or screens anything."""

from __future__ import annotations

import pytest

from services.common.errors import DomainError
from services.common.inputs import is_party
from services.compliance.domain.facts import Facts, needed, spent
from services.compliance.domain.jurisdictions import account_ids, concerned
from services.compliance.domain.validation import check_fact, check_request_keys, refuse, request_problems
from tests.unit.factories import loa
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb

HUGE = "A" * 1_000_000


def transfer(start: int, end: int, frm: str = "TH", to: str = "CH", loa_id: str = "LOA-TH-1") -> rpb.UnitsTransferred:
    block = rpb.SerialBlock(
        namespace="JCM-TH", start=start, end=end, attributes=rpb.UnitAttributes(authorization_id=loa_id)
    )
    return rpb.UnitsTransferred(from_jurisdiction=frm, to_jurisdiction=to, blocks=[block])


def test_only_what_screening_can_use_is_kept() -> None:
    assert needed(rpb.AccountOpened(account_id="A", jurisdiction="TH"))
    assert needed(transfer(1, 10)) and spent(transfer(1, 10)) == {"LOA-TH-1": 10}
    assert not needed(transfer(1, 10, to="TH"))  # domestic
    assert not needed(transfer(1, 10, loa_id=""))  # no authorized units
    assert not needed(mpb.TradeExecuted(trade_id="T"))


def test_a_huge_identifier_in_a_fact_is_refused_without_echoing_it() -> None:
    with pytest.raises(DomainError) as refused:
        check_fact(rpb.AccountOpened(account_id=HUGE, jurisdiction="TH"))
    assert refused.value.code == "FACT_INVALID"
    assert len(str(refused.value.body())) < 500
    for bad in (
        rpb.AuthorizationRecorded(authorization=loa(authorization_id="LOA\x00")),
        rpb.AuthorizationRecorded(authorization=loa(quantity=2**63)),
        rpb.UnitsReserved(reservation_id="R", account_id="A", quantity=0),
        transfer(10, 1),
        transfer(0, 2**63),
    ):
        with pytest.raises(DomainError):
            check_fact(bad)


def test_a_jurisdiction_is_stored_as_observed_but_never_chained_unless_a_party() -> None:
    check_fact(rpb.AccountOpened(account_id="A", jurisdiction="x'); DROP TABLE audit_chain; --"))
    assert not is_party("x'); DROP TABLE audit_chain; --") and not is_party("th") and is_party("TH")


def test_a_request_without_usable_keys_is_refused_and_one_with_bad_fields_is_rejected() -> None:
    with pytest.raises(DomainError) as refused:
        check_request_keys(cpb.ScreenTransfer(request_id=HUGE, trade_id="T"))
    assert refused.value.code == "REQUEST_INVALID"
    request = cpb.ScreenTransfer(
        request_id="T1", trade_id="T1", reservation_id="S1", from_account_id=HUGE, to_account_id="B", quantity=2**63
    )
    check_request_keys(request)
    problems = request_problems(request)
    assert len(problems) == 2
    decision = refuse(request, problems, "v")
    assert decision.verdict == cpb.REJECTED and [r.code for r in decision.results] == ["REQUEST_INVALID"]
    assert len(decision.SerializeToString()) < 1000  # the 1 MB id is not kept


def test_a_trade_names_its_accounts() -> None:
    trade = mpb.TradeExecuted(buyer_account_id="CH-BUYER", seller_account_id="TH-GOV", instrument_id="I")
    assert account_ids(trade) == {"CH-BUYER", "TH-GOV"}
    assert concerned(trade, Facts(accounts={"CH-BUYER": "CH"})) == {"CH"}
