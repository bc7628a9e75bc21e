from __future__ import annotations

from collections import defaultdict

import pytest
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import DomainError
from services.common.inputs import INT64_MAX
from services.common.serials import subtract
from services.settlement.domain import aef, cash, dvp
from services.settlement.domain.adjustments import added, owed
from services.settlement.domain.cash import CashAccount
from services.settlement.domain.settlement import Phase, TradeSettlement
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
    [ca] = owed(transfer(1, 3000), "T1", {"LOA-TH-1": loa()}, {})
    assert isinstance(ca, spb.CorrespondingAdjustmentApplied)
    assert (ca.party, ca.side, ca.vintage, ca.quantity) == ("TH", spb.FIRST_TRANSFERRING, 2024, 3000)
    assert (ca.event, [(s.start, s.end) for s in ca.serials]) == (rpb.AT_FIRST_INTERNATIONAL_TRANSFER, [(1, 3000)])


def test_an_issuance_share_allocated_abroad_is_a_first_international_transfer() -> None:
    """A JCM split: Thailand's government keeps its half, Japan's side receives the other."""
    [block] = transfer(1, 10_000).blocks
    allocated = rpb.UnitsAllocated(issuance_id="JC-1", from_account_id="TH-GOV", policy="jcm-th-allocation@2026-02")
    pieces = (("host_government", "TH-GOV", "TH", 1, 5000), ("participants", "JP-PP", "JP", 5001, 10_000))
    for role, account, party, start, end in pieces:
        piece = allocated.allocations.add(role=role, account_id=account, jurisdiction=party)
        piece.block.CopyFrom(block)
        piece.block.start, piece.block.end = start, end
    [ca] = owed(allocated, "allocation:JC-1", {"LOA-TH-1": loa()}, {})
    assert isinstance(ca, spb.CorrespondingAdjustmentApplied)
    assert (ca.party, ca.side, ca.quantity, [(s.start, s.end) for s in ca.serials]) == (
        "TH",
        spb.FIRST_TRANSFERRING,
        5000,
        [(5001, 10_000)],
    )
    # AEF: Thailand reports the first transfer, Japan the acquisition; the government's half stays.
    made = aef.actions(allocated, "allocation:JC-1", 2026, [ca])
    assert [(a.party, spb.ItmoActionType.Name(a.action), a.serials.start, a.quantity) for a in made] == [
        ("TH", "ITMO_FIRST_TRANSFER", 5001, 5000),
        ("JP", "ITMO_ACQUISITION", 5001, 5000),
    ]
    assert aef.holdings([a for a in made if a.party == "JP"]) == {("JCM-TH", 2024): 5000}
    loas = {"LOA-TH-1": loa(quantity=5000)}
    assert aef.check("TH", 2026, loas, made, {(2024, spb.FIRST_TRANSFERRING): 5000}) == []


def test_serials_already_adjusted_owe_nothing_again() -> None:
    adjusted = {"JCM-TH": [(1, 1000)]}
    [ca] = owed(transfer(1, 3000), "T2", {"LOA-TH-1": loa()}, adjusted)
    assert isinstance(ca, spb.CorrespondingAdjustmentApplied) and ca.quantity == 2000


def test_domestic_or_unauthorized_transfers_owe_nothing() -> None:
    assert owed(transfer(1, 10, to_jurisdiction="TH"), "T", {"LOA-TH-1": loa()}, {}) == []
    assert owed(transfer(1, 10, authorization_id=""), "T", {"LOA-TH-1": loa()}, {}) == []


