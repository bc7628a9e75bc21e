"""The Book aggregate: deciding without mutating, snapshots, restarts, hostile commands."""

from __future__ import annotations

from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pydantic import TypeAdapter, ValidationError

from services.common.inputs import INT64_MAX, Identifier, is_identifier
from services.matching.domain.engine import Book
from services.matching.domain.instruments import load
from tonne.v1 import matching_pb2 as pb

INSTRUMENT = "JCM-TH-2024-NDC"
INSTRUMENTS = load()
BROKERS = ("broker-a", "broker-b")


def order(
    order_id: str, side: pb.Side.ValueType, price: int, quantity: int, broker: str = "broker-a"
) -> pb.SubmitOrder:
    return pb.SubmitOrder(
        order_id=order_id,
        instrument_id=INSTRUMENT,
        broker_id=broker,
        account_id=f"acct-{order_id}",
        side=side,
        price=price,
        quantity=quantity,
        client_order_id=order_id,
    )


def decide(book: Book, command: pb.SubmitOrder | pb.CancelOrder) -> list[Message]:
    if isinstance(command, pb.SubmitOrder):
        return book.submit(command, INSTRUMENTS.get(command.instrument_id))
    return book.cancel(command)


def journal_bytes(events: list[Message]) -> list[bytes]:
    return [e.DESCRIPTOR.full_name.encode() + b":" + e.SerializeToString(deterministic=True) for e in events]


class BookMachine(RuleBasedStateMachine):
    """Submits and cancels interleaved with restarts (snapshot, then restore plus tail)."""

    def __init__(self) -> None:
        super().__init__()
        self.book = Book.empty(INSTRUMENT)
        self.commands: list[pb.SubmitOrder | pb.CancelOrder] = []
        self.journal: list[Message] = []
        self.snapshot: tuple[int, bytes] = (0, Book.empty(INSTRUMENT).snapshot())  # (version, bytes)
        self.submitted = 0

    def run(self, command: pb.SubmitOrder | pb.CancelOrder) -> list[Message]:
        before = self.book.snapshot()
        events = decide(self.book, command)
        assert self.book.snapshot() == before, "deciding must not change the book"
        self.book.mutate(events)
        self.commands.append(command)
        self.journal += events
        return events

    @rule(
        side=st.sampled_from([pb.BUY, pb.SELL]),
        price=st.integers(990, 1010),
        quantity=st.integers(1, 40),
        broker=st.sampled_from(BROKERS),
    )
    def submit(self, side: pb.Side.ValueType, price: int, quantity: int, broker: str) -> None:
        self.submitted += 1
        events = self.run(order(f"o{self.submitted}", side, price, quantity, broker))
        assert isinstance(events[0], pb.OrderAccepted) and events[0].engine_sequence == self.book.sequence
        trades = [e for e in events if isinstance(e, pb.TradeExecuted)]
        assert [t.trade_id for t in trades] == [
            f"{INSTRUMENT}:{self.book.sequence}:{n}" for n in range(1, len(trades) + 1)
        ]

    @precondition(lambda self: any(True for _ in self.book.orders.resting()))
    @rule(data=st.data(), same_broker=st.booleans())
    def cancel(self, data: st.DataObject, same_broker: bool) -> None:
        target = data.draw(st.sampled_from(list(self.book.orders.resting())))
        broker = target.broker_id if same_broker else next(b for b in BROKERS if b != target.broker_id)
        remaining = target.remaining  # the fold marks the order object when it leaves
        [event] = self.run(pb.CancelOrder(order_id=target.order_id, instrument_id=INSTRUMENT, broker_id=broker))
        if same_broker:
            assert isinstance(event, pb.OrderCancelled) and event.remaining_quantity == remaining
            assert event.reason == pb.CANCEL_REASON_BROKER
        else:
            assert isinstance(event, pb.OrderRejected) and event.code == "ORDER_NOT_OWNED"

    @precondition(lambda self: any(True for _ in self.book.orders.resting()))
    @rule(data=st.data())
    def reuse_a_resting_id(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from(list(self.book.orders.resting())))
        [event] = self.run(order(target.order_id, pb.BUY, 1000, 1))
        assert isinstance(event, pb.OrderRejected) and event.code == "SEQUENCE_DUPLICATE_ID"

    @rule(order_id=st.sampled_from(["gone", "x" * 65, ""]))
    def cancel_what_does_not_rest(self, order_id: str) -> None:
        [event] = self.run(pb.CancelOrder(order_id=order_id, instrument_id=INSTRUMENT, broker_id="broker-a"))
        assert isinstance(event, pb.OrderRejected) and event.code == "ORDER_NOT_RESTING"
        assert len(event.order_id) <= 64

    @rule()
    def restart(self) -> None:
        """Snapshot now, and continue from a book restored from it."""
        state = self.book.snapshot()
        restored = Book.restore(self.book.stream_id, state)
        restored.version = self.book.version
        assert restored.snapshot() == state
        self.book, self.snapshot = restored, (self.book.version, state)

    @invariant()
    def never_crossed(self) -> None:
        bid, ask = self.book.orders.best_bid(), self.book.orders.best_ask()
        assert bid is None or ask is None or bid < ask

    @invariant()
    def snapshot_and_tail_equal_folding_from_zero(self) -> None:
        folded = Book.empty(INSTRUMENT)
        folded.mutate(self.journal)
        version, state = self.snapshot
        resumed = Book.restore(self.book.stream_id, state)
        resumed.mutate(self.journal[version:])
        assert folded.snapshot() == resumed.snapshot() == self.book.snapshot()
        assert folded.sequence == self.book.sequence == len(self.commands)

    @rule()
    def replaying_the_commands_gives_the_same_journal(self) -> None:
        fresh, journal = Book.empty(INSTRUMENT), []
        for command in self.commands:
            events = decide(fresh, command)
            fresh.mutate(events)
            journal += events
        assert journal_bytes(journal) == journal_bytes(self.journal)


