from __future__ import annotations

from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from services.settlement.domain.adjustments import first_transfer_adjustments, subtract
from services.settlement.domain.settlement import Phase, Settlements
from tests.unit.factories import loa
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb


def transfer(
    start: int, end: int, to_jurisdiction: str = "CH", authorization_id: str = "LOA-TH-1"
) -> rpb.UnitsTransferred:
    return rpb.UnitsTransferred(
        transfer_id="T1",
        reservation_id="S1",
        from_account_id="TH-GOV",
        to_account_id="CH-BUYER",
        from_jurisdiction="TH",
        to_jurisdiction=to_jurisdiction,
        quantity=end - start + 1,
        blocks=[
            rpb.SerialBlock(
                namespace="JCM-TH",
                start=start,
                end=end,
                attributes=rpb.UnitAttributes(
                    standard=rpb.JCM, host_party="TH", vintage=2024, authorization_id=authorization_id
                ),
            )
        ],
    )


def test_first_international_transfer_owes_one_adjustment() -> None:
    [ca] = first_transfer_adjustments("T1", transfer(1, 3000), {"LOA-TH-1": loa()}, {})
    assert (ca.party, ca.side, ca.vintage, ca.quantity) == ("TH", spb.FIRST_TRANSFERRING, 2024, 3000)


def test_serials_already_adjusted_owe_nothing_again() -> None:
    adjusted = {"JCM-TH": [(1, 1000)]}
    [ca] = first_transfer_adjustments("T2", transfer(1, 3000), {"LOA-TH-1": loa()}, adjusted)
    assert ca.quantity == 2000


def test_domestic_or_unauthorized_transfers_owe_nothing() -> None:
    assert first_transfer_adjustments("T", transfer(1, 10, to_jurisdiction="TH"), {"LOA-TH-1": loa()}, {}) == []
    assert first_transfer_adjustments("T", transfer(1, 10, authorization_id=""), {"LOA-TH-1": loa()}, {}) == []


@given(st.tuples(st.integers(1, 100), st.integers(0, 50)), st.lists(st.tuples(st.integers(1, 150), st.integers(0, 30))))
def test_subtract_leaves_exactly_the_uncovered_serials(block: tuple[int, int], taken: list[tuple[int, int]]) -> None:
    interval = (block[0], block[0] + block[1])
    cuts = [(s, s + n) for s, n in taken]
    expected = {x for x in range(interval[0], interval[1] + 1) if not any(s <= x <= e for s, e in cuts)}
    got = [x for s, e in subtract(interval, cuts) for x in range(s, e + 1)]
    assert sorted(got) == sorted(expected) and len(got) == len(expected)


def trade() -> mpb.TradeExecuted:
    return mpb.TradeExecuted(
        trade_id="T1",
        instrument_id="JCM-TH-2024-NDC",
        price=1500,
        quantity=3000,
        currency="USD",
        buy_order_id="B1",
        sell_order_id="S1",
        buyer_account_id="CH-BUYER",
        seller_account_id="TH-GOV",
    )


def step(book: Settlements, events: list[Message]) -> list[Message]:
    for event in events:
        book.apply(event)
    return events


def test_delivery_versus_payment_happy_path() -> None:
    book = Settlements()
    book.apply(rpb.AuthorizationRecorded(authorization=loa()))
    step(book, book.start(trade()))
    assert book.start(trade()) == []  # the same trade twice starts once
    [instructed] = step(
        book, book.screened(cpb.ScreeningDecision(request_id="T1", trade_id="T1", verdict=cpb.APPROVED))
    )
    assert isinstance(instructed, spb.TransferInstructed)
    events = step(book, book.transferred(transfer(1, 3000)))
    assert [type(e).__name__ for e in events] == ["CorrespondingAdjustmentApplied", "SettlementCompleted"]
    assert book.trades["T1"].phase is Phase.SETTLED
    assert book.cash[("CH-BUYER", "USD")] == -4_500_000 and book.cash[("TH-GOV", "USD")] == 4_500_000


def test_rejected_screening_fails_the_settlement() -> None:
    book = Settlements()
    step(book, book.start(trade()))
    decision = cpb.ScreeningDecision(
        request_id="T1",
        trade_id="T1",
        verdict=cpb.REJECTED,
        results=[cpb.RuleResult(code="DOUBLE_CLAIMING_AUTHORIZATION", passed=False)],
    )
    [failed] = step(book, book.screened(decision))
    assert isinstance(failed, spb.SettlementFailed) and failed.reason == "DOUBLE_CLAIMING_AUTHORIZATION"
    assert book.trades["T1"].phase is Phase.FAILED
    assert book.transferred(transfer(1, 3000)) == []
