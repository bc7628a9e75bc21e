"""Market surveillance: trades and cancellations that look like manipulation, flagged for
the regulators of the accounts' parties (DOMAIN.md §6; issue "Compliance", surveillance).

- SELF_TRADE: one account on both sides (the engine's self-trade prevention should stop
  it: an alert means it did not);
- ROUND_TRIP: the two accounts traded the instrument the other way within the window
  (units and cash back where they were, a price and volume printed);
- CIRCULAR_TRADE: the units went round three or more accounts back to where they started
  within the window (A sells to B, B to C, C to A);
- SAME_BROKER_CROSS: one broker on both sides, two of its clients crossing (legitimate
  for an agency broker, but a regulator reviews them);
- LAYERING: an account's large orders on one side cancelled unfilled within minutes of
  its trading on the other side (the orders moved the price it traded at, never meant to
  fill). Alerted when the second of the two happens, so each pair once.

The aggregate is an instrument's watch (stream "watch-<instrument>"): its recent trades and
large cancellations, at most `KEEP` of each and none older than `WINDOW`, so a decision
reads a bounded state. Pure."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import timedelta
from typing import Self, TypeVar

from google.protobuf.message import Message

from services.common.aggregate import Aggregate
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb

WINDOW = timedelta(hours=24)
KEEP = 1_000
# Layering: a cancellation of at least this many unfilled tonnes is "large", and it counts
# against trades on the other side within this long of it.
LARGE_ORDER = 1_000
LAYERING_WINDOW = timedelta(minutes=5)
# A circle of at most this many trades is looked for (beyond, the pattern is too diffuse).
CIRCLE_MAX = 5
PATHS_MAX = 100  # partial circles followed at once: bounds the work one trade costs
_MICROS = timedelta(microseconds=1)


class Watch(Aggregate):
    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.recent: deque[cpb.TradeWatched] = deque()
        self.cancels: deque[cpb.CancelWatched] = deque()

    def apply(self, event: Message) -> None:
        match event:
            case cpb.TradeWatched():
                _keep(self.recent, event, event.at_micros - WINDOW // _MICROS)
            case cpb.CancelWatched():
                _keep(self.cancels, event, event.at_micros - LAYERING_WINDOW // _MICROS)

    def snapshot(self) -> bytes:
        return cpb.WatchSnapshot(recent=list(self.recent), cancels=list(self.cancels)).SerializeToString(
            deterministic=True
        )

    @classmethod
    def restore(cls, stream_id: str, state: bytes) -> Self:
        watch = cls(stream_id)
        snapshot = cpb.WatchSnapshot.FromString(state)
        watch.recent, watch.cancels = deque(snapshot.recent), deque(snapshot.cancels)
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
            elif circle := self._circle(trade, at_micros):
                accounts = " -> ".join([*(t.seller_account_id for t in circle), trade.seller_account_id])
                detail = f"units went {accounts} -> {trade.buyer_account_id} within {WINDOW}"
                alerts.append(_alert("CIRCULAR_TRADE", trade, detail, *(t.trade_id for t in circle)))
            if trade.buyer_broker_id and trade.buyer_broker_id == trade.seller_broker_id:
                alerts.append(_alert("SAME_BROKER_CROSS", trade, f"broker {trade.buyer_broker_id} on both sides"))
            alerts += self._layered(trade, at_micros)
        watched = cpb.TradeWatched(
            trade_id=trade.trade_id,
            buyer_account_id=trade.buyer_account_id,
            seller_account_id=trade.seller_account_id,
            at_micros=at_micros,
        )
        return [watched, *alerts]

    def cancelled(self, cancel: mpb.OrderCancelled, at_micros: int) -> list[Message]:
        """A broker's cancellation of a large unfilled order remembered, and the layering
        alert it completes (the account traded the other side shortly before)."""
        if cancel.reason not in (mpb.CANCEL_REASON_UNSPECIFIED, mpb.CANCEL_REASON_BROKER):
            return []  # the engine's own cancellations (IOC remainders, ...) are no one's intent
        if cancel.remaining_quantity < LARGE_ORDER:
            return []
        watched = cpb.CancelWatched(
            order_id=cancel.order_id,
            account_id=cancel.account_id,
            sell=cancel.side == mpb.SELL,
            quantity=cancel.remaining_quantity,
            at_micros=at_micros,
        )
        horizon = at_micros - LAYERING_WINDOW // _MICROS
        # A sell order cancelled: its account bought; a buy order: it sold.
        traded = [
            t
            for t in self.recent
            if t.at_micros >= horizon
            and (t.buyer_account_id if watched.sell else t.seller_account_id) == cancel.account_id
            and t.buyer_account_id != t.seller_account_id
        ]
        if not traded:
            return [watched]
        side = "sell" if watched.sell else "buy"
        alert = cpb.SurveillanceAlert(
            alert_id=f"LAYERING:{cancel.order_id}",
            kind="LAYERING",
            instrument_id=cancel.instrument_id,
            trade_ids=[t.trade_id for t in traded[-20:]],
            order_ids=[cancel.order_id],
            detail=f"account {cancel.account_id} cancelled a {side} order of {cancel.remaining_quantity} t unfilled "
            f"within {LAYERING_WINDOW} of trading the other side",
        )
        _parties(alert, traded[-1])
        return [watched, alert]

    def _reversed(self, trade: mpb.TradeExecuted, at_micros: int) -> cpb.TradeWatched | None:
        """The latest trade within the window the other way between the same accounts."""
        for earlier in _within(self.recent, at_micros - WINDOW // _MICROS):
            if (earlier.buyer_account_id, earlier.seller_account_id) == (
                trade.seller_account_id,
                trade.buyer_account_id,
            ):
                return earlier
        return None

    def _circle(self, trade: mpb.TradeExecuted, at_micros: int) -> list[cpb.TradeWatched]:
        """Earlier trades within the window that carried units from this trade's buyer,
        account to account, to its seller (oldest first): with this trade, a circle."""
        recent = list(_within(self.recent, at_micros - WINDOW // _MICROS))
        # Breadth first from the buyer along seller -> buyer edges, shortest circle first.
        paths: list[list[cpb.TradeWatched]] = [[]]
        for _ in range(CIRCLE_MAX - 1):
            longer = []
            for path in paths:
                at = path[-1].buyer_account_id if path else trade.buyer_account_id
                seen = {trade.buyer_account_id, *(t.buyer_account_id for t in path)}
                for earlier in recent:
                    if earlier.seller_account_id != at or earlier.buyer_account_id in seen - {trade.seller_account_id}:
                        continue
                    if path and earlier.at_micros < path[-1].at_micros:
                        continue  # the units move on only after they arrived
                    if earlier.buyer_account_id == trade.seller_account_id:
                        if path:  # one edge back is a round trip, not a circle
                            return [*path, earlier]
                        continue
                    longer.append([*path, earlier])
            paths = longer[:PATHS_MAX]
        return []

    def _layered(self, trade: mpb.TradeExecuted, at_micros: int) -> list[Message]:
        """Large cancellations shortly before, on the side opposite to where each account traded."""
        horizon = at_micros - LAYERING_WINDOW // _MICROS
        alerts: list[Message] = []
        # The buyer's cancelled sells, the seller's cancelled buys.
        for account, sells in ((trade.buyer_account_id, True), (trade.seller_account_id, False)):
            spoofed = [
                c for c in self.cancels if c.at_micros >= horizon and c.account_id == account and c.sell == sells
            ]
            if spoofed:
                side = "sell" if sells else "buy"
                total = sum(c.quantity for c in spoofed)
                alert = _alert(
                    "LAYERING",
                    trade,
                    f"account {account} cancelled {len(spoofed)} {side} order(s), {total} t unfilled, "
                    f"within {LAYERING_WINDOW} before trading the other side",
                )
                alert.alert_id = f"LAYERING:{trade.trade_id}:{account}"
                alert.order_ids.extend(c.order_id for c in spoofed[-20:])
                alerts.append(alert)
        return alerts


Watched = TypeVar("Watched", cpb.TradeWatched, cpb.CancelWatched)


def _keep(kept: deque[Watched], event: Watched, horizon: int) -> None:
    kept.append(event)
    while kept and (len(kept) > KEEP or kept[0].at_micros < horizon):
        kept.popleft()


def _within(recent: Iterable[cpb.TradeWatched], horizon: int) -> list[cpb.TradeWatched]:
    """The trades since `horizon`, newest first."""
    found = []
    for earlier in reversed(list(recent)):
        if earlier.at_micros < horizon:
            break
        found.append(earlier)
    return found


def _parties(alert: cpb.SurveillanceAlert, trade: cpb.TradeWatched) -> None:
    alert.buyer_account_id, alert.seller_account_id = trade.buyer_account_id, trade.seller_account_id


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
