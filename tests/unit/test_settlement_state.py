"""TradeSettlement and CashAccount aggregates under random commands, deposits, snapshots
and restarts: the state reached live, folded from zero, and restored from a snapshot plus
the tail is the same, byte for byte (the aggregate half of the state hash); deciding
never mutates; the cash ledger nets to zero, never goes negative, and a trade's payment
moves once, with its units."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from google.protobuf.message import Message
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services.common.aggregate import Aggregate
from services.common.errors import DomainError
from services.common.inputs import INT64_MAX
from services.settlement.domain import cash, dvp
from services.settlement.domain.cash import CashAccount
from services.settlement.domain.settlement import Phase, TradeSettlement
from tests.unit.test_settlement import transfer
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import settlement_pb2 as spb
from tonne.v1.envelope_pb2 import CommandRejected

TRADES = ("T1", "T2", "T3", "T4", "T5")
ORDERS = ("B1", "B2")
ACCOUNTS = ("TH-GOV", "CH-BUYER")
# The legal moves of the machine: phase before -> phases after.
LEGAL: dict[Phase | None, set[Phase | None]] = {
    None: {None, Phase.SCREENING, Phase.FAILED},
    Phase.SCREENING: {Phase.SCREENING, Phase.TRANSFERRING, Phase.FAILED},
    Phase.TRANSFERRING: {Phase.TRANSFERRING, Phase.SETTLED, Phase.FAILED},
    Phase.SETTLED: {Phase.SETTLED},
    Phase.FAILED: {Phase.FAILED},
}


def kind_of(stream_id: str) -> type[TradeSettlement] | type[CashAccount]:
    return CashAccount if stream_id.startswith(cash.PREFIX) else TradeSettlement


def fold(stream_id: str, events: list[Message]) -> Aggregate:
    aggregate = kind_of(stream_id)(stream_id)
    aggregate.mutate(events)
    return aggregate


def state_hash(aggregates: dict[str, Aggregate]) -> str:
    h = hashlib.sha256()
    for stream_id in sorted(aggregates):
        aggregate = aggregates[stream_id]
        h.update(f"{stream_id}:{aggregate.version}:".encode() + aggregate.snapshot())
    return h.hexdigest()


class Settlements(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.live: dict[str, Aggregate] = {}
        self.history: dict[str, list[Message]] = {}
        self.snapshots: dict[str, tuple[int, bytes]] = {}
        self.ledger: list[cash.Leg] = []
        self.deposited = 0
        self.paid: dict[str, int] = {}  # trade id -> times its payment moved

    def _settlement(self, trade_id: str) -> TradeSettlement:
        stream_id = f"settlement-{trade_id}"
        found = self.live.setdefault(stream_id, TradeSettlement(stream_id))
        assert isinstance(found, TradeSettlement)
        return found

    def _cash(self, account_id: str) -> CashAccount:
        stream_id = cash.PREFIX + cash.key(account_id, "USD")
        found = self.live.setdefault(stream_id, CashAccount(stream_id))
        assert isinstance(found, CashAccount)
        return found

    def _commit(self, aggregate: Aggregate, events: list[Message]) -> None:
        aggregate.mutate(events)
        self.history.setdefault(aggregate.stream_id, []).extend(events)
        self.ledger += [leg for e in events for leg in cash.legs(e)]
        for event in events:
            if isinstance(event, spb.CashPaid):
                self.paid[event.trade_id] = self.paid.get(event.trade_id, 0) + 1

    def _decide(self, settlement: TradeSettlement, decide: Callable[[], dvp.Steps]) -> dvp.Steps:
        """Decide (which must change nothing), then do what the unit of work does after its
        commit: fold each aggregate's events."""
        touched = [settlement, *(self._cash(a) for a in ACCOUNTS)]
        before = [(a.snapshot(), a.version) for a in touched]
        phase = settlement.phase
        steps = decide()
        assert [(a.snapshot(), a.version) for a in touched] == before
        self._commit(settlement, steps.settlement)
        if settlement.started is not None:
            self._commit(self._cash(settlement.started.buyer_account_id), steps.buyer)
            self._commit(self._cash(settlement.started.seller_account_id), steps.seller)
        assert settlement.phase in LEGAL[phase]
        return steps

    @rule(account=st.sampled_from(ACCOUNTS), amount=st.one_of(st.integers(1, 10**9), st.just(INT64_MAX // 2)))
    def deposit(self, account: str, amount: int) -> None:
        target = self._cash(account)
        if target.available + target.held + amount <= INT64_MAX:
            self._commit(target, target.deposit(f"D{len(self.ledger)}", amount, "ops"))
            self.deposited += amount

    @rule(account=st.sampled_from(ACCOUNTS), order=st.sampled_from(ORDERS), price=st.integers(1, 10_000),
          quantity=st.integers(1, 5000))  # fmt: skip
    def cover(self, account: str, order: str, price: int, quantity: int) -> None:
        """A buy order's cover, when the buyer can afford it (else refused, nothing changes)."""
        target = self._cash(account)
        try:
            events = target.reserve(order, price * quantity, quantity)
        except DomainError as error:
            assert error.code == "CASH_INSUFFICIENT" and price * quantity > target.available
            return
        self._commit(target, events)

    @rule(account=st.sampled_from(ACCOUNTS), order=st.sampled_from(ORDERS))
    def uncover(self, account: str, order: str) -> None:
        target = self._cash(account)
        self._commit(target, target.uncover(order, "cancelled"))

    @rule(
        trade_id=st.sampled_from(TRADES),
        seller=st.sampled_from(ACCOUNTS),
        buyer=st.sampled_from(ACCOUNTS),
        order=st.sampled_from(("", *ORDERS)),
        # Ordinary trades, and cash amounts near the 64-bit edge.
        price=st.one_of(st.integers(1, 10_000), st.sampled_from([INT64_MAX // 3 + 1, INT64_MAX // 2, INT64_MAX])),
        quantity=st.one_of(st.integers(1, 5000), st.integers(1, 3), st.integers(1, INT64_MAX)),
    )
    def start(self, trade_id: str, seller: str, buyer: str, price: int, quantity: int, order: str = "") -> None:
        settlement = self._settlement(trade_id)
        trade = mpb.TradeExecuted(
            trade_id=trade_id,
            instrument_id="JCM-TH-2024-NDC",
            price=price,
            quantity=quantity,
            currency="USD",
            buy_order_id=order,
            sell_order_id=f"S-{trade_id}",
            seller_account_id=seller,
            buyer_account_id=buyer,
        )
        fresh = settlement.started is None
        cover = self._cash(buyer).covers.get(order)
        if cover is None:
            affordable = price * quantity <= min(INT64_MAX, self._cash(buyer).available)
        else:
            affordable = price * quantity <= cover.amount and quantity <= cover.quantity
        steps = self._decide(settlement, lambda: dvp.opened(settlement, trade, self._cash(buyer)))
        if fresh:
            kinds = [type(e) for e in steps.settlement]
            assert kinds == [spb.SettlementStarted] + [spb.SettlementFailed] * (not affordable)
            assert [e.DESCRIPTOR.name for e in steps.buyer][:1] == ["CashHeld"] * affordable
        else:
            assert steps.settlement == steps.buyer == []

    @rule(trade_id=st.sampled_from(TRADES), approve=st.booleans())
    def screened(self, trade_id: str, approve: bool) -> None:
        settlement = self._settlement(trade_id)
        decision = cpb.ScreeningDecision(
            request_id=trade_id,
            trade_id=trade_id,
            verdict=cpb.APPROVED if approve else cpb.REJECTED,
            results=[] if approve else [cpb.RuleResult(code="QUALITY_VINTAGE", passed=False)],
        )
        if settlement.started is not None:
            s = settlement.started
            buyer, seller = self._cash(s.buyer_account_id), self._cash(s.seller_account_id)
            self._decide(settlement, lambda: dvp.screened(settlement, decision, buyer, seller))

    @rule(
        trade_id=st.sampled_from(TRADES),
        start=st.integers(1, 5000),
        size=st.integers(0, 3000),
        foreign=st.booleans(),
    )
    def transferred(self, trade_id: str, start: int, size: int, foreign: bool) -> None:
        """The trade's delivery completes it and pays for it; another transfer carrying its
        id (a holder's own transfer, say) changes nothing."""
        settlement = self._settlement(trade_id)
        s = settlement.started
        if s is None:
            return
        moved = transfer(start, start + size)
        moved.transfer_id = trade_id
        moved.reservation_id, moved.quantity = s.reservation_id, s.quantity
        moved.from_account_id, moved.to_account_id = s.seller_account_id, s.buyer_account_id
        if foreign:
            moved.reservation_id = "someone-else's"
        waiting = settlement.phase is Phase.TRANSFERRING and not foreign
        buyer, seller = self._cash(s.buyer_account_id), self._cash(s.seller_account_id)
        steps = self._decide(settlement, lambda: dvp.delivered(settlement, moved, buyer, seller))
        if not waiting:
            assert steps.settlement == steps.buyer == steps.seller == []
        elif isinstance(steps.settlement[-1], spb.SettlementCompleted):
            assert [e.DESCRIPTOR.name for e in steps.buyer + steps.seller] == ["CashPaid", "CashReceived"]

    @rule(
        trade_id=st.sampled_from(TRADES),
        seller=st.sampled_from(ACCOUNTS),
        buyer=st.sampled_from(ACCOUNTS),
        price=st.one_of(st.integers(1, 10_000), st.just(INT64_MAX // 2)),
        quantity=st.integers(1, 2),
    )
    def settle_whole(self, trade_id: str, seller: str, buyer: str, price: int, quantity: int) -> None:
        """A whole trade, its buyer funded first (near 2^63, two receipts overflow a seller)."""
        self.deposit(buyer, price * quantity)
        self.start(trade_id, seller, buyer, price, quantity)
        self.screened(trade_id, approve=True)
        self.transferred(trade_id, 1, 0, foreign=False)

    @rule(trade_id=st.sampled_from(TRADES))
    def refused(self, trade_id: str) -> None:
        settlement = self._settlement(trade_id)
        if settlement.started is not None:
            buyer = self._cash(settlement.started.buyer_account_id)
            rejection = CommandRejected(
                command_id=trade_id, command_type="tonne.v1.TransferUnits", code="X", reason="y"
            )
            self._decide(settlement, lambda: dvp.refused(settlement, rejection, buyer))

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def snapshot(self, data: st.DataObject) -> None:
        stream_id = data.draw(st.sampled_from(sorted(self.live)))
        aggregate = self.live[stream_id]
        self.snapshots[stream_id] = (aggregate.version, aggregate.snapshot())

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        """Drop an aggregate from memory; it comes back from its snapshot plus the tail."""
        stream_id = data.draw(st.sampled_from(sorted(self.live)))
        self.live[stream_id] = self._reload(stream_id)

    def _reload(self, stream_id: str) -> Aggregate:
        version, state = self.snapshots.get(stream_id, (0, b""))
        kind = kind_of(stream_id)
        aggregate = kind.restore(stream_id, state) if version else kind(stream_id)
        aggregate.version = aggregate.snapshot_version = version
        aggregate.mutate(self.history.get(stream_id, [])[version:])
        return aggregate

    @invariant()
    def live_equals_folds_from_zero_and_from_snapshot(self) -> None:
        from_zero = {s: fold(s, self.history.get(s, [])) for s in self.live}
        from_snapshot = {s: self._reload(s) for s in self.live}
        assert state_hash(self.live) == state_hash(from_zero) == state_hash(from_snapshot)
        for stream_id, aggregate in self.live.items():
            assert aggregate.snapshot() == from_zero[stream_id].snapshot() == from_snapshot[stream_id].snapshot()

    @invariant()
    def cash_nets_to_zero_and_is_never_negative(self) -> None:
        postings: dict[str, int] = {}
        for leg in self.ledger:
            postings[leg.posting_id] = postings.get(leg.posting_id, 0) + leg.amount
        assert all(total == 0 for total in postings.values())
        accounts = [self._cash(a) for a in ACCOUNTS]
        assert all(0 <= a.available <= INT64_MAX and a.held >= 0 for a in accounts)
        assert sum(a.available + a.held for a in accounts) == self.deposited  # nothing made or lost

    @invariant()
    def payments_move_once_and_only_for_settled_trades(self) -> None:
        settled = {t for t in TRADES if self._settlement(t).phase is Phase.SETTLED}
        assert self.paid == dict.fromkeys(settled, 1)
        in_flight = {t for t in TRADES if self._settlement(t).phase in (Phase.SCREENING, Phase.TRANSFERRING)}
        held = {t for a in ACCOUNTS for t in self._cash(a).holds}
        assert held == in_flight


Settlements.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestSettlements = Settlements.TestCase
