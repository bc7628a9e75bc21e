"""Market data derived from the engine journal: depth snapshots, sequenced depth diffs
with a checksum, and each broker's order changes (docs/market-data.md).

Pure: `Follower` folds one engine input at a time (the events of one engine sequence,
as read from stream `book-<instrument>`) into its own `engine.Book`, restored from the
aggregate's snapshot, and says what the input changed. A diff is never computed from
anything but the book the journal folds to, so the stream cannot drift from the book.

The checksum is Kraken's book checksum (WebSocket v1 and v2) over integer prices:

    CRC32 (zlib/IEEE, as an unsigned 32-bit integer) of the ASCII string made of
      the top 10 asks, lowest price first, each as decimal(price) + decimal(quantity),
      then the top 10 bids, highest price first, each as decimal(price) + decimal(quantity)

Kraken removes the decimal point and the leading zeros of each value; tonne's prices
(minor units) and quantities (tonnes) are positive integers, so their plain decimal
digits are exactly that string. Fewer than 10 levels on a side: the levels there are.
An empty book is CRC32("") = 0.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from services.matching.domain.book import BUY, SELL, OrderBook
from services.matching.domain.engine import Book
from tonne.v1 import matching_pb2 as pb

CHECKSUM_LEVELS = 10

Level = tuple[int, int]  # (price, quantity)


def checksum(asks: Iterable[Level], bids: Iterable[Level]) -> int:
    """Kraken's CRC32 of the top 10 levels: `asks` lowest first, `bids` highest first
    (only the first 10 of each are read)."""
    text = []
    for levels in (asks, bids):
        for n, (price, quantity) in enumerate(levels):
            if n == CHECKSUM_LEVELS:
                break
            text.append(f"{price}{quantity}")
    return zlib.crc32("".join(text).encode("ascii"))


def top(book: OrderBook, side: int, depth: int) -> list[Level]:
    """The best `depth` levels of one side, best first."""
    levels: list[Level] = []
    for level in (book.bids if side == BUY else book.asks).best_first():
        if len(levels) == depth:
            break
        levels.append((level.price, level.quantity))
    return levels


def book_checksum(book: OrderBook) -> int:
    return checksum(top(book, SELL, CHECKSUM_LEVELS), top(book, BUY, CHECKSUM_LEVELS))


def side_name(side: int) -> str:
    return pb.Side.Name(pb.Side.ValueType(side))


@dataclass(frozen=True)
class Snapshot:
    """A book at an engine sequence: every level (or the best `depth`) of each side."""

    instrument_id: str
    sequence: int
    bids: list[Level]
    asks: list[Level]
    checksum: int

    @classmethod
    def of(cls, book: Book, depth: int | None = None) -> Snapshot:
        n = len(book.orders) if depth is None else depth  # no side has more levels than orders
        orders = book.orders
        return cls(book.instrument_id, book.sequence, top(orders, BUY, n), top(orders, SELL, n), book_checksum(orders))

    def message(self) -> dict[str, Any]:
        return {
            "type": "snapshot",
            "instrument_id": self.instrument_id,
            "sequence": self.sequence,
            "bids": [list(level) for level in self.bids],
            "asks": [list(level) for level in self.asks],
            "checksum": self.checksum,
        }


@dataclass(frozen=True)
class Update:
    """What the engine inputs `first`..`last` changed: each changed level with its new
    ABSOLUTE quantity (0: the level is gone), the checksum of the book after them, and
    the trades of input `last` (the inputs before it in the range changed nothing)."""

    instrument_id: str
    first: int
    last: int
    bids: list[Level]  # best first
    asks: list[Level]  # best first
    checksum: int
    trades: list[dict[str, Any]]
    time: str  # when input `last` was recorded (its envelope's occurred_at, RFC 3339)

    def message(self) -> dict[str, Any]:
        return {
            "type": "update",
            "instrument_id": self.instrument_id,
            "first": self.first,
            "last": self.last,
            "bids": [list(level) for level in self.bids],
            "asks": [list(level) for level in self.asks],
            "checksum": self.checksum,
            "trades": self.trades,
            "time": self.time,
        }


@dataclass(frozen=True)
class OrderChange:
    """One change of one broker's order, as that broker's stream sends it."""

    broker_id: str
    message: dict[str, Any]


@dataclass
class Folded:
    """What one engine input did: the depth update (None if the book did not change) and
    the order changes (when asked for)."""

    sequence: int
    update: Update | None
    changes: list[OrderChange] = field(default_factory=list)


def _trade_view(trade: pb.TradeExecuted) -> dict[str, Any]:
    """A trade as the market sees it (as GET /trades): no account or broker."""
    return {
        "trade_id": trade.trade_id,
        "price": trade.price,
        "quantity": trade.quantity,
        "aggressor": side_name(trade.aggressor),
        "buy_order_id": trade.buy_order_id,
        "sell_order_id": trade.sell_order_id,
    }


_CANCEL_REASONS = {value: name.removeprefix("CANCEL_REASON_") for name, value in pb.CancelReason.items()}


class Follower:
    """An instrument's book as the journal folds it, one engine input at a time."""

    def __init__(self, book: Book) -> None:
        self.book = book
        self.sent = book.sequence  # the `last` of the latest update (the snapshot's sequence at first)

    @property
    def version(self) -> int:
        return self.book.version

    def snapshot(self) -> Snapshot:
        return Snapshot.of(self.book)

    def fold(self, events: Sequence[Message], time: str, changes: bool = False) -> Folded:
        """Fold the events of ONE engine input (all of one engine sequence, in journal
        order) into the book; `changes`: also say which broker's order changed how."""
        book, orders = self.book, self.book.orders
        touched: set[tuple[int, int]] = set()  # (side, price) whose quantity may change
        owners: dict[str, str] = {}  # order id -> broker, for orders taking part in this input

        def known(order_id: str) -> None:
            order = orders.get(order_id)
            if order is not None:
                touched.add((order.side, order.price))
                owners.setdefault(order_id, order.broker_id)

        for event in events:
            match event:
                case pb.OrderAccepted(order=o):
                    owners[o.order_id] = o.broker_id
                    if o.price:  # a market order never rests
                        touched.add((o.side, o.price))
                case pb.TradeExecuted():
                    known(event.buy_order_id)
                    known(event.sell_order_id)
                case pb.OrderCancelled() | pb.OrderReduced():
                    known(event.order_id)
                case pb.OrderReplaced():
                    known(event.order_id)
                    owners[event.order_id] = event.broker_id
                    touched.add((event.side, event.price))
        before = {key: _quantity(orders, *key) for key in touched}
        book.mutate(events)
        sequence = book.sequence
        bids: list[Level] = []
        asks: list[Level] = []
        for (side, price), quantity in before.items():
            now = _quantity(orders, side, price)
            if now != quantity:
                (bids if side == BUY else asks).append((price, now))
        trades = [e for e in events if isinstance(e, pb.TradeExecuted)]
        update = None
        if bids or asks or trades:
            bids.sort(reverse=True)
            asks.sort()
            update = Update(
                instrument_id=book.instrument_id,
                first=self.sent + 1,
                last=sequence,
                bids=bids,
                asks=asks,
                checksum=book_checksum(orders),
                trades=[_trade_view(t) for t in trades],
                time=time,
            )
            self.sent = sequence
        folded = Folded(sequence, update)
        if changes:
            folded.changes = list(_order_changes(book.instrument_id, sequence, time, events, owners))
        return folded