TestBookMachine = BookMachine.TestCase
TestBookMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_restore_keeps_time_priority_within_a_price() -> None:
    book = Book.empty(INSTRUMENT)
    for n, (side, price) in enumerate(
        [(pb.SELL, 1010), (pb.SELL, 1005), (pb.SELL, 1005), (pb.BUY, 990), (pb.BUY, 995)]
    ):
        book.mutate(decide(book, order(f"r{n}", side, price, 10)))
    restored = Book.restore(book.stream_id, book.snapshot())
    assert [o.order_id for o in restored.orders.resting()] == ["r4", "r3", "r1", "r2", "r0"]
    assert restored.sequence == 5
    events = decide(restored, order("taker", pb.BUY, 1005, 15))
    assert [(e.sell_order_id, e.quantity) for e in events if isinstance(e, pb.TradeExecuted)] == [("r1", 10), ("r2", 5)]


def test_malformed_ids_from_kafka_are_refused_and_never_echoed() -> None:
    book = Book.empty(INSTRUMENT)
    huge = "a" * 1_000_000
    hostile = order("ok-id", pb.BUY, 1000, 1)
    hostile.account_id = huge
    [event] = decide(book, hostile)
    assert isinstance(event, pb.OrderRejected) and event.code == "ORDER_IDENTIFIER_INVALID"
    assert event.evidence == ["account_id is malformed"] and not event.HasField("order")
    assert event.order_id == "ok-id" and event.engine_sequence == 1
    for field in ("order_id", "broker_id", "client_order_id"):
        bad = order("ok-id", pb.BUY, 1000, 1)
        setattr(bad, field, "nul\x00" if field != "order_id" else huge)
        [event] = decide(book, bad)
        assert isinstance(event, pb.OrderRejected) and event.code == "ORDER_IDENTIFIER_INVALID"
        assert len(event.SerializeToString()) < 1000  # nothing oversize goes on to the journal
    foreign = order("ok-id", pb.BUY, 1000, 1)
    foreign.instrument_id = huge
    [event] = decide(book, foreign)
    assert isinstance(event, pb.OrderRejected) and event.code == "INSTRUMENT_UNKNOWN" and event.instrument_id == ""
    assert huge not in event.reason


def test_a_notional_beyond_int64_is_refused() -> None:
    book = Book.empty(INSTRUMENT)
    [event] = decide(book, order("big", pb.BUY, 100_000, INT64_MAX // 100_000 + 1))
    assert isinstance(event, pb.OrderRejected) and event.code == "ORDER_NOTIONAL_TOO_LARGE"
    assert event.HasField("order")  # the order fits the tables; only its product does not
    [event] = decide(book, order("huge", pb.BUY, 1000, 2**64 - 1))
    assert isinstance(event, pb.OrderRejected) and event.code == "ORDER_NOTIONAL_TOO_LARGE"
    assert not event.HasField("order")  # quantity beyond a bigint is not stored
    [event] = decide(book, order("fits", pb.BUY, 100_000, INT64_MAX // 100_000))
    assert isinstance(event, pb.OrderAccepted)


def test_every_input_takes_one_engine_sequence() -> None:
    book = Book.empty(INSTRUMENT)
    inputs: list[pb.SubmitOrder | pb.CancelOrder] = [
        order("a", pb.SELL, 1000, 5),
        order("b", pb.BUY, 1, 5),  # refused: out of band
        pb.CancelOrder(order_id="a", instrument_id=INSTRUMENT, broker_id="broker-b"),  # refused: not owned
        order("c", pb.BUY, 1000, 2),
        pb.CancelOrder(order_id="a", instrument_id=INSTRUMENT, broker_id="broker-a"),
    ]
    sequences = []
    for command in inputs:
        events = decide(book, command)
        book.mutate(events)
        sequences.append([getattr(e, "engine_sequence") for e in events])  # noqa: B009
    assert sequences == [[1], [2], [3], [4, 4], [5]]
    assert book.sequence == 5 and book.version == 6


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=70), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,70}", fullmatch=True)))
def test_the_core_accepts_exactly_the_identifiers_the_api_accepts(value: str) -> None:
    try:
        TypeAdapter(Identifier).validate_python(value)
        api_accepts = True
    except ValidationError:
        api_accepts = False
    assert is_identifier(value) == api_accepts
