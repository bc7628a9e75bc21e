from __future__ import annotations

from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from services.matching.domain.book import BUY, SELL, Order, OrderBook
from services.matching.domain.engine import Book
from services.matching.domain.instruments import load
from tonne.v1 import matching_pb2 as pb

INSTRUMENT = "JCM-TH-2024-NDC"
INSTRUMENTS = load()


def order(order_id: str, side: pb.Side.ValueType, price: int, quantity: int) -> pb.SubmitOrder:
    return pb.SubmitOrder(
        order_id=order_id,
        instrument_id=INSTRUMENT,
        broker_id="broker-a",
        account_id=f"acct-{order_id}",
        side=side,
        price=price,
        quantity=quantity,
        client_order_id=order_id,
    )


def run(book: Book, command: pb.SubmitOrder | pb.CancelOrder) -> list[Message]:
    if isinstance(command, pb.SubmitOrder):
        events = book.submit(command, INSTRUMENTS.get(command.instrument_id))
    else:
        events = book.cancel(command)
    book.mutate(events)
    return events


def test_price_time_priority_and_maker_price() -> None:
    book = Book.empty(INSTRUMENT)
    run(book, order("s1", pb.SELL, 1500, 10))
    run(book, order("s2", pb.SELL, 1400, 10))
    run(book, order("s3", pb.SELL, 1400, 10))
    events = run(book, order("b1", pb.BUY, 1500, 25))
    trades = [e for e in events if isinstance(e, pb.TradeExecuted)]
    assert [(t.sell_order_id, t.price, t.quantity) for t in trades] == [
        ("s2", 1400, 10),
        ("s3", 1400, 10),
        ("s1", 1500, 5),
    ]
    assert [t.trade_id for t in trades] == [f"{INSTRUMENT}:4:1", f"{INSTRUMENT}:4:2", f"{INSTRUMENT}:4:3"]
    assert book.orders.depth() == {"bids": [], "asks": [(1500, 5)]}


def test_invalid_orders_are_rejected_with_codes() -> None:
    book = Book.empty(INSTRUMENT)
    cases = {
        "ORDER_PRICE_OUT_OF_BAND": order("x1", pb.BUY, 1, 10),
        "ORDER_QUANTITY_INVALID": order("x2", pb.BUY, 1500, 0),
        "ORDER_SIDE_INVALID": order("x3", pb.SIDE_UNSPECIFIED, 1500, 1),
    }
    for code, command in cases.items():
        [event] = run(book, command)
        assert isinstance(event, pb.OrderRejected) and event.code == code
    unknown = pb.SubmitOrder(order_id="x4", instrument_id="NOPE", side=pb.BUY, price=1, quantity=1)
    [event] = run(Book.empty("NOPE"), unknown)
    assert isinstance(event, pb.OrderRejected) and event.code == "INSTRUMENT_UNKNOWN"
    assert book.orders.depth() == {"bids": [], "asks": []}


def test_cancel_is_only_for_the_owner_and_resting_orders() -> None:
    book = Book.empty(INSTRUMENT)
    run(book, order("b1", pb.BUY, 1000, 5))
    [refused] = run(book, pb.CancelOrder(order_id="b1", instrument_id=INSTRUMENT, broker_id="broker-b"))
    assert isinstance(refused, pb.OrderRejected) and refused.code == "ORDER_NOT_OWNED"
    [cancelled] = run(book, pb.CancelOrder(order_id="b1", instrument_id=INSTRUMENT, broker_id="broker-a"))
    assert isinstance(cancelled, pb.OrderCancelled) and cancelled.remaining_quantity == 5
    assert book.orders.best_bid() is None


orders = st.lists(
    st.tuples(st.sampled_from([pb.BUY, pb.SELL]), st.integers(980, 1020), st.integers(1, 50)), max_size=60
)


@settings(max_examples=60)
@given(orders)
def test_replaying_the_journal_rebuilds_the_same_book(flow: list[tuple[pb.Side.ValueType, int, int]]) -> None:
    live, journal = Book.empty(INSTRUMENT), []
    for n, (side, price, quantity) in enumerate(flow):
        journal += run(live, order(f"o{n}", side, price, quantity))
    replayed = Book.empty(INSTRUMENT)
    replayed.mutate(journal)
    assert replayed.orders.depth() == live.orders.depth()
    assert replayed.sequence == live.sequence == len(flow)
    # The book never rests crossed, and every trade is conserved on both sides.
    book = live.orders
    bid, ask = book.best_bid(), book.best_ask()
    assert bid is None or ask is None or bid < ask
    traded = sum(e.quantity for e in journal if isinstance(e, pb.TradeExecuted))
    resting = sum(q for _, q in book.depth()["bids"]) + sum(q for _, q in book.depth()["asks"])
    assert traded * 2 + resting == sum(q for _, _, q in flow)


def test_order_book_removes_from_the_middle_of_a_level_and_keeps_time_order() -> None:
    book = OrderBook()
    for order_id, side, price in [("a", SELL, 100), ("b", SELL, 100), ("c", SELL, 100), ("d", BUY, 90)]:
        book.rest(Order(order_id, side, price, 5))
    assert book.cancel("b") is not None and book.cancel("b") is None
    book.reduce("a", 5)  # filled: the dead "b" behind it is skipped too
    assert [o.order_id for o in book.resting()] == ["d", "c"]
    assert book.depth() == {"bids": [(90, 5)], "asks": [(100, 5)]}
    book.cancel("c")
    assert book.best_ask() is None and book.best_bid() == 90 and len(book) == 1
