"""Market data folded from the engine journal: the checksum rule, diffs that rebuild the
book exactly, the client's gap rule, each broker's order changes, and the bar rules."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from services.matching.bars import bar_starts, vwap
from services.matching.domain.engine import Book, Command
from services.matching.domain.instruments import load
from services.matching.marketdata import ClientBook, Follower, Resnapshot, Snapshot, checksum
from tonne.v1 import matching_pb2 as pb

INSTRUMENT = "JCM-TH-2024-NDC"
INSTRUMENTS = load()
TIME = "2026-01-01T00:00:00Z"


def test_the_checksum_is_kraken_s_over_the_top_ten_asks_then_bids() -> None:
    # Asks lowest first, then bids highest first, each level as price digits then quantity digits.
    assert checksum([(1000, 1), (1001, 2)], [(999, 10)]) == zlib.crc32(b"100011001299910")
    assert checksum([], []) == 0
    # Only the top 10 of each side count.
    asks = [(1000 + n, n + 1) for n in range(12)]
    bids = [(999 - n, 10 * (n + 1)) for n in range(12)]
    assert checksum(asks, bids) == checksum(asks[:10], bids[:10]) != checksum(asks[:9], bids[:10])
    # The order of the sides and of the levels is part of the rule.
    assert checksum(bids, asks) != checksum(asks, bids)
    assert checksum(asks[::-1], bids) != checksum(asks, bids)


def replayed(events: list[Message]) -> list[Message]:
    """The events as a reader of the store gets them: parsed from their bytes."""
    return [type(e).FromString(e.SerializeToString()) for e in events]


class Engine:
    """An instrument's engine: decides each command and folds what it decided."""

    def __init__(self) -> None:
        self.book = Book.empty(INSTRUMENT)
        self.orders = 0
        self.resting: list[tuple[str, str]] = []  # (order id, broker id) as placed

    def run(self, command: Command) -> list[Message]:
        events = self.book.decide(command, INSTRUMENTS[INSTRUMENT])
        self.book.mutate(events)
        return events


def command(engine: Engine, draw: Any) -> Command:
    """One engine input of any kind, drawn by Hypothesis."""
    kind = draw(st.sampled_from(["limit"] * 6 + ["market", "ioc", "post", "cancel", "replace", "expire", "close"]))
    book = engine.book
    resting = [o for o in book.orders.resting()]
    if kind == "cancel" and resting:
        order = draw(st.sampled_from(resting))
        return pb.CancelOrder(order_id=order.order_id, instrument_id=INSTRUMENT, broker_id=order.broker_id)
    if kind == "replace" and resting:
        order = draw(st.sampled_from(resting))
        return pb.ReplaceOrder(
            order_id=order.order_id,
            instrument_id=INSTRUMENT,
            broker_id=order.broker_id,
            price=draw(st.integers(990, 1010)),
            quantity=draw(st.integers(1, order.remaining)),
        )
    if kind == "expire":
        return pb.ExpireOrders(instrument_id=INSTRUMENT, as_of=Timestamp(seconds=draw(st.integers(0, 30))))
    if kind == "close":
        return pb.OpenSession(instrument_id=INSTRUMENT) if book.closed else pb.CloseSession(instrument_id=INSTRUMENT)
    engine.orders += 1
    broker = draw(st.sampled_from(["broker-a", "broker-b"]))
    order = pb.SubmitOrder(
        order_id=f"o{engine.orders}",
        instrument_id=INSTRUMENT,
        broker_id=broker,
        account_id=draw(st.sampled_from(["acct-1", "acct-2", "acct-3"])),
        side=draw(st.sampled_from([pb.BUY, pb.SELL])),
        price=draw(st.integers(990, 1010)),
        quantity=draw(st.integers(1, 30)),
        client_order_id=f"c{engine.orders}",
        self_trade_prevention=draw(st.sampled_from(list(pb.SelfTradePrevention.values()))),
    )
    if kind == "market":
        order.order_type, order.price = pb.ORDER_TYPE_MARKET, 0
        order.time_in_force = pb.TIME_IN_FORCE_IOC
    elif kind == "ioc":
        order.time_in_force = draw(st.sampled_from([pb.TIME_IN_FORCE_IOC, pb.TIME_IN_FORCE_FOK]))
    elif kind == "post":
        order.post_only = True
    elif draw(st.booleans()):
        order.time_in_force = pb.TIME_IN_FORCE_GTD
        order.expire_at.FromSeconds(draw(st.integers(1, 30)))
    return order


