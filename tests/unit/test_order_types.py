"""The engine's order types, protections, replace rule, expiry and sessions, one by one."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.matching.domain.engine import Book, Command
from services.matching.domain.instruments import load
from tonne.v1 import matching_pb2 as pb

INSTRUMENT = "JCM-TH-2024-NDC"
INSTRUMENTS = load()
PROTECTION = INSTRUMENTS[INSTRUMENT].protection_ticks * INSTRUMENTS[INSTRUMENT].tick


def order(order_id: str, side: pb.Side.ValueType, price: int, quantity: int, **fields: Any) -> pb.SubmitOrder:
    values: dict[str, Any] = {"broker_id": "broker-a", "account_id": f"acct-{order_id}"} | fields
    return pb.SubmitOrder(
        order_id=order_id, instrument_id=INSTRUMENT, side=side, price=price, quantity=quantity, **values
    )


def run(book: Book, command: Command) -> list[Message]:
    before = book.snapshot()
    events = book.decide(command, INSTRUMENTS.get(command.instrument_id))
    assert book.snapshot() == before, "deciding changes nothing"
    book.mutate(events)
    return events


def book_with(*orders: pb.SubmitOrder) -> Book:
    book = Book.empty(INSTRUMENT)
    for o in orders:
        [accepted] = run(book, o)
        assert isinstance(accepted, pb.OrderAccepted)
    return book


def trades(events: list[Message]) -> list[tuple[str, str, int, int]]:
    """(maker, taker side's order, price, quantity) of each trade."""
    return [
        (
            e.maker_order_id,
            e.buy_order_id if e.maker_order_id == e.sell_order_id else e.sell_order_id,
            e.price,
            e.quantity,
        )
        for e in events
        if isinstance(e, pb.TradeExecuted)
    ]


def cancels(events: list[Message]) -> list[tuple[str, int, pb.CancelReason.ValueType]]:
    return [(e.order_id, e.remaining_quantity, e.reason) for e in events if isinstance(e, pb.OrderCancelled)]


def reductions(events: list[Message]) -> list[tuple[str, int, int, pb.CancelReason.ValueType]]:
    return [(e.order_id, e.quantity, e.remaining_quantity, e.reason) for e in events if isinstance(e, pb.OrderReduced)]


def refused(events: list[Message]) -> str:
    [event] = events
    assert isinstance(event, pb.OrderRejected)
    return event.code


def resting(book: Book) -> list[tuple[str, int, int]]:
    return [(o.order_id, o.price, o.remaining) for o in book.orders.resting()]


def at(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


# --- maker and taker ---


def test_every_trade_names_its_maker_and_aggressor() -> None:
    book = book_with(order("s1", pb.SELL, 1000, 5))
    [accepted, trade] = run(book, order("b1", pb.BUY, 1000, 5))
    assert isinstance(accepted, pb.OrderAccepted) and accepted.resting_quantity == 0
    assert isinstance(trade, pb.TradeExecuted)
    assert (trade.maker_order_id, trade.aggressor, trade.sell_order_id, trade.buy_order_id) == (
        "s1",
        pb.BUY,
        "s1",
        "b1",
    )


# --- market orders ---


def test_a_market_buy_is_a_limit_at_best_ask_plus_protection_and_never_rests() -> None:
    book = book_with(
        order("s1", pb.SELL, 1000, 5),
        order("s2", pb.SELL, 1000 + PROTECTION, 5),
        order("s3", pb.SELL, 1000 + PROTECTION + 1, 5),
    )
    events = run(book, order("m", pb.BUY, 0, 20, order_type=pb.ORDER_TYPE_MARKET))
    assert trades(events) == [("s1", "m", 1000, 5), ("s2", "m", 1000 + PROTECTION, 5)]
    assert cancels(events) == [("m", 10, pb.CANCEL_REASON_MARKET_REMAINDER)]
    assert resting(book) == [("s3", 1000 + PROTECTION + 1, 5)]


def test_a_market_sell_reaches_down_to_best_bid_minus_protection() -> None:
    book = book_with(order("b1", pb.BUY, 2000, 5), order("b2", pb.BUY, 2000 - PROTECTION - 1, 5))
    events = run(book, order("m", pb.SELL, 0, 5, order_type=pb.ORDER_TYPE_MARKET))
    assert trades(events) == [("b1", "m", 2000, 5)] and cancels(events) == []
    assert resting(book) == [("b2", 2000 - PROTECTION - 1, 5)]


def test_market_orders_are_refused_without_liquidity_with_a_price_or_to_rest() -> None:
    book = book_with(order("b1", pb.BUY, 1000, 5))
    assert refused(run(book, order("m1", pb.BUY, 0, 5, order_type=pb.ORDER_TYPE_MARKET))) == "MARKET_NO_LIQUIDITY"
    assert refused(run(book, order("m2", pb.SELL, 900, 5, order_type=pb.ORDER_TYPE_MARKET))) == "MARKET_ORDER_PRICED"
    gtc = order("m3", pb.SELL, 0, 5, order_type=pb.ORDER_TYPE_MARKET, time_in_force=pb.TIME_IN_FORCE_GTC)
    assert refused(run(book, gtc)) == "ORDER_TIME_IN_FORCE_INVALID"
    assert resting(book) == [("b1", 1000, 5)]


# --- IOC, FOK, post-only ---


def test_ioc_fills_what_it_can_and_cancels_the_rest() -> None:
    book = book_with(order("s1", pb.SELL, 1000, 5), order("s2", pb.SELL, 1100, 5))
    events = run(book, order("i", pb.BUY, 1000, 8, time_in_force=pb.TIME_IN_FORCE_IOC))
    assert trades(events) == [("s1", "i", 1000, 5)]
    assert cancels(events) == [("i", 3, pb.CANCEL_REASON_IOC_REMAINDER)]
    assert resting(book) == [("s2", 1100, 5)]
    events = run(book, order("j", pb.BUY, 900, 8, time_in_force=pb.TIME_IN_FORCE_IOC))
    assert trades(events) == [] and cancels(events) == [("j", 8, pb.CANCEL_REASON_IOC_REMAINDER)]
    assert book.orders.get("j") is None


def test_fok_fills_whole_or_not_at_all() -> None:
    book = book_with(order("s1", pb.SELL, 1000, 5), order("s2", pb.SELL, 1010, 5))
    before = resting(book)
    events = run(book, order("f1", pb.BUY, 1010, 11, time_in_force=pb.TIME_IN_FORCE_FOK))
    assert trades(events) == [] and cancels(events) == [("f1", 11, pb.CANCEL_REASON_FOK_UNFILLED)]
    assert resting(book) == before
    events = run(book, order("f2", pb.BUY, 1010, 10, time_in_force=pb.TIME_IN_FORCE_FOK))
    assert trades(events) == [("s1", "f2", 1000, 5), ("s2", "f2", 1010, 5)] and cancels(events) == []
    assert resting(book) == []


def test_post_only_never_takes() -> None:
    book = book_with(order("s1", pb.SELL, 1000, 5))
    events = run(book, order("p1", pb.BUY, 1000, 5, post_only=True))
    assert trades(events) == [] and cancels(events) == [("p1", 5, pb.CANCEL_REASON_POST_ONLY_WOULD_TAKE)]
    run(book, order("p2", pb.BUY, 999, 5, post_only=True))
    assert resting(book) == [("p2", 999, 5), ("s1", 1000, 5)]
    ioc = order("p3", pb.BUY, 999, 5, post_only=True, time_in_force=pb.TIME_IN_FORCE_IOC)
    assert refused(run(book, ioc)) == "ORDER_POST_ONLY_INVALID"


def test_unknown_enum_values_are_refused_with_codes() -> None:
    book = Book.empty(INSTRUMENT)
    assert refused(run(book, order("x1", pb.BUY, 1000, 5, order_type=7))) == "ORDER_TYPE_INVALID"
    assert refused(run(book, order("x2", pb.BUY, 1000, 5, time_in_force=9))) == "ORDER_TIME_IN_FORCE_INVALID"
    assert refused(run(book, order("x3", pb.BUY, 1000, 5, self_trade_prevention=9))) == "ORDER_STP_INVALID"
    assert refused(run(book, order("x4", pb.BUY, 1000, 5, stp_scope=9))) == "ORDER_STP_INVALID"
    assert resting(book) == [] and book.sequence == 4


# --- self-trade prevention ---


def self_cross(stp: pb.SelfTradePrevention.ValueType, quantity: int = 5) -> tuple[Book, list[Message]]:
    """An account's buy meets its own resting sell (s1) behind a stranger's (s0)."""
    book = book_with(
        order("s0", pb.SELL, 1000, 2),
        order("s1", pb.SELL, 1000, 4, account_id="acct-me"),
        order("s2", pb.SELL, 1000, 10),
    )
    return book, run(book, order("b", pb.BUY, 1000, quantity, account_id="acct-me", self_trade_prevention=stp))


def test_stp_unset_means_cancel_newest() -> None:
    book, events = self_cross(pb.STP_UNSPECIFIED)
    assert trades(events) == [("s0", "b", 1000, 2)]
    assert cancels(events) == [("b", 3, pb.CANCEL_REASON_SELF_TRADE)]
    assert resting(book) == [("s1", 1000, 4), ("s2", 1000, 10)]


def test_stp_cancel_oldest_removes_the_resting_order_and_goes_on() -> None:
    book, events = self_cross(pb.STP_CANCEL_OLDEST)
    assert cancels(events) == [("s1", 4, pb.CANCEL_REASON_SELF_TRADE)]
    assert trades(events) == [("s0", "b", 1000, 2), ("s2", "b", 1000, 3)]
    assert resting(book) == [("s2", 1000, 7)]


def test_stp_cancel_both() -> None:
    book, events = self_cross(pb.STP_CANCEL_BOTH)
    assert cancels(events) == [("s1", 4, pb.CANCEL_REASON_SELF_TRADE), ("b", 3, pb.CANCEL_REASON_SELF_TRADE)]
    assert resting(book) == [("s2", 1000, 10)]


def test_stp_decrement_reduces_both_without_a_trade() -> None:
    book, events = self_cross(pb.STP_DECREMENT, quantity=8)
    assert reductions(events) == [
        ("s1", 4, 0, pb.CANCEL_REASON_SELF_TRADE),
        ("b", 4, 2, pb.CANCEL_REASON_SELF_TRADE),
    ]
    assert trades(events) == [("s0", "b", 1000, 2), ("s2", "b", 1000, 2)]
    assert resting(book) == [("s2", 1000, 8)]
    # The taker decremented down to a rest: only what is left of it rests.
    book, events = self_cross(pb.STP_DECREMENT, quantity=30)
    assert resting(book) == [("b", 1000, 30 - 2 - 4 - 10)]


def test_a_decremented_taker_that_rests_folds_from_the_journal_alone() -> None:
    """The fold rests what OrderAccepted says; the taker's own OrderReduced must not
    reduce it again."""
    book, journal = Book.empty(INSTRUMENT), []
    for command in (
        order("s1", pb.SELL, 1000, 4, account_id="acct-me"),
        order("s2", pb.SELL, 1000, 3),
        order("b", pb.BUY, 1000, 10, account_id="acct-me", self_trade_prevention=pb.STP_DECREMENT),
    ):
        journal += run(book, command)
    assert resting(book) == [("b", 1000, 3)]
    folded = Book.empty(INSTRUMENT)
    folded.mutate(journal)
    assert folded.snapshot() == book.snapshot()


def test_stp_broker_scope_also_stops_another_account_of_the_same_broker() -> None:
    book = book_with(order("s1", pb.SELL, 1000, 5, broker_id="broker-b"))
    events = run(book, order("b1", pb.BUY, 1000, 5, broker_id="broker-b", stp_scope=pb.STP_SCOPE_BROKER))
    assert trades(events) == [] and cancels(events) == [("b1", 5, pb.CANCEL_REASON_SELF_TRADE)]
    events = run(book, order("b2", pb.BUY, 1000, 5, broker_id="broker-b"))  # account scope: different accounts
    assert trades(events) == [("s1", "b2", 1000, 5)]


# --- cancel/replace ---


def test_replace_to_a_smaller_quantity_keeps_time_priority() -> None:
    book = book_with(order("s1", pb.SELL, 1000, 10), order("s2", pb.SELL, 1000, 10))
    events = run(
        book, pb.ReplaceOrder(order_id="s1", instrument_id=INSTRUMENT, broker_id="broker-a", price=1000, quantity=4)
    )
    assert reductions(events) == [("s1", 6, 4, pb.CANCEL_REASON_REPLACED)]
    assert resting(book) == [("s1", 1000, 4), ("s2", 1000, 10)]


def test_replace_to_a_new_price_loses_priority_and_may_trade_at_once() -> None:
    book = book_with(order("s1", pb.SELL, 1000, 10), order("s2", pb.SELL, 1010, 10), order("b1", pb.BUY, 990, 3))
    events = run(
        book, pb.ReplaceOrder(order_id="s1", instrument_id=INSTRUMENT, broker_id="broker-a", price=1010, quantity=10)
    )
    assert resting(book) == [("b1", 990, 3), ("s2", 1010, 10), ("s1", 1010, 10)]
    events = run(
        book, pb.ReplaceOrder(order_id="s1", instrument_id=INSTRUMENT, broker_id="broker-a", price=990, quantity=8)
    )
    assert reductions(events) == [("s1", 2, 8, pb.CANCEL_REASON_REPLACED)]
    assert trades(events) == [("b1", "s1", 990, 3)]
    replaced = [e for e in events if isinstance(e, pb.OrderReplaced)]
    assert [(e.price, e.quantity, e.resting_quantity) for e in replaced] == [(990, 8, 5)]
    assert resting(book) == [("s1", 990, 5), ("s2", 1010, 10)]


def test_replace_refusals() -> None:
    book = book_with(order("s1", pb.SELL, 1000, 10))

    def replace(price: int, quantity: int, broker: str = "broker-a", order_id: str = "s1") -> str:
        command = pb.ReplaceOrder(
            order_id=order_id, instrument_id=INSTRUMENT, broker_id=broker, price=price, quantity=quantity
        )
        return refused(run(book, command))

    assert replace(1000, 11) == "REPLACE_QUANTITY_INCREASE"
    assert replace(1000, 10) == "REPLACE_UNCHANGED"
    assert replace(1000, 5, broker="broker-b") == "ORDER_NOT_OWNED"
    assert replace(1000, 5, order_id="gone") == "ORDER_NOT_RESTING"
    assert replace(1000, 0) == "ORDER_QUANTITY_INVALID"
    assert replace(1, 5) == "ORDER_PRICE_OUT_OF_BAND"
    assert resting(book) == [("s1", 1000, 10)] and book.sequence == 7


def test_a_post_only_order_replaced_across_the_spread_is_cancelled() -> None:
    book = book_with(order("s1", pb.SELL, 1000, 5), order("b1", pb.BUY, 990, 5, post_only=True))
    events = run(
        book, pb.ReplaceOrder(order_id="b1", instrument_id=INSTRUMENT, broker_id="broker-a", price=1000, quantity=5)
    )
    assert trades(events) == [] and cancels(events) == [("b1", 5, pb.CANCEL_REASON_POST_ONLY_WOULD_TAKE)]
    assert resting(book) == [("s1", 1000, 5)]


# --- time and sessions ---


def test_gtd_orders_expire_when_time_says_so() -> None:
    gtd = {"time_in_force": pb.TIME_IN_FORCE_GTD}
    book = book_with(
        order("g1", pb.BUY, 1000, 5, expire_at=at(100), **gtd),
        order("g2", pb.BUY, 1000, 5, expire_at=at(200), **gtd),
        order("c1", pb.BUY, 1000, 5),
    )
    expire = pb.ExpireOrders(instrument_id=INSTRUMENT, as_of=at(100))
    events = run(book, expire)
    assert isinstance(events[0], pb.OrdersExpired) and cancels(events) == [("g1", 5, pb.CANCEL_REASON_EXPIRED)]
    assert resting(book) == [("g2", 1000, 5), ("c1", 1000, 5)]
    assert refused(run(book, pb.ExpireOrders(instrument_id=INSTRUMENT, as_of=at(99)))) == "EXPIRY_TIME_BEHIND"
    assert refused(run(book, pb.ExpireOrders(instrument_id=INSTRUMENT))) == "EXPIRY_TIME_INVALID"
    stale = order("g3", pb.BUY, 1000, 5, expire_at=at(100), **gtd)
    assert refused(run(book, stale)) == "ORDER_EXPIRY_PASSED"
    assert refused(run(book, order("g4", pb.BUY, 1000, 5, **gtd))) == "ORDER_EXPIRY_INVALID"
    assert refused(run(book, order("g5", pb.BUY, 1000, 5, expire_at=at(500)))) == "ORDER_EXPIRY_INVALID"
    bad = order("g6", pb.BUY, 1000, 5, expire_at=Timestamp(seconds=500, nanos=-1), **gtd)
    assert refused(run(book, bad)) == "ORDER_EXPIRY_INVALID"
    restored = Book.restore(book.stream_id, book.snapshot())
    assert restored.as_of == book.as_of and restored.snapshot() == book.snapshot()
    assert cancels(run(restored, pb.ExpireOrders(instrument_id=INSTRUMENT, as_of=at(200)))) == [
        ("g2", 5, pb.CANCEL_REASON_EXPIRED)
    ]


def test_closing_the_session_cancels_day_orders_and_refuses_new_ones() -> None:
    book = book_with(
        order("d1", pb.SELL, 1000, 5, time_in_force=pb.TIME_IN_FORCE_DAY),
        order("c1", pb.SELL, 1010, 5),
    )
    events = run(book, pb.CloseSession(instrument_id=INSTRUMENT))
    assert isinstance(events[0], pb.SessionClosed) and cancels(events) == [("d1", 5, pb.CANCEL_REASON_SESSION_CLOSED)]
    assert refused(run(book, order("n1", pb.BUY, 1000, 5))) == "MARKET_CLOSED"
    replace = pb.ReplaceOrder(order_id="c1", instrument_id=INSTRUMENT, broker_id="broker-a", price=1010, quantity=1)
    assert refused(run(book, replace)) == "MARKET_CLOSED"
    assert refused(run(book, pb.CloseSession(instrument_id=INSTRUMENT))) == "SESSION_ALREADY_CLOSED"
    assert Book.restore(book.stream_id, book.snapshot()).closed
    [cancelled] = run(book, pb.CancelOrder(order_id="c1", instrument_id=INSTRUMENT, broker_id="broker-a"))
    assert isinstance(cancelled, pb.OrderCancelled) and cancelled.reason == pb.CANCEL_REASON_BROKER
    [opened] = run(book, pb.OpenSession(instrument_id=INSTRUMENT))
    assert isinstance(opened, pb.SessionOpened)
    assert refused(run(book, pb.OpenSession(instrument_id=INSTRUMENT))) == "SESSION_ALREADY_OPEN"
    assert isinstance(run(book, order("n2", pb.BUY, 1000, 5))[0], pb.OrderAccepted)


def test_time_and_session_inputs_for_another_instrument_are_refused() -> None:
    book = Book.empty(INSTRUMENT)
    for command in (
        pb.CloseSession(instrument_id="CCER-2025"),
        pb.OpenSession(instrument_id="CCER-2025"),
        pb.ExpireOrders(instrument_id="CCER-2025", as_of=at(1)),
    ):
        assert refused(run(book, command)) == "INSTRUMENT_UNKNOWN"


# --- journals written before order types ---


def test_a_journal_without_resting_quantities_or_makers_folds_as_before() -> None:
    """Older OrderAccepted events carry no resting_quantity, trades no maker: the taker
    rests whole and each trade reduces both sides."""
    legacy: list[Message] = [
        pb.OrderAccepted(order=order("s1", pb.SELL, 1000, 5), engine_sequence=1),
        pb.OrderAccepted(order=order("b1", pb.BUY, 1000, 8), engine_sequence=2),
        pb.TradeExecuted(buy_order_id="b1", sell_order_id="s1", quantity=5, price=1000, engine_sequence=2),
        pb.OrderCancelled(order_id="b1", remaining_quantity=3, engine_sequence=3),
    ]
    book = Book.empty(INSTRUMENT)
    book.mutate(legacy[:3])
    assert resting(book) == [("b1", 1000, 3)]
    book.mutate(legacy[3:])
    assert resting(book) == [] and book.sequence == 3
