"""Matching: intake (checks, reservation, sequencing) and the engine it feeds."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg
from google.protobuf.message import Message

from services.common import topics
from services.common.application import Application
from services.common.consumer import Handler
from services.common.envelope import Context
from services.common.errors import DomainError
from services.matching.domain.engine import Engine, rejected
from services.matching.domain.instruments import Instrument
from tonne.v1 import matching_pb2 as pb
from tonne.v1 import registry_pb2
from tonne.v1.envelope_pb2 import CommandRejected, Envelope

STREAM = "engine"


@dataclass
class OrderState:
    """An order as the journal tells it: what was filled, what still rests."""

    order: pb.SubmitOrder
    filled: int = 0
    status: str = "resting"


class Matching(Application):
    engine: Engine
    orders: dict[str, OrderState]
    trades: list[pb.TradeExecuted]

    def __init__(self, pool: asyncpg.Pool, instruments: dict[str, Instrument]) -> None:
        self.instruments = instruments
        super().__init__(pool)

    def reset(self) -> None:
        self.engine = Engine(self.instruments)
        self.orders = {}
        self.trades = []

    def apply(self, event: Message) -> None:
        self.engine.apply(event)
        match event:
            case pb.OrderAccepted():
                self.orders[event.order.order_id] = OrderState(event.order)
            case pb.TradeExecuted():
                self.trades.append(event)
                for order_id in (event.buy_order_id, event.sell_order_id):
                    state = self.orders[order_id]
                    state.filled += event.quantity
                    if state.filled == state.order.quantity:
                        state.status = "filled"
            case pb.OrderCancelled():
                self.orders[event.order_id].status = "cancelled"

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return {topics.MATCHING_ORDERS: self.on_sequenced, topics.REGISTRY_EVENTS: self.on_registry}

    # --- intake ---

    async def place(self, broker_id: str, order: pb.SubmitOrder) -> tuple[str, bool]:
        """Check an order and start it on its way; returns (order id, newly placed).
        A repeated client order id returns the first order: placing is idempotent."""
        instrument = self.instruments.get(order.instrument_id)
        if instrument is None:
            raise DomainError("INSTRUMENT_UNKNOWN", f"no instrument {order.instrument_id!r}", http_status=404)
        instrument.check(order.side, order.price, order.quantity)
        order.order_id = str(uuid.uuid4())
        order.broker_id = broker_id
        context = Context.new(actor=broker_id)
        async with self.pool.acquire() as conn, conn.transaction():
            existing = await conn.fetchval(
                "INSERT INTO intake_orders (order_id, broker_id, client_order_id, instrument_id, side, "
                "price, quantity, account_id, status, correlation_id) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
                "ON CONFLICT (broker_id, client_order_id) DO NOTHING RETURNING order_id",
                order.order_id,
                broker_id,
                order.client_order_id,
                order.instrument_id,
                order.side,
                order.price,
                order.quantity,
                order.account_id,
                "reserving" if order.side == pb.SELL else "submitted",
                context.correlation_id,
            )
            if existing is None:
                first = await conn.fetchval(
                    "SELECT order_id FROM intake_orders WHERE broker_id = $1 AND client_order_id = $2",
                    broker_id,
                    order.client_order_id,
                )
                return str(first), False
            if order.side == pb.SELL:
                # Covered selling: the units are reserved before the order may rest.
                reserve = registry_pb2.ReserveUnits(
                    reservation_id=order.order_id,
                    account_id=order.account_id,
                    selector=instrument.selector(),
                    quantity=order.quantity,
                )
                await self.send(conn, reserve, topics.REGISTRY_COMMANDS, order.account_id, context)
            else:
                await self.send(conn, order, topics.MATCHING_ORDERS, order.instrument_id, context)
        return order.order_id, True

    async def cancel(self, broker_id: str, order_id: str) -> None:
        state = self.orders.get(order_id)
        if state is None or state.status != "resting":
            raise DomainError("ORDER_NOT_RESTING", f"order {order_id!r} is not resting", http_status=409)
        if state.order.broker_id != broker_id:
            raise DomainError("ORDER_NOT_OWNED", "only the broker that placed an order may cancel it", http_status=403)
        command = pb.CancelOrder(order_id=order_id, instrument_id=state.order.instrument_id, broker_id=broker_id)
        async with self.pool.acquire() as conn, conn.transaction():
            await self.send(conn, command, topics.MATCHING_ORDERS, command.instrument_id, Context.new(broker_id))

    async def on_registry(self, conn: asyncpg.Connection, envelope: Envelope, event: Message) -> None:
        """A sell order's reservation came back: sequence the order, or reject it."""
        match event:
            case registry_pb2.UnitsReserved():
                order_id = event.reservation_id
            case CommandRejected(command_type="tonne.v1.ReserveUnits"):
                order_id = event.command_id
            case _:
                return
        row = await conn.fetchrow(
            "UPDATE intake_orders SET status = $2, reject_code = $3, reject_reason = $4 "
            "WHERE order_id = $1 AND status = 'reserving' RETURNING *",
            order_id,
            "submitted" if isinstance(event, registry_pb2.UnitsReserved) else "rejected",
            getattr(event, "code", None),
            getattr(event, "reason", None),
        )
        if row is None:
            return  # not an order of ours, or already answered
        context = Context.following(envelope, "matching-intake", row["correlation_id"])
        if isinstance(event, registry_pb2.UnitsReserved):
            order = pb.SubmitOrder(
                order_id=row["order_id"],
                instrument_id=row["instrument_id"],
                broker_id=row["broker_id"],
                account_id=row["account_id"],
                side=row["side"],
                price=row["price"],
                quantity=row["quantity"],
                client_order_id=row["client_order_id"],
            )
            await self.send(conn, order, topics.MATCHING_ORDERS, order.instrument_id, context)
        else:
            error = DomainError(event.code, event.reason, list(event.evidence))
            refusal = rejected(order_id, row["instrument_id"], row["broker_id"], error)
            await self.send(conn, refusal, topics.MATCHING_EVENTS, row["instrument_id"], context)

    # --- engine ---

    async def on_sequenced(self, conn: asyncpg.Connection, envelope: Envelope, command: Message) -> None:
        context = Context.following(envelope, "matching-engine")
        async with self.lock:
            match command:
                case pb.SubmitOrder():
                    events = self.engine.submit(command)
                case pb.CancelOrder():
                    events = self.engine.cancel(command)
                case _:
                    raise DomainError("COMMAND_UNSUPPORTED", f"the engine does not take {envelope.type}")
            instrument_id = command.instrument_id
            await self.record(conn, STREAM, [(e, [(topics.MATCHING_EVENTS, instrument_id)]) for e in events], context)
        for event in events:
            if isinstance(event, pb.OrderCancelled) and event.side == pb.SELL and event.remaining_quantity:
                # The unfilled rest of a cancelled sell order goes back to its holder.
                release = registry_pb2.ReleaseReservation(
                    reservation_id=event.order_id, quantity=event.remaining_quantity
                )
                await self.send(conn, release, topics.REGISTRY_COMMANDS, event.account_id, context)

    async def intake_order(self, order_id: str) -> asyncpg.Record | None:
        async with self.pool.acquire() as conn:
            return await conn.fetchrow("SELECT * FROM intake_orders WHERE order_id = $1", order_id)