def _quantity(orders: OrderBook, side: int, price: int) -> int:
    level = (orders.bids if side == BUY else orders.asks).levels.get(price)
    return 0 if level is None else level.quantity


def _order_changes(
    instrument_id: str, sequence: int, time: str, events: Sequence[Message], owners: dict[str, str]
) -> Iterable[OrderChange]:
    """Each event of the input as a change of the orders it names, for their brokers."""

    def change(broker_id: str, order_id: str, kind: str, **fields: Any) -> OrderChange:
        message = {"type": "order", "event": kind, "order_id": order_id, "instrument_id": instrument_id}
        return OrderChange(broker_id, message | fields | {"sequence": sequence, "time": time})

    for event in events:
        match event:
            case pb.OrderAccepted(order=o):
                yield change(
                    o.broker_id,
                    o.order_id,
                    "accepted",
                    client_order_id=o.client_order_id,
                    account_id=o.account_id,
                    side=side_name(o.side),
                    price=o.price,
                    quantity=o.quantity,
                    resting_quantity=event.resting_quantity,
                )
            case pb.TradeExecuted():
                for order_id, broker_id in (
                    (event.buy_order_id, event.buyer_broker_id),
                    (event.sell_order_id, event.seller_broker_id),
                ):
                    yield change(
                        broker_id,
                        order_id,
                        "fill",
                        trade_id=event.trade_id,
                        price=event.price,
                        quantity=event.quantity,
                        liquidity="maker" if order_id == event.maker_order_id else "taker",
                    )
            case pb.OrderReduced():
                yield change(
                    owners.get(event.order_id, ""),
                    event.order_id,
                    "reduced",
                    quantity=event.quantity,
                    remaining_quantity=event.remaining_quantity,
                    reason=_CANCEL_REASONS.get(event.reason, "UNSPECIFIED"),
                )
            case pb.OrderReplaced():
                yield change(
                    event.broker_id,
                    event.order_id,
                    "replaced",
                    price=event.price,
                    quantity=event.quantity,
                    resting_quantity=event.resting_quantity,
                )
            case pb.OrderCancelled():
                yield change(
                    owners.get(event.order_id, ""),
                    event.order_id,
                    "cancelled",
                    remaining_quantity=event.remaining_quantity,
                    reason=_CANCEL_REASONS.get(event.reason, "UNSPECIFIED"),
                )
            case pb.OrderRejected() if event.order_id:
                yield change(event.broker_id, event.order_id, "rejected", code=event.code, reason=event.reason)