def depth_of(book: Book) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    depth = book.orders.depth()
    return depth["bids"], depth["asks"]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), before=st.integers(0, 40), after=st.integers(1, 80))
def test_a_client_following_the_updates_always_holds_the_engine_s_book(
    data: st.DataObject, before: int, after: int
) -> None:
    engine = Engine()
    for _ in range(before):
        engine.run(command(engine, data.draw))
    # The feed starts from the aggregate's snapshot, as a reader restores it.
    follower = Follower(Book.restore(engine.book.stream_id, engine.book.snapshot()))
    client = ClientBook(Snapshot.of(follower.book).message())
    previous_last = client.sequence
    for _ in range(after):
        events = engine.run(command(engine, data.draw))
        folded = follower.fold(replayed(events), TIME)
        assert folded.sequence == engine.book.sequence
        if folded.update is None:
            # Nothing sent: the input changed no level and traded nothing.
            assert client.depth() == depth_of(engine.book)
            assert not any(isinstance(e, pb.TradeExecuted) for e in events)
            continue
        message = folded.update.message()
        assert message["first"] == previous_last + 1, "updates are contiguous"
        assert message["last"] == engine.book.sequence
        assert all(q >= 0 for _, q in message["bids"] + message["asks"])
        assert client.apply(message)  # the checksum is checked here
        previous_last = message["last"]
        assert client.depth() == depth_of(engine.book)
        trades = [e.trade_id for e in events if isinstance(e, pb.TradeExecuted)]
        assert [t["trade_id"] for t in message["trades"]] == trades
    assert client.depth() == depth_of(engine.book)
    assert Snapshot.of(engine.book).checksum == client.checksum()


def test_a_late_snapshot_skips_what_it_holds_and_a_gap_asks_for_a_new_one() -> None:
    engine = Engine()
    follower = Follower(Book.empty(INSTRUMENT))

    def submit(order_id: str, side: pb.Side.ValueType, price: int, quantity: int) -> dict[str, Any] | None:
        order = pb.SubmitOrder(
            order_id=order_id,
            instrument_id=INSTRUMENT,
            broker_id="broker-a",
            account_id=f"acct-{order_id}",
            side=side,
            price=price,
            quantity=quantity,
        )
        update = follower.fold(replayed(engine.run(order)), TIME).update
        return None if update is None else update.message()

    first = submit("s1", pb.SELL, 1000, 5)
    refused = follower.fold(replayed(engine.run(pb.CancelOrder(order_id="nope", instrument_id=INSTRUMENT))), TIME)
    assert refused.update is None and refused.sequence == 2  # a refusal takes a sequence, changes nothing
    late = ClientBook(Snapshot.of(follower.book).message())  # at sequence 2
    second = submit("s2", pb.SELL, 1001, 5)
    assert first is not None and second is not None
    assert (first["first"], first["last"], second["first"], second["last"]) == (1, 1, 2, 3)
    assert not late.apply(first)  # already in the snapshot
    assert late.apply(second)  # first <= 3 <= last
    third = submit("b1", pb.BUY, 1001, 7)
    assert third is not None and third["asks"] == [[1000, 0], [1001, 3]]
    assert [(t["price"], t["quantity"], t["aggressor"]) for t in third["trades"]] == [
        (1000, 5, "BUY"),
        (1001, 2, "BUY"),
    ]
    fresh = ClientBook(Snapshot.of(Book.empty(INSTRUMENT)).message())
    with pytest.raises(Resnapshot, match="gap"):
        fresh.apply(second)  # update 1 was never seen
    corrupt = ClientBook(Snapshot.of(follower.book).message())
    corrupt.asks[1001] = 4
    fourth = submit("s3", pb.SELL, 1002, 1)
    assert fourth is not None
    with pytest.raises(Resnapshot, match="checksum"):
        corrupt.apply(fourth)


