from __future__ import annotations

from collections import defaultdict

import pytest
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import DomainError
from services.common.inputs import INT64_MAX
from services.common.serials import subtract
from services.settlement.domain.adjustments import first_transfer_adjustments
from services.settlement.domain.settlement import Phase, TradeSettlement, cash_legs
from tests.unit.factories import loa
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb
from tonne.v1.envelope_pb2 import CommandRejected


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


def trade(price: int = 1500, quantity: int = 3000, **fields: str) -> mpb.TradeExecuted:
    terms: dict[str, str] = {
        "trade_id": "T1",
        "instrument_id": "JCM-TH-2024-NDC",
        "currency": "USD",
        "buy_order_id": "B1",
        "sell_order_id": "S1",
        "buyer_account_id": "CH-BUYER",
        "seller_account_id": "TH-GOV",
    }
    executed = mpb.TradeExecuted(price=price, quantity=quantity)
    for name, value in (terms | fields).items():
        setattr(executed, name, value)
    return executed


Cash = defaultdict[tuple[str, str], int]


def step(settlement: TradeSettlement, events: list[Message], cash: Cash | None = None) -> list[Message]:
    """Commit `events`: fold them into the aggregate, and book cash as the projection does."""
    settlement.mutate(events)
    for event in events:
        if cash is not None and isinstance(event, spb.SettlementCompleted):
            for account, amount in cash_legs(event):
                cash[account] += amount
    return events


def approved() -> cpb.ScreeningDecision:
    return cpb.ScreeningDecision(request_id="T1", trade_id="T1", verdict=cpb.APPROVED)


def test_delivery_versus_payment_happy_path() -> None:
    settlement, cash = TradeSettlement("settlement-T1"), Cash(int)
    authorizations = {"LOA-TH-1": loa()}
    started = settlement.start(trade())
    assert settlement.started is None and settlement.version == 0  # deciding changes nothing
    step(settlement, started)
    assert settlement.start(trade()) == []  # the same trade twice starts once
    [instructed] = step(settlement, settlement.screened(approved()))
    assert isinstance(instructed, spb.TransferInstructed)
    assert settlement.screened(approved()) == []  # a duplicate decision does nothing
    events = step(settlement, settlement.transferred(transfer(1, 3000), authorizations, {}, cash), cash)
    assert [type(e).__name__ for e in events] == ["CorrespondingAdjustmentApplied", "SettlementCompleted"]
    assert settlement.phase is Phase.SETTLED
    assert cash[("CH-BUYER", "USD")] == -4_500_000 and cash[("TH-GOV", "USD")] == 4_500_000


def test_rejected_screening_fails_the_settlement() -> None:
    settlement = TradeSettlement("settlement-T1")
    step(settlement, settlement.start(trade()))
    decision = cpb.ScreeningDecision(
        request_id="T1",
        trade_id="T1",
        verdict=cpb.REJECTED,
        results=[cpb.RuleResult(code="DOUBLE_CLAIMING_AUTHORIZATION", passed=False)],
    )
    [failed] = step(settlement, settlement.screened(decision))
    assert isinstance(failed, spb.SettlementFailed) and failed.reason == "DOUBLE_CLAIMING_AUTHORIZATION"
    assert settlement.phase is Phase.FAILED
    assert settlement.failure == "COMPLIANCE_REJECTED: DOUBLE_CLAIMING_AUTHORIZATION"
    assert settlement.transferred(transfer(1, 3000), {"LOA-TH-1": loa()}, {}, {}) == []


def test_registry_refusal_fails_a_transferring_settlement() -> None:
    settlement = TradeSettlement("settlement-T1")
    step(settlement, settlement.start(trade()))
    refusal = CommandRejected(command_id="T1", command_type="tonne.v1.TransferUnits", code="HOLDINGS_INSUFFICIENT")
    assert settlement.refused(refusal) == []  # not transferring yet
    step(settlement, settlement.screened(approved()))
    [failed] = step(settlement, settlement.refused(refusal))
    assert isinstance(failed, spb.SettlementFailed) and failed.code == "HOLDINGS_INSUFFICIENT"
    assert settlement.phase is Phase.FAILED


def test_cash_amount_beyond_int64_fails_at_start() -> None:
    settlement = TradeSettlement("settlement-T1")
    started, failed = step(settlement, settlement.start(trade(price=2**62, quantity=2)))
    assert isinstance(started, spb.SettlementStarted)
    assert isinstance(failed, spb.SettlementFailed) and failed.code == "CASH_AMOUNT_OVERFLOW"
    assert settlement.phase is Phase.FAILED
    assert settlement.screened(approved()) == []  # never screened, never transferred
    # The largest product that fits still settles.
    fits = TradeSettlement("settlement-T1")
    assert [type(e) for e in fits.start(trade(price=INT64_MAX, quantity=1))] == [spb.SettlementStarted]


def test_cash_balance_beyond_int64_fails_with_a_code_and_keeps_the_adjustments() -> None:
    settlement = TradeSettlement("settlement-T1")
    step(settlement, settlement.start(trade()))
    step(settlement, settlement.screened(approved()))
    balances = {("TH-GOV", "USD"): INT64_MAX - 4_499_999}
    *adjustments, failed = settlement.transferred(transfer(1, 3000), {"LOA-TH-1": loa()}, {}, balances)
    assert [type(a) for a in adjustments] == [spb.CorrespondingAdjustmentApplied]
    assert isinstance(failed, spb.SettlementFailed) and failed.code == "CASH_BALANCE_OVERFLOW"
    low = {("CH-BUYER", "USD"): -(2**63) + 4_499_999}
    assert isinstance(settlement.transferred(transfer(1, 3000), {}, {}, low)[-1], spb.SettlementFailed)
    edge = {("TH-GOV", "USD"): INT64_MAX - 4_500_000}
    assert isinstance(settlement.transferred(transfer(1, 3000), {}, {}, edge)[-1], spb.SettlementCompleted)


@pytest.mark.parametrize(
    "bad",
    [
        trade(trade_id="x" * 1_000_000),
        trade(buyer_account_id="A\x00B"),
        trade(seller_account_id="x" * 65),
        trade(instrument_id="JCM\x1b[2J"),
        trade(currency=""),
        trade(quantity=2**63),
        trade(quantity=0),
        trade(price=0),
    ],
)
def test_a_trade_that_cannot_be_stored_is_refused_with_a_code(bad: mpb.TradeExecuted) -> None:
    with pytest.raises(DomainError) as refused:
        TradeSettlement("settlement-T1").start(bad)
    assert refused.value.code == "TRADE_INVALID"


def test_snapshot_restores_the_same_state() -> None:
    settlement = TradeSettlement("settlement-T1")
    assert TradeSettlement.restore("settlement-T1", settlement.snapshot()).snapshot() == settlement.snapshot()
    step(settlement, settlement.start(trade()))
    step(settlement, settlement.screened(approved()))
    restored = TradeSettlement.restore("settlement-T1", settlement.snapshot())
    assert (restored.started, restored.phase, restored.failure) == (settlement.started, Phase.TRANSFERRING, "")
    assert restored.snapshot() == settlement.snapshot()
