"""A continuous limit order book with price-time priority. Integer prices only.

Built for the engine's fold, which is the hot path: a price level is a FIFO with lazy
deletion (an order leaving the middle of a queue is only marked, `remaining == 0`, and
dropped when it reaches the front), so removal is O(1) and needs no equality; each side
keeps its prices in a sorted list whose best price is last, so the best level is an index
and an emptied best level is a `pop`.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterator

BUY, SELL = 1, 2  # tonne.v1.Side values


class Order:
    """A resting order (or a taker being decided). Compared by identity, never by value."""

    __slots__ = (
        "account_id",
        "broker_id",
        "expire_at",
        "order_id",
        "post_only",
        "price",
        "remaining",
        "side",
        "stp",
        "stp_scope",
        "time_in_force",
    )

    def __init__(
        self,
        order_id: str,
        side: int,
        price: int,
        remaining: int,
        account_id: str = "",
        broker_id: str = "",
        time_in_force: int = 0,
        expire_at: int = 0,  # nanoseconds since the epoch; GTD only
        post_only: bool = False,
        stp: int = 0,
        stp_scope: int = 0,
    ) -> None:
        self.order_id = order_id
        self.side = side
        self.price = price
        self.remaining = remaining
        self.account_id = account_id
        self.broker_id = broker_id
        self.time_in_force = time_in_force
        self.expire_at = expire_at
        self.post_only = post_only
        self.stp = stp
        self.stp_scope = stp_scope

    def moved(self, price: int, remaining: int) -> Order:
        """The same order at another price (a fresh object: the old one stays marked in its queue)."""
        return Order(
            self.order_id,
            self.side,
            price,
            remaining,
            self.account_id,
            self.broker_id,
            self.time_in_force,
            self.expire_at,
            self.post_only,
            self.stp,
            self.stp_scope,
        )


class Level:
    """One price: its orders oldest first (some possibly dead) and their live quantity."""

    __slots__ = ("price", "quantity", "queue")

    def __init__(self, price: int) -> None:
        self.price = price
        self.queue: deque[Order] = deque()
        self.quantity = 0

    def live(self) -> Iterator[Order]:
        return (o for o in self.queue if o.remaining)


class Side:
    """The levels of one side; `keys` ascend and end with the best price (bids: price,
    asks: -price)."""

    __slots__ = ("keys", "levels", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.levels: dict[int, Level] = {}
        self.keys: list[int] = []

    def best(self) -> int | None:
        return self.keys[-1] * self.sign if self.keys else None

    def best_first(self) -> Iterator[Level]:
        levels, sign = self.levels, self.sign
        for key in reversed(self.keys):
            yield levels[key * sign]

    def level(self, price: int) -> Level:
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = Level(price)
            insort(self.keys, price * self.sign)
        return level

    def drop(self, level: Level) -> None:
        del self.levels[level.price]
        keys, key = self.keys, level.price * self.sign
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]


class OrderBook:
    def __init__(self) -> None:
        self.bids = Side(1)
        self.asks = Side(-1)
        self._orders: dict[str, Order] = {}

    def opposite(self, side: int) -> Side:
        return self.asks if side == BUY else self.bids

    def rest(self, order: Order) -> None:
        level = (self.bids if order.side == BUY else self.asks).level(order.price)
        level.queue.append(order)
        level.quantity += order.remaining
        self._orders[order.order_id] = order

    def reduce(self, order_id: str, quantity: int) -> None:
        """Take `quantity` off a resting order (a fill or a decrement), removing it when
        nothing is left. Unknown ids are ignored: nothing of theirs rests."""
        order = self._orders.get(order_id)
        if order is not None:
            self.take(order, quantity)

    def take(self, order: Order, quantity: int) -> None:
        """`reduce` for a resting order in hand."""
        order.remaining -= quantity
        side = self.bids if order.side == BUY else self.asks
        level = side.levels[order.price]
        level.quantity -= quantity
        if not order.remaining:
            del self._orders[order.order_id]
            self._settle(side, level)

    def cancel(self, order_id: str) -> Order | None:
        order = self._orders.pop(order_id, None)
        if order is None:
            return None
        side = self.bids if order.side == BUY else self.asks
        level = side.levels[order.price]
        level.quantity -= order.remaining
        order.remaining = 0  # marked: its queue drops it when it reaches the front
        self._settle(side, level)
        return order

    @staticmethod
    def _settle(side: Side, level: Level) -> None:
        if level.quantity == 0:
            side.drop(level)
            return
        queue = level.queue
        while not queue[0].remaining:
            queue.popleft()

    def resting(self) -> Iterator[Order]:
        """Every resting order in priority order: bids best first, then asks best first,
        oldest first within a price. Resting them again in this order rebuilds the book."""
        for side in (self.bids, self.asks):
            for level in side.best_first():
                yield from level.live()

    def get(self, order_id: str) -> Order | None:
        return self._orders.get(order_id)

    def __len__(self) -> int:
        return len(self._orders)

    def best_bid(self) -> int | None:
        return self.bids.best()

    def best_ask(self) -> int | None:
        return self.asks.best()

    def depth(self) -> dict[str, list[tuple[int, int]]]:
        return {
            "bids": [(level.price, level.quantity) for level in self.bids.best_first()],
            "asks": [(level.price, level.quantity) for level in self.asks.best_first()],
        }
