"""Properties of the engine over every input it takes: orders of every type, cancels,
replaces, expiry, sessions and restarts, interleaved by Hypothesis."""

from __future__ import annotations

from collections import Counter

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services.matching.domain.engine import Book, Command
from services.matching.domain.instruments import load
from tonne.v1 import matching_pb2 as pb

INSTRUMENT = "JCM-TH-2024-NDC"
INSTRUMENTS = load()
ACCOUNTS = ("acct-1", "acct-2", "acct-3")
BROKERS = ("broker-a", "broker-b")


def journal_bytes(events: list[Message]) -> list[bytes]:
    return [e.DESCRIPTOR.full_name.encode() + b":" + e.SerializeToString(deterministic=True) for e in events]


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = Book.empty(INSTRUMENT)
        self.commands: list[Command] = []
        self.journal: list[Message] = []
        self.restored_at: tuple[int, bytes] = (0, self.book.snapshot())  # (journal length, snapshot)
        self.orders = 0
        self.clock = 0
        # Where each accepted order's quantity went.
        self.accepted: dict[str, int] = {}
        self.spent: Counter[str] = Counter()  # traded + cancelled + reduced
        self.broker_scope: set[str] = set()  # orders whose self-trade scope is the broker

    def run(self, command: Command) -> list[Message]:
        before = self.book.snapshot()
        events = self.book.decide(command, INSTRUMENTS[INSTRUMENT])
        assert self.book.snapshot() == before, "deciding changes nothing"
        self.book.mutate(events)
        self.commands.append(command)
        self.journal += events
        for event in events:
            match event:
                case pb.OrderAccepted():
                    self.accepted[event.order.order_id] = event.order.quantity
                    if event.order.stp_scope == pb.STP_SCOPE_BROKER:
                        self.broker_scope.add(event.order.order_id)
                case pb.TradeExecuted():
                    assert event.buyer_account_id != event.seller_account_id, "a self-trade went through"
                    taker = event.buy_order_id if event.maker_order_id == event.sell_order_id else event.sell_order_id
                    if taker in self.broker_scope:
                        assert event.buyer_broker_id != event.seller_broker_id, "a same-broker trade went through"
                    self.spent[event.buy_order_id] += event.quantity
                    self.spent[event.sell_order_id] += event.quantity
                case pb.OrderCancelled():
                    self.spent[event.order_id] += event.remaining_quantity
                case pb.OrderReduced():
                    self.spent[event.order_id] += event.quantity
        return events

    @rule(
        side=st.sampled_from([pb.BUY, pb.SELL]),
        price=st.integers(995, 1005),
        quantity=st.integers(1, 20),
        market=st.sampled_from([False] * 4 + [True]),
        tif=st.sampled_from([pb.TIME_IN_FORCE_UNSPECIFIED] * 4 + list(pb.TimeInForce.values())),
        post_only=st.sampled_from([False] * 4 + [True]),
        stp=st.sampled_from(list(pb.SelfTradePrevention.values())),
        scope=st.sampled_from(list(pb.StpScope.values())),
        account=st.sampled_from(ACCOUNTS),
        broker=st.sampled_from(BROKERS),
        lifetime=st.integers(-1, 4),
    )
    def submit(
        self,
        side: pb.Side.ValueType,
        price: int,
        quantity: int,
        market: bool,
        tif: pb.TimeInForce.ValueType,
        post_only: bool,
        stp: pb.SelfTradePrevention.ValueType,
        scope: pb.StpScope.ValueType,
        account: str,
        broker: str,
        lifetime: int,
    ) -> None:
        self.orders += 1
        order_id = f"o{self.orders}"
        command = pb.SubmitOrder(
            order_id=order_id,
            instrument_id=INSTRUMENT,
            broker_id=broker,
            account_id=account,
            side=side,
            price=0 if market else price,
            quantity=quantity,
            order_type=pb.ORDER_TYPE_MARKET if market else pb.ORDER_TYPE_LIMIT,
            time_in_force=tif,
            post_only=post_only,
            self_trade_prevention=stp,
            stp_scope=scope,
            expire_at=Timestamp(seconds=self.clock + lifetime) if tif == pb.TIME_IN_FORCE_GTD else None,
        )
        events = self.run(command)
        if not isinstance(events[0], pb.OrderAccepted):
            assert [type(e) for e in events] == [pb.OrderRejected]
            return
        traded = sum(e.quantity for e in events if isinstance(e, pb.TradeExecuted))
        if tif == pb.TIME_IN_FORCE_FOK:  # all or nothing
            assert traded in (0, quantity)
            if traded == 0:
                assert [type(e) for e in events] == [pb.OrderAccepted, pb.OrderCancelled]
        if market or tif in (pb.TIME_IN_FORCE_IOC, pb.TIME_IN_FORCE_FOK):
            assert self.book.orders.get(order_id) is None, "IOC, FOK and market orders never rest"
        if post_only:
            assert traded == 0

    @rule(
        side=st.sampled_from([pb.BUY, pb.SELL]),
        price=st.integers(997, 1003),
        quantity=st.integers(1, 20),
        account=st.sampled_from(ACCOUNTS),
    )
    def limit(self, side: pb.Side.ValueType, price: int, quantity: int, account: str) -> None:
        """A plain limit order (most of a real flow), so that books fill and trade."""
        self.submit(side, price, quantity, False, pb.TIME_IN_FORCE_UNSPECIFIED, False, 0, 0, account, BROKERS[0], 0)

    @precondition(lambda self: len(self.book.orders) > 0)
    @rule(data=st.data(), same_broker=st.booleans())
    def cancel(self, data: st.DataObject, same_broker: bool) -> None:
        target = data.draw(st.sampled_from(list(self.book.orders.resting())))
        broker = target.broker_id if same_broker else next(b for b in BROKERS if b != target.broker_id)
        [event] = self.run(pb.CancelOrder(order_id=target.order_id, instrument_id=INSTRUMENT, broker_id=broker))
        assert isinstance(event, pb.OrderCancelled if same_broker else pb.OrderRejected)

    @precondition(lambda self: len(self.book.orders) > 0)
    @rule(data=st.data(), price=st.integers(995, 1005), change=st.integers(-8, 2))
    def replace(self, data: st.DataObject, price: int, change: int) -> None:
        target = data.draw(st.sampled_from(list(self.book.orders.resting())))
        order_id, before, quantity = target.order_id, target.price, max(target.remaining + change, 0)
        post_only = target.post_only
        command = pb.ReplaceOrder(
            order_id=order_id, instrument_id=INSTRUMENT, broker_id=target.broker_id, price=price, quantity=quantity
        )
        events = self.run(command)
        if isinstance(events[0], pb.OrderRejected):
            return
        if price == before:  # a size reduction keeps the order's place
            assert [type(e) for e in events] == [pb.OrderReduced]
        for event in events:
            if isinstance(event, pb.TradeExecuted):
                assert not post_only, "a post-only order took liquidity on a replace"
                assert order_id in (event.buy_order_id, event.sell_order_id) and event.maker_order_id != order_id

    @rule(advance=st.integers(0, 3), session=st.sampled_from([False] * 3 + [True]))
    def time_passes(self, advance: int, session: bool) -> None:
        """Expiry runs; now and then the session closes, to open again at the next step."""
        if self.book.closed:
            self.run(pb.OpenSession(instrument_id=INSTRUMENT))
            return
        if session:
            self.run(pb.CloseSession(instrument_id=INSTRUMENT))
            assert not any(o.time_in_force == pb.TIME_IN_FORCE_DAY for o in self.book.orders.resting())
            return
        self.clock += advance
        events = self.run(pb.ExpireOrders(instrument_id=INSTRUMENT, as_of=Timestamp(seconds=self.clock)))
        assert isinstance(events[0], pb.OrdersExpired)
        assert not any(
            o.time_in_force == pb.TIME_IN_FORCE_GTD and o.expire_at <= self.clock * 10**9
            for o in self.book.orders.resting()
        )

    @rule()
    def restart(self) -> None:
        state = self.book.snapshot()
        restored = Book.restore(self.book.stream_id, state)
        restored.version = self.book.version
        assert restored.snapshot() == state
        self.book, self.restored_at = restored, (len(self.journal), state)

    @invariant()
    def never_crossed(self) -> None:
        bid, ask = self.book.orders.best_bid(), self.book.orders.best_ask()
        assert bid is None or ask is None or bid < ask

    @invariant()
    def quantities_are_conserved(self) -> None:
        """accepted = traded + cancelled + reduced + resting, order by order."""
        for order_id, quantity in self.accepted.items():
            order = self.book.orders.get(order_id)
            assert quantity == self.spent[order_id] + (order.remaining if order else 0), order_id

    @invariant()
    def the_journal_rebuilds_the_book(self) -> None:
        folded = Book.empty(INSTRUMENT)
        folded.mutate(self.journal)
        length, state = self.restored_at
        resumed = Book.restore(self.book.stream_id, state)
        resumed.mutate(self.journal[length:])
        assert folded.snapshot() == resumed.snapshot() == self.book.snapshot()
        assert folded.sequence == self.book.sequence == len(self.commands)

    def teardown(self) -> None:
        """Deciding the same commands again gives the same journal, byte for byte."""
        fresh, journal = Book.empty(INSTRUMENT), []
        for command in self.commands:
            events = fresh.decide(command, INSTRUMENTS[INSTRUMENT])
            fresh.mutate(events)
            journal += events
        assert journal_bytes(journal) == journal_bytes(self.journal)


TestEngineMachine = EngineMachine.TestCase
TestEngineMachine.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
