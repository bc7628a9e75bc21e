"""TradeSettlement aggregates under random commands, snapshots and restarts: the state
reached live, folded from zero, and restored from a snapshot plus the tail is the same,
byte for byte (the aggregate half of the state hash), and deciding never mutates."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from google.protobuf.message import Message
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services.common.inputs import INT64_MAX
from services.settlement.domain.settlement import Phase, TradeSettlement, cash_legs
from tests.unit.factories import loa
from tests.unit.test_settlement import transfer
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import settlement_pb2 as spb
from tonne.v1.envelope_pb2 import CommandRejected

TRADES = ("T1", "T2", "T3", "T4", "T5")
ACCOUNTS = ("TH-GOV", "CH-BUYER")
# The legal moves of the machine: phase before -> phases after.
LEGAL: dict[Phase | None, set[Phase | None]] = {
    None: {None, Phase.SCREENING, Phase.FAILED},
    Phase.SCREENING: {Phase.SCREENING, Phase.TRANSFERRING, Phase.FAILED},
    Phase.TRANSFERRING: {Phase.TRANSFERRING, Phase.SETTLED, Phase.FAILED},
    Phase.SETTLED: {Phase.SETTLED},
    Phase.FAILED: {Phase.FAILED},
}


def fold(stream_id: str, events: list[Message]) -> TradeSettlement:
    aggregate = TradeSettlement(stream_id)
    aggregate.mutate(events)
    return aggregate


def state_hash(aggregates: dict[str, TradeSettlement]) -> str:
    h = hashlib.sha256()
    for stream_id in sorted(aggregates):
        aggregate = aggregates[stream_id]
        h.update(f"{stream_id}:{aggregate.version}:".encode() + aggregate.snapshot())
    return h.hexdigest()


class Settlements(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.live: dict[str, TradeSettlement] = {}
        self.history: dict[str, list[Message]] = {}
        self.snapshots: dict[str, tuple[int, bytes]] = {}
        self.cash: dict[tuple[str, str], int] = {}

    def _aggregate(self, trade_id: str) -> TradeSettlement:
        stream_id = f"settlement-{trade_id}"
        return self.live.setdefault(stream_id, TradeSettlement(stream_id))

    def _decide(self, aggregate: TradeSettlement, decide: Callable[[], list[Message]]) -> list[Message]:
        """Decide (which must change nothing), then do what the unit of work does after its
        commit: fold the events, and book cash as the projector does."""
        before_bytes, before_version, before_phase = aggregate.snapshot(), aggregate.version, aggregate.phase
        events = decide()
        assert (aggregate.snapshot(), aggregate.version) == (before_bytes, before_version)
        aggregate.mutate(events)
        self.history.setdefault(aggregate.stream_id, []).extend(events)
        assert aggregate.phase in LEGAL[before_phase]
        for event in events:
            if isinstance(event, spb.SettlementCompleted):
                for account, amount in cash_legs(event):
                    self.cash[account] = self.cash.get(account, 0) + amount
        return events

    @rule(
        trade_id=st.sampled_from(TRADES),
        seller=st.sampled_from(ACCOUNTS),
        buyer=st.sampled_from(ACCOUNTS),
        # Ordinary trades, and cash amounts near the 64-bit edge (alone, or two of them on
        # one account's balance).
        price=st.one_of(st.integers(1, 10_000), st.sampled_from([INT64_MAX // 3 + 1, INT64_MAX // 2, INT64_MAX])),
        quantity=st.one_of(st.integers(1, 5000), st.integers(1, 3), st.integers(1, INT64_MAX)),
    )
    def start(self, trade_id: str, seller: str, buyer: str, price: int, quantity: int) -> None:
        aggregate = self._aggregate(trade_id)
        trade = mpb.TradeExecuted(
            trade_id=trade_id,
            instrument_id="JCM-TH-2024-NDC",
            price=price,
            quantity=quantity,
            currency="USD",
            sell_order_id=f"S-{trade_id}",
            seller_account_id=seller,
            buyer_account_id=buyer,
        )
        fresh = aggregate.started is None
        events = self._decide(aggregate, lambda: aggregate.start(trade))
        if fresh:
            overflow = price * quantity > INT64_MAX
            assert [type(e) for e in events] == [spb.SettlementStarted] + [spb.SettlementFailed] * overflow
        else:
            assert events == []

    @rule(trade_id=st.sampled_from(TRADES), approve=st.booleans())
    def screened(self, trade_id: str, approve: bool) -> None:
        aggregate = self._aggregate(trade_id)
        decision = cpb.ScreeningDecision(
            request_id=trade_id,
            trade_id=trade_id,
            verdict=cpb.APPROVED if approve else cpb.REJECTED,
            results=[] if approve else [cpb.RuleResult(code="QUALITY_VINTAGE", passed=False)],
        )
        self._decide(aggregate, lambda: aggregate.screened(decision))

    @rule(
        trade_id=st.sampled_from(TRADES),
        start=st.integers(1, 5000),
        size=st.integers(0, 3000),
        foreign=st.booleans(),
    )
    def transferred(self, trade_id: str, start: int, size: int, foreign: bool) -> None:
        """The trade's delivery completes it; another transfer carrying its id (a holder's
        own transfer, say) changes nothing."""
        aggregate = self._aggregate(trade_id)
        moved = transfer(start, start + size)
        moved.transfer_id = trade_id
        if aggregate.started is not None:
            s = aggregate.started
            moved.reservation_id, moved.quantity = s.reservation_id, s.quantity
            moved.from_account_id, moved.to_account_id = s.seller_account_id, s.buyer_account_id
        if foreign:
            moved.reservation_id = "someone-else's"
        waiting = aggregate.phase is Phase.TRANSFERRING and not foreign
        events = self._decide(aggregate, lambda: aggregate.transferred(moved, {"LOA-TH-1": loa()}, {}, self.cash))
        assert isinstance(events[-1], spb.SettlementCompleted | spb.SettlementFailed) if waiting else events == []

    @rule(
        trade_id=st.sampled_from(TRADES),
        seller=st.sampled_from(ACCOUNTS),
        buyer=st.sampled_from(ACCOUNTS),
        quantity=st.integers(1, 3),
    )
    def settle_near_the_edge(self, trade_id: str, seller: str, buyer: str, quantity: int) -> None:
        """A whole trade whose cash amount is near 2^63: two on one balance overflow it."""
        self.start(trade_id, seller, buyer, INT64_MAX // quantity, quantity)
        self.screened(trade_id, approve=True)
        self.transferred(trade_id, 1, 0, foreign=False)

    @rule(trade_id=st.sampled_from(TRADES))
    def refused(self, trade_id: str) -> None:
        aggregate = self._aggregate(trade_id)
        rejection = CommandRejected(command_id=trade_id, command_type="tonne.v1.TransferUnits", code="X", reason="y")
        self._decide(aggregate, lambda: aggregate.refused(rejection))

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

    def _reload(self, stream_id: str) -> TradeSettlement:
        version, state = self.snapshots.get(stream_id, (0, b""))
        aggregate = TradeSettlement.restore(stream_id, state) if version else TradeSettlement(stream_id)
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
    def cash_nets_to_zero_and_fits_int64(self) -> None:
        assert sum(self.cash.values()) == 0
        assert all(-(2**63) <= balance <= INT64_MAX for balance in self.cash.values())


Settlements.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestSettlements = Settlements.TestCase
