"""The matching engine of one instrument: a `Book` aggregate, stream `book-<instrument_id>`.

Deterministic and pure: fed only by the sequenced order journal, it decides without
changing itself (`submit`, `cancel`, `refuse` return journal events) and `apply` folds
what was recorded. Trade ids derive from the instrument's engine sequence, never from a
clock or randomness, so the same inputs give the same journal.
"""

from __future__ import annotations

import re
from typing import Self

from google.protobuf.message import Message

from services.common.aggregate import Aggregate
from services.common.errors import DomainError
from services.common.inputs import INT64_MAX
from services.matching.domain.book import Order, OrderBook
from services.matching.domain.instruments import Instrument
from tonne.v1 import matching_pb2 as pb

PREFIX = "book-"

# The shape of services.common.inputs.Identifier: commands from Kafka are held to what the
# HTTP API accepts, so a malformed id is refused with a code and never stored or relayed.
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")


def is_identifier(value: str) -> bool:
    return _IDENTIFIER.fullmatch(value) is not None


def shown(value: str) -> str:
    """An id as it may appear in a reason: malformed ones are not echoed back."""
    return repr(value) if is_identifier(value) else "(malformed id)"


def well_formed(order: pb.SubmitOrder) -> bool:
    """Can this order be stored as it is (ids and quantity within what the tables hold)?"""
    ids = (order.order_id, order.instrument_id, order.broker_id, order.account_id)
    client_ok = order.client_order_id == "" or is_identifier(order.client_order_id)
    return all(is_identifier(v) for v in ids) and client_ok and order.quantity <= INT64_MAX


def check_identifiers(order: pb.SubmitOrder) -> None:
    fields = {
        "order_id": order.order_id,
        "instrument_id": order.instrument_id,
        "broker_id": order.broker_id,
        "account_id": order.account_id,
    }
    malformed = [name for name, value in fields.items() if not is_identifier(value)]
    if order.client_order_id and not is_identifier(order.client_order_id):
        malformed.append("client_order_id")
    if malformed:
        raise DomainError(
            "ORDER_IDENTIFIER_INVALID",
            "identifiers are 1-64 characters of A-Z a-z 0-9 . _ : @ - starting with a letter or digit",
            [f"{name} is malformed" for name in malformed],
        )


