"""Market surveillance in compliance's pure core: a self-trade, a round trip within the
window and a broker on both sides raise alerts; an old trade is forgotten; a snapshot
keeps the window."""

from __future__ import annotations

from datetime import timedelta

from services.compliance.domain.surveillance import KEEP, WINDOW, Watch
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb

HOUR = timedelta(hours=1) // timedelta(microseconds=1)


def trade(
    trade_id: str, buyer: str, seller: str, buyer_broker: str = "B-1", seller_broker: str = "B-2"
) -> mpb.TradeExecuted:
    return mpb.TradeExecuted(
        trade_id=trade_id,
        instrument_id="JCM-TH-2024-NDC",
        buyer_account_id=buyer,
        seller_account_id=seller,
        buyer_broker_id=buyer_broker,
        seller_broker_id=seller_broker,
    )


def alerts(watch: Watch, executed: mpb.TradeExecuted, at: int) -> list[str]:
    events = watch.watch(executed, at)
    watch.mutate(events)
    assert isinstance(events[0], cpb.TradeWatched)
    return [e.alert_id for e in events[1:] if isinstance(e, cpb.SurveillanceAlert)]


def test_a_round_trip_within_the_window_is_flagged() -> None:
    watch = Watch("watch-JCM")
    assert alerts(watch, trade("T1", "CH-A", "TH-B"), 0) == []
    assert alerts(watch, trade("T2", "SG-C", "TH-B"), HOUR) == []  # another pair
    assert alerts(watch, trade("T3", "TH-B", "CH-A"), 2 * HOUR) == ["ROUND_TRIP:T3"]
    # Every reverse of a trade still in the window is flagged; one after the window is not.
    assert alerts(watch, trade("T4", "TH-B", "CH-A"), 3 * HOUR) == ["ROUND_TRIP:T4"]
    later = 3 * HOUR + WINDOW // timedelta(microseconds=1) + 1
    assert alerts(watch, trade("T5", "CH-A", "TH-B"), later) == []


def test_self_trades_and_one_broker_on_both_sides_are_flagged() -> None:
    watch = Watch("watch-JCM")
    assert alerts(watch, trade("T1", "TH-B", "TH-B"), 0) == ["SELF_TRADE:T1"]
    assert alerts(watch, trade("T2", "CH-A", "TH-B", "B-1", "B-1"), 1) == ["SAME_BROKER_CROSS:T2"]


def test_the_window_is_bounded_and_survives_a_snapshot() -> None:
    watch = Watch("watch-JCM")
    for n in range(KEEP + 5):
        alerts(watch, trade(f"T{n}", f"CH-{n}", "TH-B"), n)
    assert len(watch.recent) == KEEP and watch.recent[0].trade_id == "T5"
    restored = Watch.restore(watch.stream_id, watch.snapshot())
    assert restored.snapshot() == watch.snapshot()


def test_units_going_round_three_accounts_are_a_circular_trade() -> None:
    watch = Watch("watch-JCM")
    assert alerts(watch, trade("T1", "CH-B", "TH-A"), 0) == []  # A sells to B
    assert alerts(watch, trade("T2", "SG-X", "JP-Q"), 1) == []  # unrelated
    assert alerts(watch, trade("T3", "SG-C", "CH-B"), HOUR) == []  # B to C
    events = watch.watch(trade("T4", "TH-A", "SG-C"), 2 * HOUR)  # C back to A
    [circle] = [e for e in events if isinstance(e, cpb.SurveillanceAlert)]
    assert (circle.alert_id, list(circle.trade_ids)) == ("CIRCULAR_TRADE:T4", ["T4", "T1", "T3"])
    assert circle.detail.startswith("units went TH-A -> CH-B -> SG-C -> TH-A")
    # A chain whose links go back in time is no circle: C's sale came before B had the units.
    later = Watch("watch-JCM")
    alerts(later, trade("T1", "SG-C", "CH-B"), 0)  # B to C first
    alerts(later, trade("T2", "CH-B", "TH-A"), HOUR)  # then A to B
    assert alerts(later, trade("T3", "TH-A", "SG-C"), 2 * HOUR) == []


def cancel(order_id: str, account: str, side: mpb.Side.ValueType, remaining: int) -> mpb.OrderCancelled:
    return mpb.OrderCancelled(
        order_id=order_id,
        instrument_id="JCM-TH-2024-NDC",
        account_id=account,
        side=side,
        remaining_quantity=remaining,
        reason=mpb.CANCEL_REASON_BROKER,
    )


def cancelled(watch: Watch, order: mpb.OrderCancelled, at: int) -> list[str]:
    events = watch.cancelled(order, at)
    watch.mutate(events)
    return [e.alert_id for e in events if isinstance(e, cpb.SurveillanceAlert)]


MINUTE = HOUR // 60


def test_large_orders_cancelled_around_a_trade_the_other_way_are_layering() -> None:
    watch = Watch("watch-JCM")
    # Large sells from CH-A rest, and are cancelled once it bought: alerted at the cancel.
    assert alerts(watch, trade("T1", "CH-A", "TH-B"), 0) == []
    assert cancelled(watch, cancel("O-1", "CH-A", mpb.SELL, 5_000), 2 * MINUTE) == ["LAYERING:O-1"]
    assert cancelled(watch, cancel("O-2", "CH-A", mpb.BUY, 5_000), 3 * MINUTE) == []  # its own side
    assert cancelled(watch, cancel("O-3", "CH-A", mpb.SELL, 999), 3 * MINUTE) == []  # not large
    # Cancelled first, then it buys: alerted at the trade, naming the orders.
    events = watch.watch(trade("T2", "CH-A", "SG-C"), 4 * MINUTE)
    [layering] = [e for e in events if isinstance(e, cpb.SurveillanceAlert)]
    assert (layering.alert_id, list(layering.order_ids)) == ("LAYERING:T2:CH-A", ["O-1"])
    # Beyond the window, or the engine's own cancellation: nothing.
    assert alerts(watch, trade("T3", "CH-A", "SG-C"), 60 * MINUTE) == []
    ioc = cancel("O-4", "CH-A", mpb.SELL, 5_000)
    ioc.reason = mpb.CANCEL_REASON_IOC_REMAINDER
    assert cancelled(watch, ioc, 61 * MINUTE) == []
    restored = Watch.restore(watch.stream_id, watch.snapshot())
    assert restored.snapshot() == watch.snapshot()
