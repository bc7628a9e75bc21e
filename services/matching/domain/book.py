"""A continuous limit order book with price-time priority. Integer prices only."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from sortedcontainers import SortedDict

BUY, SELL = 1, 2  # tonne.v1.Side values


@dataclass
class Order:
    order_id: str
    side: int
    price: int
    remaining: int
    account_id: str = ""
    broker_id: str = ""


@dataclass(frozen=True)
class Fill:
    maker: Order
    price: int
    quantity: int


class OrderBook:
    def __init__(self) -> None:
        # price -> FIFO of resting orders; bids iterate best (highest) first via negated keys.
        self._bids: SortedDict = SortedDict()
        self._asks: SortedDict = SortedDict()
        self._orders: dict[str, Order] = {}

    def submit(self, order: Order) -> list[Fill]:
        """Match `order` against the opposite side, then rest what is left."""
        fills = self.crossing(order)
        for fill in fills:
            self.reduce(fill.maker.order_id, fill.quantity)
            order.remaining -= fill.quantity
        if order.remaining:
            self.rest(order)
        return fills

    def crossing(self, taker: Order) -> list[Fill]:
        """The fills `taker` would get, best price first, oldest first; changes nothing."""
        fills: list[Fill] = []
        wanted = taker.remaining
        opposite = self._asks if taker.side == BUY else self._bids
        for key, queue in opposite.items():
            price = key if taker.side == BUY else -key
            if (taker.side == BUY and price > taker.price) or (taker.side == SELL and price < taker.price):
                break
            for maker in queue:
                quantity = min(wanted, maker.remaining)
                fills.append(Fill(maker, price, quantity))
                wanted -= quantity
                if wanted == 0:
                    return fills
        return fills

    def rest(self, order: Order) -> None:
        side, key = (self._bids, -order.price) if order.side == BUY else (self._asks, order.price)
        side.setdefault(key, deque()).append(order)
        self._orders[order.order_id] = order

    def reduce(self, order_id: str, quantity: int) -> None:
        """Take `quantity` off a resting order, removing it when nothing is left."""
        order = self._orders[order_id]
        order.remaining -= quantity
        if order.remaining == 0:
            self.cancel(order_id)

    def cancel(self, order_id: str) -> Order | None:
        order = self._orders.pop(order_id, None)
        if order is None:
            return None
        side, key = (self._bids, -order.price) if order.side == BUY else (self._asks, order.price)
        queue = side[key]
        queue.remove(order)
        if not queue:
            del side[key]
        return order

    def resting(self) -> Iterator[Order]:
        """Every resting order in priority order: bids best first, then asks best first,
        oldest first within a price. Resting them again in this order rebuilds the book."""
        for side in (self._bids, self._asks):
            for queue in side.values():
                yield from queue

    def get(self, order_id: str) -> Order | None:
        return self._orders.get(order_id)

    def best_bid(self) -> int | None:
        return -self._bids.peekitem(0)[0] if self._bids else None

    def best_ask(self) -> int | None:
        return self._asks.peekitem(0)[0] if self._asks else None

    def depth(self) -> dict[str, list[tuple[int, int]]]:
        return {
            "bids": [(-k, sum(o.remaining for o in q)) for k, q in self._bids.items()],
            "asks": [(k, sum(o.remaining for o in q)) for k, q in self._asks.items()],
        }