def test_each_loa_is_adjusted_at_the_event_it_names() -> None:
    """Issuance, authorization and use/cancellation as the first transfer; the acquiring
    party's adjustment when it uses the ITMOs toward its NDC; a transfer abroad of units
    whose LoA names another event owes nothing."""

    def with_first_transfer(event: rpb.FirstTransfer.ValueType) -> dict[str, rpb.RecordAuthorization]:
        authorization = loa()
        authorization.first_transfer = event
        return {"LOA-TH-1": authorization}

    [block] = transfer(1, 100).blocks
    at_issuance = with_first_transfer(rpb.AT_ISSUANCE)
    [issued] = owed(rpb.UnitsIssued(issuance_id="I1", account_id="TH-GOV", block=block), "issuance:I1", at_issuance, {})
    assert isinstance(issued, spb.CorrespondingAdjustmentApplied)
    assert (issued.party, issued.quantity, issued.event) == ("TH", 100, rpb.AT_ISSUANCE)
    assert owed(transfer(1, 100), "T1", at_issuance, {}) == []

    assert owed(rpb.AuthorizationRecorded(authorization=loa()), "a", {}, {}) == []  # the LoA names the first transfer
    authorization = loa()
    authorization.first_transfer = rpb.AT_AUTHORIZATION
    [authorized] = owed(rpb.AuthorizationRecorded(authorization=authorization), "authorization:LOA-TH-1", {}, {})
    assert isinstance(authorized, spb.CorrespondingAdjustmentApplied)
    assert (authorized.quantity, authorized.vintage, list(authorized.serials)) == (4000, 2021, [])
    # A change that authorizes 500 t more owes their adjustment at the change; one that adds none, nothing.
    raised = rpb.RecordAuthorization()
    raised.CopyFrom(authorization)
    raised.quantity = 4500
    more = added(raised, authorization)
    assert more is not None and more.quantity == 500
    [extra] = owed(rpb.AuthorizationRecorded(authorization=more), "authorization:LOA-TH-1:v2", {}, {})
    assert extra.quantity == 500  # type: ignore[attr-defined]
    assert added(authorization, authorization) is None

    retired = rpb.UnitsRetired(retirement_id="R1", account_id="CH-BUYER", jurisdiction="CH", quantity=100,
                               blocks=[block], purpose="toward the NDC", use=rpb.CLAIM_NDC)  # fmt: skip
    first, acquiring = owed(retired, "retirement:R1", with_first_transfer(rpb.AT_USE_OR_CANCELLATION), {})
    assert isinstance(first, spb.CorrespondingAdjustmentApplied)
    assert isinstance(acquiring, spb.CorrespondingAdjustmentApplied)
    assert (first.party, first.side, acquiring.party, acquiring.side) == (
        "TH",
        spb.FIRST_TRANSFERRING,
        "CH",
        spb.ACQUIRING,
    )
    # Already first-transferred (at the LoA's own event): only the acquiring side is left.
    [only] = owed(retired, "retirement:R1", {"LOA-TH-1": loa()}, {"JCM-TH": [(1, 100)]})
    assert isinstance(only, spb.CorrespondingAdjustmentApplied) and only.side == spb.ACQUIRING
    voluntary = rpb.UnitsRetired(jurisdiction="CH", blocks=[block], purpose="voluntary")
    assert owed(voluntary, "retirement:R2", {"LOA-TH-1": loa()}, {"JCM-TH": [(1, 100)]}) == []


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


class Books:
    """One trade's settlement and the cash accounts it touches, committed as the unit of
    work does: each aggregate folds its events; the ledger keeps every leg posted."""

    def __init__(self, **deposits: int) -> None:
        self.settlement = TradeSettlement("settlement-T1")
        self.accounts = {a: CashAccount.of(a, "USD") for a in ("CH-BUYER", "TH-GOV")}
        self.ledger: list[cash.Leg] = []
        for account_id, amount in deposits.items():
            self.post(self.accounts[account_id], self.accounts[account_id].deposit(f"D-{account_id}", amount, "ops"))

    @property
    def buyer(self) -> CashAccount:
        return self.accounts["CH-BUYER"]

    @property
    def seller(self) -> CashAccount:
        return self.accounts["TH-GOV"]

    def post(self, account: CashAccount, events: list[Message]) -> None:
        account.mutate(events)
        self.ledger += [leg for e in events for leg in cash.legs(e)]

    def commit(self, steps: dvp.Steps) -> list[Message]:
        self.settlement.mutate(steps.settlement)
        self.post(self.buyer, steps.buyer)
        self.post(self.seller, steps.seller)
        return steps.settlement

    def balances(self) -> dict[str, tuple[int, int]]:
        return {a: (account.available, account.held) for a, account in self.accounts.items()}

    def nets_to_zero(self) -> bool:
        postings: defaultdict[str, int] = defaultdict(int)
        for leg in self.ledger:
            postings[leg.posting_id] += leg.amount
        return all(total == 0 for total in postings.values())


def approved() -> cpb.ScreeningDecision:
    return cpb.ScreeningDecision(request_id="T1", trade_id="T1", verdict=cpb.APPROVED)


def test_delivery_versus_payment_happy_path() -> None:
    books = Books(**{"CH-BUYER": 5_000_000})
    steps = dvp.opened(books.settlement, trade(), books.buyer)
    assert books.settlement.started is None and books.buyer.held == 0  # deciding changes nothing
    books.commit(steps)
    assert books.balances() == {"CH-BUYER": (500_000, 4_500_000), "TH-GOV": (0, 0)}  # the payment is held
    assert dvp.opened(books.settlement, trade(), books.buyer).settlement == []  # the same trade twice starts once
    [instructed] = books.commit(dvp.screened(books.settlement, approved(), books.buyer, books.seller))
    assert isinstance(instructed, spb.TransferInstructed)
    assert books.settlement.screened(approved()) == []  # a duplicate decision does nothing
    delivered = dvp.delivered(books.settlement, transfer(1, 3000), books.buyer, books.seller)
    events = books.commit(delivered)
    assert [type(e).__name__ for e in events] == ["SettlementCompleted"]
    assert [type(e).__name__ for e in delivered.buyer + delivered.seller] == ["CashPaid", "CashReceived"]
    assert books.settlement.phase is Phase.SETTLED
    assert books.balances() == {"CH-BUYER": (500_000, 0), "TH-GOV": (4_500_000, 0)}
    assert books.nets_to_zero()