class ClientBook:
    """What a market-data client keeps: the reference for docs/market-data.md's rules
    (and what the tests follow the stream with). Raises `Resnapshot` when it must start
    over from a new snapshot."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.instrument_id: str = snapshot["instrument_id"]
        self.sequence: int = snapshot["sequence"]
        self.bids: dict[int, int] = {p: q for p, q in snapshot["bids"]}
        self.asks: dict[int, int] = {p: q for p, q in snapshot["asks"]}
        self.applied = 0
        if self.checksum() != snapshot["checksum"]:
            raise Resnapshot("the snapshot's checksum does not match its levels")

    def apply(self, update: dict[str, Any]) -> bool:
        """Apply an update; False if it is older than the book (skipped)."""
        if update["last"] <= self.sequence:
            return False  # already in the snapshot
        if not update["first"] <= self.sequence + 1:
            raise Resnapshot(f"gap: the book is at {self.sequence}, the update starts at {update['first']}")
        for side, levels in ((self.bids, update["bids"]), (self.asks, update["asks"])):
            for price, quantity in levels:
                if quantity:
                    side[price] = quantity
                else:
                    side.pop(price, None)
        self.sequence = update["last"]
        self.applied += 1
        if self.checksum() != update["checksum"]:
            raise Resnapshot(f"checksum mismatch at {self.sequence}")
        return True

    def depth(self) -> tuple[list[Level], list[Level]]:
        """(bids highest first, asks lowest first)."""
        return sorted(self.bids.items(), reverse=True), sorted(self.asks.items())

    def checksum(self) -> int:
        bids, asks = self.depth()
        return checksum(asks, bids)


class Resnapshot(Exception):
    """The client's book cannot follow the stream from here: take a new snapshot."""
