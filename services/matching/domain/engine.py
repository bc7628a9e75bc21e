"""The matching engine: deterministic, fed only by the sequenced order journal.

Same input, same output: trade ids derive from the engine sequence, never from a
clock or randomness. State is rebuilt by folding the engine's own events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import Message

from services.common.errors import DomainError
from services.matching.domain.book import Order, OrderBook
from services.matching.domain.instruments import Instrument
from tonne.v1 import matching_pb2 as pb


@dataclass
class Engine:
    instruments: dict[str, Instrument]
    books: dict[str, OrderBook] = field(default_factory=dict)
    # Inputs seen per instrument: instruments are the partition key, so each is ordered.
    sequences: dict[str, int] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def book(self, instrument_id: str) -> OrderBook:
        return self.books.setdefault(instrument_id, OrderBook())

    def submit(self, order: pb.SubmitOrder) -> list[Message]:
        """Accept and match one order; returns the journal entries it causes."""
        sequence = self.sequences.get(order.instrument_id, 0) + 1
        try:
            instrument = self.instruments.get(order.instrument_id)
            if instrument is None:
                raise DomainError("INSTRUMENT_UNKNOWN", f"no instrument {order.instrument_id!r}")
            if order.order_id in self.seen:
                raise DomainError("SEQUENCE_DUPLICATE_ID", f"order id {order.order_id!r} was used")
            instrument.check(order.side, order.price, order.quantity)
        except DomainError as error:
            return [rejected(order.order_id, order.instrument_id, order.broker_id, error)]
        # Deciding changes nothing: `apply` rests the order and the trades reduce it.
        taker = Order(order.order_id, order.side, order.price, order.quantity, order.account_id, order.broker_id)
        events: list[Message] = [pb.OrderAccepted(order=order)]
        for n, fill in enumerate(self.book(order.instrument_id).crossing(taker), start=1):
            buy, sell = (order, fill.maker) if order.side == pb.BUY else (fill.maker, order)
            events.append(
                pb.TradeExecuted(
                    trade_id=f"{order.instrument_id}:{sequence}:{n}",
                    instrument_id=order.instrument_id,
                    price=fill.price,
                    quantity=fill.quantity,
                    currency=instrument.currency,
                    buy_order_id=buy.order_id,
                    sell_order_id=sell.order_id,
                    buyer_account_id=buy.account_id,
                    seller_account_id=sell.account_id,
                    buyer_broker_id=buy.broker_id,
                    seller_broker_id=sell.broker_id,
                    aggressor=order.side,
                    engine_sequence=sequence,
                )
            )
        return events

    def cancel(self, command: pb.CancelOrder) -> list[Message]:
        order = self.book(command.instrument_id).get(command.order_id)
        if order is None:
            error = DomainError("ORDER_NOT_RESTING", f"order {command.order_id!r} is not resting")
            return [rejected(command.order_id, command.instrument_id, command.broker_id, error)]
        if order.broker_id != command.broker_id:
            error = DomainError("ORDER_NOT_OWNED", "only the broker that placed an order may cancel it")
            return [rejected(command.order_id, command.instrument_id, command.broker_id, error)]
        return [
            pb.OrderCancelled(
                order_id=order.order_id,
                instrument_id=command.instrument_id,
                remaining_quantity=order.remaining,
                account_id=order.account_id,
                side=pb.Side.ValueType(order.side),
            )
        ]

    def apply(self, event: Message) -> None:
        match event:
            case pb.OrderAccepted():
                o = event.order
                self._count(o.instrument_id)
                self.seen.add(o.order_id)
                self.book(o.instrument_id).rest(
                    Order(o.order_id, o.side, o.price, o.quantity, o.account_id, o.broker_id)
                )
            case pb.TradeExecuted():
                book = self.book(event.instrument_id)
                book.reduce(event.buy_order_id, event.quantity)
                book.reduce(event.sell_order_id, event.quantity)
            case pb.OrderCancelled():
                self._count(event.instrument_id)
                self.book(event.instrument_id).cancel(event.order_id)
            case pb.OrderRejected():
                self._count(event.instrument_id)
                self.seen.add(event.order_id)

    def _count(self, instrument_id: str) -> None:
        self.sequences[instrument_id] = self.sequences.get(instrument_id, 0) + 1


def rejected(order_id: str, instrument_id: str, broker_id: str, error: DomainError) -> pb.OrderRejected:
    return pb.OrderRejected(
        order_id=order_id,
        instrument_id=instrument_id,
        broker_id=broker_id,
        code=error.code,
        reason=error.reason,
        evidence=error.evidence,
    )