def test_a_buyer_without_the_cash_fails_before_anything_moves() -> None:
    books = Books(**{"CH-BUYER": 4_499_999})
    steps = dvp.opened(books.settlement, trade(), books.buyer)
    started, failed = books.commit(steps)
    assert isinstance(started, spb.SettlementStarted) and steps.buyer == []
    assert isinstance(failed, spb.SettlementFailed) and failed.code == "CASH_INSUFFICIENT"
    assert books.balances()["CH-BUYER"] == (4_499_999, 0)


def test_rejected_screening_fails_the_settlement_and_gives_the_cash_back() -> None:
    books = Books(**{"CH-BUYER": 4_500_000})
    books.commit(dvp.opened(books.settlement, trade(), books.buyer))
    decision = cpb.ScreeningDecision(
        request_id="T1",
        trade_id="T1",
        verdict=cpb.REJECTED,
        results=[cpb.RuleResult(code="DOUBLE_CLAIMING_AUTHORIZATION", passed=False)],
    )
    [failed] = books.commit(dvp.screened(books.settlement, decision, books.buyer, books.seller))
    assert isinstance(failed, spb.SettlementFailed) and failed.reason == "DOUBLE_CLAIMING_AUTHORIZATION"
    assert books.settlement.phase is Phase.FAILED
    assert books.settlement.failure == "COMPLIANCE_REJECTED: DOUBLE_CLAIMING_AUTHORIZATION"
    assert books.balances()["CH-BUYER"] == (4_500_000, 0)
    assert books.settlement.transferred(transfer(1, 3000)) == []
    assert books.nets_to_zero()


def test_registry_refusal_fails_a_transferring_settlement_and_gives_the_cash_back() -> None:
    books = Books(**{"CH-BUYER": 4_500_000})
    books.commit(dvp.opened(books.settlement, trade(), books.buyer))
    refusal = CommandRejected(command_id="T1", command_type="tonne.v1.TransferUnits", code="HOLDINGS_INSUFFICIENT")
    assert dvp.refused(books.settlement, refusal, books.buyer).settlement == []  # not transferring yet
    books.commit(dvp.screened(books.settlement, approved(), books.buyer, books.seller))
    [failed] = books.commit(dvp.refused(books.settlement, refusal, books.buyer))
    assert isinstance(failed, spb.SettlementFailed) and failed.code == "HOLDINGS_INSUFFICIENT"
    assert books.settlement.phase is Phase.FAILED
    assert books.balances()["CH-BUYER"] == (4_500_000, 0)


def test_cash_amount_beyond_int64_fails_at_start() -> None:
    books = Books(**{"CH-BUYER": INT64_MAX})
    started, failed = books.commit(dvp.opened(books.settlement, trade(price=2**62, quantity=2), books.buyer))
    assert isinstance(started, spb.SettlementStarted)
    assert isinstance(failed, spb.SettlementFailed) and failed.code == "CASH_AMOUNT_OVERFLOW"
    assert books.settlement.phase is Phase.FAILED and books.buyer.held == 0
    assert books.settlement.screened(approved()) == []  # never screened, never transferred
    # The largest product that fits still settles.
    fits = Books(**{"CH-BUYER": INT64_MAX})
    assert [
        type(e) for e in fits.commit(dvp.opened(fits.settlement, trade(price=INT64_MAX, quantity=1), fits.buyer))
    ] == [spb.SettlementStarted]


def test_a_seller_balance_beyond_int64_fails_before_the_units_move() -> None:
    books = Books(**{"CH-BUYER": 4_500_000, "TH-GOV": INT64_MAX - 4_499_999})
    books.commit(dvp.opened(books.settlement, trade(), books.buyer))
    [failed] = books.commit(dvp.screened(books.settlement, approved(), books.buyer, books.seller))
    assert isinstance(failed, spb.SettlementFailed) and failed.code == "CASH_BALANCE_OVERFLOW"
    assert books.balances()["CH-BUYER"] == (4_500_000, 0)
    # At the edge it still settles.
    edge = Books(**{"CH-BUYER": 4_500_000, "TH-GOV": INT64_MAX - 4_500_000})
    edge.commit(dvp.opened(edge.settlement, trade(), edge.buyer))
    edge.commit(dvp.screened(edge.settlement, approved(), edge.buyer, edge.seller))
    edge.commit(dvp.delivered(edge.settlement, transfer(1, 3000), edge.buyer, edge.seller))
    assert edge.settlement.phase is Phase.SETTLED and edge.balances()["TH-GOV"] == (INT64_MAX, 0)


