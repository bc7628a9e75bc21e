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