class Book(Aggregate):
    """One instrument's resting orders and the number of inputs its engine has taken."""

    SNAPSHOT_SCHEMA = 1

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.instrument_id = stream_id.removeprefix(PREFIX)
        self.orders = OrderBook()
        self.sequence = 0  # inputs taken (accepted, cancelled or refused): numbers trades

    @classmethod
    def empty(cls, instrument_id: str) -> Book:
        return cls(PREFIX + instrument_id)

    # --- deciding (changes nothing) ---

    def submit(self, order: pb.SubmitOrder, instrument: Instrument | None) -> list[Message]:
        """Accept and match one order; returns the journal entries it causes."""
        try:
            if instrument is None or not instrument.instrument_id == order.instrument_id == self.instrument_id:
                raise DomainError("INSTRUMENT_UNKNOWN", f"no instrument {shown(order.instrument_id)}")
            check_identifiers(order)
            if self.orders.get(order.order_id) is not None:
                raise DomainError("SEQUENCE_DUPLICATE_ID", f"order id {shown(order.order_id)} was used")
            instrument.check(order.side, order.price, order.quantity)
        except DomainError as error:
            return self.refuse(order, error)
        sequence = self.sequence + 1
        taker = Order(order.order_id, order.side, order.price, order.quantity, order.account_id, order.broker_id)
        events: list[Message] = [pb.OrderAccepted(order=order, engine_sequence=sequence)]
        for n, fill in enumerate(self.orders.crossing(taker), start=1):
            buy, sell = (taker, fill.maker) if order.side == pb.BUY else (fill.maker, taker)
            events.append(
                pb.TradeExecuted(
                    trade_id=f"{self.instrument_id}:{sequence}:{n}",
                    instrument_id=self.instrument_id,
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
        order = self.orders.get(command.order_id) if command.instrument_id == self.instrument_id else None
        if order is None:
            error = DomainError("ORDER_NOT_RESTING", f"order {shown(command.order_id)} is not resting")
            return self.refuse(command, error)
        if order.broker_id != command.broker_id:
            error = DomainError("ORDER_NOT_OWNED", "only the broker that placed an order may cancel it")
            return self.refuse(command, error)
        return [
            pb.OrderCancelled(
                order_id=order.order_id,
                instrument_id=self.instrument_id,
                remaining_quantity=order.remaining,
                account_id=order.account_id,
                side=pb.Side.ValueType(order.side),
                engine_sequence=self.sequence + 1,
            )
        ]

    def refuse(self, command: pb.SubmitOrder | pb.CancelOrder, error: DomainError) -> list[Message]:
        """The refusal of one input; it takes the next engine sequence like any input."""
        return [refusal(command, error, self.sequence + 1)]

    # --- folding what was recorded ---

    def apply(self, event: Message) -> None:
        match event:
            case pb.OrderAccepted():
                o = event.order
                self.sequence += 1
                # The taker rests whole; the trades recorded with it reduce both sides.
                self.orders.rest(Order(o.order_id, o.side, o.price, o.quantity, o.account_id, o.broker_id))
            case pb.TradeExecuted():
                self.orders.reduce(event.buy_order_id, event.quantity)
                self.orders.reduce(event.sell_order_id, event.quantity)
            case pb.OrderCancelled():
                self.sequence += 1
                self.orders.cancel(event.order_id)
            case pb.OrderRejected():
                self.sequence += 1

    def snapshot(self) -> bytes:
        state = pb.BookSnapshot(
            instrument_id=self.instrument_id,
            sequence=self.sequence,
            orders=[
                pb.BookSnapshot.RestingOrder(
                    order_id=o.order_id,
                    side=pb.Side.ValueType(o.side),
                    price=o.price,
                    remaining_quantity=o.remaining,
                    account_id=o.account_id,
                    broker_id=o.broker_id,
                )
                for o in self.orders.resting()
            ],
        )
        return state.SerializeToString(deterministic=True)

    @classmethod
    def restore(cls, stream_id: str, state: bytes) -> Self:
        snapshot = pb.BookSnapshot.FromString(state)
        book = cls(stream_id)
        book.sequence = snapshot.sequence
        for o in snapshot.orders:  # in priority order, so each queue keeps its time order
            book.orders.rest(Order(o.order_id, o.side, o.price, o.remaining_quantity, o.account_id, o.broker_id))
        return book


def refusal(command: pb.SubmitOrder | pb.CancelOrder, error: DomainError, engine_sequence: int = 0) -> pb.OrderRejected:
    """The refusal of a sequenced command; a well-formed order travels with it."""
    order = command if isinstance(command, pb.SubmitOrder) and well_formed(command) else None
    return rejected(
        command.order_id, command.instrument_id, command.broker_id, error, engine_sequence=engine_sequence, order=order
    )


def rejected(
    order_id: str,
    instrument_id: str,
    broker_id: str,
    error: DomainError,
    *,
    engine_sequence: int = 0,
    order: pb.SubmitOrder | None = None,
) -> pb.OrderRejected:
    """A refusal for the journal; malformed ids are blanked so they are never stored or relayed."""
    return pb.OrderRejected(
        order_id=order_id if is_identifier(order_id) else "",
        instrument_id=instrument_id if is_identifier(instrument_id) else "",
        broker_id=broker_id if is_identifier(broker_id) else "",
        code=error.code,
        reason=error.reason,
        evidence=error.evidence,
        engine_sequence=engine_sequence,
        order=order,
    )