def test_withdrawals_and_deposits_are_refused_with_codes_and_change_nothing() -> None:
    books = Books(**{"CH-BUYER": 100})
    for kind, amount, code in (
        ("withdraw", 101, "CASH_INSUFFICIENT"),
        ("withdraw", 0, "CASH_AMOUNT_INVALID"),
        ("deposit", INT64_MAX, "CASH_BALANCE_OVERFLOW"),
    ):
        with pytest.raises(DomainError) as refused:
            getattr(books.buyer, kind)("M1", amount, "ops")
        assert refused.value.code == code
    assert books.balances()["CH-BUYER"] == (100, 0)
    books.post(books.buyer, books.buyer.withdraw("W1", 100, "ops"))
    assert books.balances()["CH-BUYER"] == (0, 0) and books.nets_to_zero()


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
    settlement.mutate(settlement.start(trade()))
    settlement.mutate(settlement.screened(approved()))
    restored = TradeSettlement.restore("settlement-T1", settlement.snapshot())
    assert (restored.started, restored.phase, restored.failure) == (settlement.started, Phase.TRANSFERRING, "")
    assert restored.snapshot() == settlement.snapshot()
    account = CashAccount.of("CH-BUYER", "USD")
    account.mutate(account.deposit("D1", 10, "ops"))
    account.mutate(account.hold("T1", 7))
    again = CashAccount.restore(account.stream_id, account.snapshot())
    assert (again.available, again.holds, again.snapshot()) == (3, {"T1": 7}, account.snapshot())


def test_a_covered_buy_order_pays_its_trades_from_its_cover_and_gives_back_the_rest() -> None:
    """A buy of 3,000 at a limit of 1,600 covers 4,800,000; two fills at 1,500 take
    4,500,000 from the cover and the 300,000 left goes back when the order is filled."""
    books = Books(**{"CH-BUYER": 5_000_000})
    books.post(books.buyer, books.buyer.reserve("B1", 1600 * 3000, 3000))
    assert books.balances()["CH-BUYER"] == (200_000, 4_800_000)
    with pytest.raises(DomainError) as short:
        books.buyer.reserve("B2", 200_001, 1)
    assert short.value.code == "CASH_INSUFFICIENT"

    first = dvp.opened(books.settlement, trade(quantity=1000, buy_order_id="B1"), books.buyer)
    books.commit(first)
    assert [e.DESCRIPTOR.name for e in first.buyer] == ["CashHeld"]
    assert books.buyer.covers["B1"] == (3_300_000, 2000) and books.buyer.holds == {"T1": 1_500_000}
    books.commit(dvp.screened(books.settlement, approved(), books.buyer, books.seller))
    books.commit(dvp.delivered(books.settlement, transfer(1, 1000), books.buyer, books.seller))

    last = TradeSettlement("settlement-T2")
    steps = dvp.opened(last, trade(quantity=2000, trade_id="T2", buy_order_id="B1"), books.buyer)
    last.mutate(steps.settlement)
    books.post(books.buyer, steps.buyer)
    assert [e.DESCRIPTOR.name for e in steps.buyer] == ["CashHeld", "CashReservationReleased"]
    assert books.buyer.covers == {} and books.buyer.holds == {"T2": 3_000_000}
    assert books.balances()["CH-BUYER"] == (500_000, 3_000_000)
    assert books.nets_to_zero()


def test_a_cancelled_buy_order_gives_its_cover_back_and_a_trade_cannot_overdraw_it() -> None:
    books = Books(**{"CH-BUYER": 1_000})
    books.post(books.buyer, books.buyer.reserve("B1", 1_000, 10))
    with pytest.raises(DomainError) as over:
        books.buyer.hold("T9", 1_001, "B1", 10)
    assert over.value.code == "CASH_COVER_EXCEEDED"
    assert books.buyer.reserve("B1", 1_000, 10) == []  # the same cover twice sets aside once
    books.post(books.buyer, books.buyer.uncover("B1", "cancelled"))
    assert books.balances()["CH-BUYER"] == (1_000, 0) and books.buyer.uncover("B1", "again") == []
    assert books.nets_to_zero()
