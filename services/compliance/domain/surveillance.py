"""Market surveillance: trades that look like wash trading, flagged for the regulators of
both accounts' parties (DOMAIN.md §6; issue "Compliance", surveillance).

- SELF_TRADE: one account on both sides (the engine's self-trade prevention should stop
  it: an alert means it did not);
- ROUND_TRIP: the two accounts traded the instrument the other way within the window
  (units and cash back where they were, a price and volume printed);
- SAME_BROKER_CROSS: one broker on both sides, two of its clients crossing (legitimate
  for an agency broker, but a regulator reviews them).

The aggregate is an instrument's watch (stream "watch-<instrument>"): its recent trades,
at most `KEEP` and none older than `WINDOW`, so a decision reads a bounded state. Pure."""

from __future__ import annotations

from collections import deque
from datetime import timedelta
from typing import Self

from google.protobuf.message import Message

from services.common.aggregate import Aggregate
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb

WINDOW = timedelta(hours=24)
KEEP = 1_000


class Watch(Aggregate):
    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.recent: deque[cpb.TradeWatched] = deque()

    def apply(self, event: Message) -> None:
        if isinstance(event, cpb.TradeWatched):
            self.recent.append(event)
            horizon = event.at_micros - WINDOW // timedelta(microseconds=1)
            while self.recent and (len(self.recent) > KEEP or self.recent[0].at_micros < horizon):
                self.recent.popleft()

    def snapshot(self) -> bytes:
        return cpb.WatchSnapshot(recent=list(self.recent)).SerializeToString(deterministic=True)

    @classmethod
    def restore(cls, stream_id: str, state: bytes) -> Self:
        watch = cls(stream_id)
        watch.recent = deque(cpb.WatchSnapshot.FromString(state).recent)
        return watch

    def watch(self, trade: mpb.TradeExecuted, at_micros: int) -> list[Message]:
        """The trade remembered, and the alerts it raises."""
        alerts: list[Message] = []
        if trade.buyer_account_id == trade.seller_account_id:
            alerts.append(_alert("SELF_TRADE", trade, f"account {trade.buyer_account_id} on both sides"))
        else:
            if (earlier := self._reversed(trade, at_micros)) is not None:
                detail = f"reverses trade {earlier.trade_id} within {WINDOW}"
                alerts.append(_alert("ROUND_TRIP", trade, detail, earlier.trade_id))
            if trade.buyer_broker_id and trade.buyer_broker_id == trade.seller_broker_id:
                alerts.append(_alert("SAME_BROKER_CROSS", trade, f"broker {trade.buyer_broker_id} on both sides"))
        watched = cpb.TradeWatched(
            trade_id=trade.trade_id,
            buyer_account_id=trade.buyer_account_id,
            seller_account_id=trade.seller_account_id,
            at_micros=at_micros,
        )
        return [watched, *alerts]

    def _reversed(self, trade: mpb.TradeExecuted, at_micros: int) -> cpb.TradeWatched | None:
        """The latest trade within the window the other way between the same accounts."""
        horizon = at_micros - WINDOW // timedelta(microseconds=1)
        for earlier in reversed(self.recent):
            if earlier.at_micros < horizon:
                return None
            if (earlier.buyer_account_id, earlier.seller_account_id) == (
                trade.seller_account_id,
                trade.buyer_account_id,
            ):
                return earlier
        return None


def _alert(kind: str, trade: mpb.TradeExecuted, detail: str, *earlier: str) -> cpb.SurveillanceAlert:
    return cpb.SurveillanceAlert(
        alert_id=f"{kind}:{trade.trade_id}",
        kind=kind,
        instrument_id=trade.instrument_id,
        trade_ids=[trade.trade_id, *earlier],
        buyer_account_id=trade.buyer_account_id,
        seller_account_id=trade.seller_account_id,
        buyer_broker_id=trade.buyer_broker_id,
        seller_broker_id=trade.seller_broker_id,
        detail=detail,
    )