def test_each_broker_sees_the_changes_of_its_own_orders() -> None:
    engine = Engine()
    follower = Follower(Book.empty(INSTRUMENT))

    def changes(command: Command) -> list[tuple[str, str, str]]:
        folded = follower.fold(replayed(engine.run(command)), TIME, changes=True)
        return [(c.broker_id, c.message["order_id"], c.message["event"]) for c in folded.changes]

    def order(order_id: str, broker: str, side: pb.Side.ValueType, price: int, quantity: int) -> pb.SubmitOrder:
        return pb.SubmitOrder(
            order_id=order_id,
            instrument_id=INSTRUMENT,
            broker_id=broker,
            account_id=f"acct-{order_id}",
            side=side,
            price=price,
            quantity=quantity,
        )

    assert changes(order("s1", "broker-a", pb.SELL, 1000, 10)) == [("broker-a", "s1", "accepted")]
    ioc = order("b1", "broker-b", pb.BUY, 1000, 15)
    ioc.time_in_force = pb.TIME_IN_FORCE_IOC
    assert changes(ioc) == [
        ("broker-b", "b1", "accepted"),
        ("broker-b", "b1", "fill"),
        ("broker-a", "s1", "fill"),
        ("broker-b", "b1", "cancelled"),  # its remainder never rested: its broker from this input
    ]
    assert changes(order("s2", "broker-a", pb.SELL, 1005, 10)) == [("broker-a", "s2", "accepted")]
    replace = pb.ReplaceOrder(order_id="s2", instrument_id=INSTRUMENT, broker_id="broker-a", price=1006, quantity=4)
    assert changes(replace) == [("broker-a", "s2", "reduced"), ("broker-a", "s2", "replaced")]
    cancel = pb.CancelOrder(order_id="s2", instrument_id=INSTRUMENT, broker_id="broker-a")
    assert changes(cancel) == [("broker-a", "s2", "cancelled")]  # its broker from the book
    stolen = pb.CancelOrder(order_id="s2", instrument_id=INSTRUMENT, broker_id="broker-b")
    assert changes(stolen) == [("broker-b", "s2", "rejected")]  # the asker's refusal, not the owner's
    folded = follower.fold(replayed(engine.run(order("b2", "broker-b", pb.BUY, 999, 1))), TIME, changes=True)
    [accepted] = folded.changes
    assert accepted.message == {
        "type": "order",
        "event": "accepted",
        "order_id": "b2",
        "instrument_id": INSTRUMENT,
        "client_order_id": "",
        "account_id": "acct-b2",
        "side": "BUY",
        "price": 999,
        "quantity": 1,
        "resting_quantity": 1,
        "sequence": 7,
        "time": TIME,
    }


def test_vwap_is_rounded_to_the_nearest_minor_unit_half_up() -> None:
    assert vwap(1000 * 3 + 1001 * 1, 4) == 1000  # 1000.25
    assert vwap(1000 + 1001, 2) == 1001  # 1000.5: a half goes up
    assert vwap(1000 * 1 + 1001 * 3, 4) == 1001  # 1000.75
    assert vwap(0, 0) is None
    assert vwap(9_000_000_000_000_000_000 * 3, 3) == 9_000_000_000_000_000_000  # past int64 sums: exact


@given(trades=st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 10**6)), min_size=1, max_size=50))
def test_vwap_is_between_the_lowest_and_highest_price_and_within_half_a_unit(trades: list[tuple[int, int]]) -> None:
    notional = sum(p * q for p, q in trades)
    volume = sum(q for _, q in trades)
    price = vwap(notional, volume)
    assert price is not None
    assert min(p for p, _ in trades) <= price <= max(p for p, _ in trades)
    assert abs(2 * (price * volume - notional)) <= volume  # |price - exact| <= 1/2


def test_a_trade_falls_in_the_minute_hour_and_utc_day_that_contain_it() -> None:
    at = 1_767_225_600 + 3 * 3600 + 25 * 60 + 7  # 2026-01-01T03:25:07Z
    assert bar_starts(at) == (["1m", "1h", "1d"], [at - 7, at - 25 * 60 - 7, 1_767_225_600])
