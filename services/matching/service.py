"""Matching: intake (checks, mandate, reservation, sequencing) and the engine it feeds,
one `Book` aggregate per instrument (stream `book-<instrument_id>`). The registry's
mandate events are kept as fact streams `fact-<event id>` folded into `mandates`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
from google.protobuf.message import Message

from services.common import mandates, outbox, topics
from services.common.backlog import GroupLag
from services.common.consumer import Handler
from services.common.envelope import Context, wrap
from services.common.errors import DomainError, TooBusy
from services.common.inputs import is_identifier
from services.common.repository import Repository
from services.common.runtime import Kernel
from services.common.statehash import ServiceState
from services.common.unit_of_work import UnitOfWork, UnitOfWorkFactory
from services.matching import projections
from services.matching.domain.engine import PREFIX, Book, check_order_type, refusal, rejected, shown
from services.matching.domain.instruments import Instrument, load
from services.matching.domain.mandates import check_mandate, not_mandated
from tonne.v1 import matching_pb2 as pb
from tonne.v1 import registry_pb2, settlement_pb2
from tonne.v1.envelope_pb2 import CommandRejected, Envelope

# Placing an order is one statement (atomic on its own: no transaction to open): a repeated
# client order id answers the first order (a conflict if the order differs); a broker
# without a mandate for the account places nothing (the same answer whether the account
# exists or not); otherwise the order is recorded and its next step queued on the outbox,
# whose relay wakes on commit.
_PLACE = (
    "WITH existing AS (SELECT order_id, request FROM intake_orders WHERE broker_id = $2 AND client_order_id = $3), "
    "mandate AS (SELECT EXISTS (SELECT 1 FROM mandates WHERE broker_id = $2 AND account_id = $8) AS ok), "
    "placed AS (INSERT INTO intake_orders (order_id, broker_id, client_order_id, instrument_id, side, price, "
    "quantity, account_id, status, correlation_id, request) "
    "SELECT $1, $2, $3, $4, $5, $6, $7, $8, 'reserving', $9, $10 "
    "WHERE (SELECT ok FROM mandate) AND NOT EXISTS (SELECT 1 FROM existing) "
    "ON CONFLICT (broker_id, client_order_id) DO NOTHING RETURNING order_id), "
    f"{outbox.queued(11, when='EXISTS (SELECT 1 FROM placed)')} "
    "SELECT (SELECT order_id FROM existing) AS existing, (SELECT request = $10 FROM existing) AS same, "
    "(SELECT ok FROM mandate) AS mandated, "
    "(SELECT order_id FROM placed) AS placed, "
    f"{outbox.WAKE} AS woken"
)


def cover_price(order: pb.SubmitOrder, instrument: Instrument) -> int:
    """The price an order is covered at: its limit; a market order's is unknown until it
    trades, so the band's edge on its side (a buy may pay up to the maximum)."""
    if order.order_type != pb.ORDER_TYPE_MARKET:
        return order.price
    return instrument.max_price if order.side == pb.BUY else instrument.min_price


def cover(order: pb.SubmitOrder, instrument: Instrument) -> tuple[Message, str, str]:
    """What covers the order before it may reach the engine, and where it is sent: a sell's
    units reserved in the registry, a buy's cash (cover price x quantity) in settlement."""
    if order.side == pb.SELL:
        units = registry_pb2.ReserveUnits(
            reservation_id=order.order_id,
            account_id=order.account_id,
            selector=instrument.selector(),
            quantity=order.quantity,
        )
        return units, topics.REGISTRY_COMMANDS, order.account_id
    cash = settlement_pb2.ReserveCash(
        order_id=order.order_id,
        account_id=order.account_id,
        currency=instrument.currency,
        amount=cover_price(order, instrument) * order.quantity,
        quantity=order.quantity,
    )
    return cash, topics.SETTLEMENT_COMMANDS, order.account_id


def uncover(order: pb.SubmitOrder, instrument: Instrument, reason: str) -> tuple[Message, str, str]:
    """Give back a cover whose order will not go on."""
    if order.side == pb.SELL:
        release = registry_pb2.ReleaseReservation(reservation_id=order.order_id, quantity=order.quantity)
        return release, topics.REGISTRY_COMMANDS, order.account_id
    cash = settlement_pb2.ReleaseCash(
        order_id=order.order_id, account_id=order.account_id, currency=instrument.currency, reason=reason
    )
    return cash, topics.SETTLEMENT_COMMANDS, order.account_id


def placed(row: Mapping[str, Any]) -> pb.SubmitOrder:
    """The order as intake took it: the broker's request with the ids intake gave it."""
    order = pb.SubmitOrder.FromString(row["request"])
    order.order_id, order.broker_id = row["order_id"], row["broker_id"]
    return order


def client_order_id_reused(client_order_id: str) -> DomainError:
    """Placing is idempotent per client order id (the Idempotency-Key): the same key for
    another order is a mistake to report, not an order to drop silently (422, as the
    draft-ietf-httpapi-idempotency-key-header answers a key reused with another body)."""
    return DomainError(
        "IDEMPOTENCY_KEY_REUSED",
        f"idempotency key (client order id) {shown(client_order_id)} names another order of this broker",
    )


class Matching:
    def __init__(self, kernel: Kernel, instruments: dict[str, Instrument]) -> None:
        self.pool = kernel.pool
        self.auth = kernel.auth
        self.instruments = instruments
        self.books: Repository[Book] = Repository(
            Book,
            PREFIX,
            snapshot_every=kernel.settings.snapshot_every,
            cache_size=kernel.settings.aggregate_cache,
        )
        self.state = ServiceState([self.books], projections.project, projections.PROJECTIONS)
        self.unit_of_work = UnitOfWorkFactory(kernel.pool, projections.project)
        settings = kernel.settings
        # The engine's consumer group on the order journal: intake pushes back past a bound.
        self.backlog = GroupLag(
            settings.kafka,
            f"{settings.topic_prefix}tonne-{settings.service}",
            settings.topic_prefix + topics.MATCHING_ORDERS,
        )
        self.max_backlog = settings.intake_max_backlog
        kernel.on_stop.append(self.backlog.stop)

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return {
            topics.MATCHING_ORDERS: self.on_sequenced,
            topics.REGISTRY_EVENTS: self.on_registry,
            topics.SETTLEMENT_COVERS: self.on_settlement,
        }

    # --- intake ---

    async def place(self, broker_id: str, order: pb.SubmitOrder) -> tuple[str, bool]:
        """Check an order and start it on its way; returns (order id, newly placed).
        The same order again under its client order id returns the first (placing is
        idempotent); another order under that id is refused (IDEMPOTENCY_KEY_REUSED); one
        placed while the first under its id is still being placed is refused for now
        (IDEMPOTENCY_KEY_IN_FLIGHT, 409).
        Every order is covered before it reaches the engine: a sell by its units reserved
        in the registry, a buy by its cash reserved in settlement (`cover`)."""
        instrument = self.instruments.get(order.instrument_id)
        if instrument is None:
            raise DomainError("INSTRUMENT_UNKNOWN", f"no instrument {shown(order.instrument_id)}", http_status=404)
        check_order_type(order, time.time_ns())
        if order.time_in_force == pb.TIME_IN_FORCE_DAY:
            # The instruments trade continuously: no session ever closes to end a DAY order.
            raise DomainError("ORDER_TIME_IN_FORCE_INVALID", f"{order.instrument_id} has no session close for DAY")
        instrument.check(order.side, cover_price(order, instrument), order.quantity)
        if (behind := await self.backlog.lag()) > self.max_backlog:
            raise TooBusy("ENGINE_BACKLOG", f"the engine is {behind} orders behind; try again shortly", retry_after=1)
        request = order.SerializeToString(deterministic=True)  # as asked: what a repeat is compared on
        order.order_id = str(uuid.uuid4())
        order.broker_id = broker_id
        context = Context.new(actor=broker_id)
        sent, topic, key = cover(order, instrument)
        envelope = wrap(sent, aggregate_id=key, context=context, occurred_at=datetime.now(UTC))
        row = await self.pool.fetchrow(
            _PLACE,
            order.order_id,
            broker_id,
            order.client_order_id,
            order.instrument_id,
            order.side,
            order.price,
            order.quantity,
            order.account_id,
            context.correlation_id,
            request,
            *outbox.queue_args([(topic, key, envelope)]),
        )
        if row["existing"] is not None:
            if not row["same"]:
                raise client_order_id_reused(order.client_order_id)
            return str(row["existing"]), False
        if not row["mandated"]:
            raise not_mandated(broker_id, order.account_id)
        if row["placed"] is None:
            # The same client order id was being placed when this statement began: that
            # first attempt was in flight, and its answer is the one to wait for.
            raise DomainError(
                "IDEMPOTENCY_KEY_IN_FLIGHT",
                f"an order under client order id {shown(order.client_order_id)} was being placed; retry",
                http_status=409,
                retry_after=1,
            )
        return order.order_id, True

    async def cancel(self, broker_id: str, order_id: str) -> None:
        async with self.unit_of_work() as uow:
            row = await self._resting(uow, broker_id, order_id)
            command = pb.CancelOrder(order_id=order_id, instrument_id=row["instrument_id"], broker_id=broker_id)
            await uow.send(command, topics.MATCHING_ORDERS, command.instrument_id, Context.new(broker_id))

    async def replace(self, broker_id: str, order_id: str, price: int, quantity: int) -> None:
        """Ask the engine to move a resting order (its rules: engine.Book.replace). A buy may
        not go above the limit its cash was covered at."""
        async with self.unit_of_work() as uow:
            row = await self._resting(uow, broker_id, order_id)
            self.instruments[row["instrument_id"]].check(row["side"], price, quantity)
            if row["side"] == pb.BUY and price > row["covered_price"]:
                raise DomainError(
                    "REPLACE_NEEDS_COVER",
                    f"the order's cash is covered up to {row['covered_price']}; cancel it and place a new one",
                )
            command = pb.ReplaceOrder(
                order_id=order_id,
                instrument_id=row["instrument_id"],
                broker_id=broker_id,
                price=price,
                quantity=quantity,
            )
            await uow.send(command, topics.MATCHING_ORDERS, command.instrument_id, Context.new(broker_id))

    @staticmethod
    async def _resting(uow: UnitOfWork, broker_id: str, order_id: str) -> asyncpg.Record:
        row = await projections.resting_order(uow.conn, order_id, broker_id)
        if row is None:
            intake = await projections.broker_order(uow.conn, broker_id, order_id)
            if intake is None:  # someone else's order answers like no order at all
                raise DomainError("ORDER_UNKNOWN", f"no order {shown(order_id)}", http_status=404)
        if row is None or row["status"] != "resting":
            raise DomainError("ORDER_NOT_RESTING", f"order {shown(order_id)} is not resting", http_status=409)
        return row

    async def on_registry(self, uow: UnitOfWork, envelope: Envelope, event: Message) -> None:
        """Mandates granted or revoked; a sell order's cover (its reservation) came back."""
        match event:
            case registry_pb2.MandateGranted() | registry_pb2.MandateRevoked():
                await self._mandate(uow, envelope, event)
            case registry_pb2.UnitsReserved():
                await self._covered(uow, envelope, event.reservation_id, None)
            case CommandRejected(command_type="tonne.v1.ReserveUnits"):
                await self._covered(uow, envelope, event.command_id, event)

    async def on_settlement(self, uow: UnitOfWork, envelope: Envelope, event: Message) -> None:
        """A buy order's cover (its cash reserved) came back."""
        match event:
            case settlement_pb2.CashReserved():
                await self._covered(uow, envelope, event.order_id, None)
            case CommandRejected(command_type="tonne.v1.ReserveCash"):
                await self._covered(uow, envelope, event.command_id, event)

    async def _covered(
        self, uow: UnitOfWork, envelope: Envelope, order_id: str, refused: CommandRejected | None
    ) -> None:
        """The order's cover is answered: sequence the order, or reject it (and give back a
        cover that came while its broker lost the mandate)."""
        refusal = None if refused is None else DomainError(refused.code, refused.reason, list(refused.evidence))
        # One statement: the order answered once (its status moves off 'reserving'),
        # submitted only while its broker still holds the mandate.
        row = await uow.conn.fetchrow(
            "UPDATE intake_orders i SET status = CASE WHEN $2 AND EXISTS (SELECT 1 FROM mandates m "
            "WHERE m.broker_id = i.broker_id AND m.account_id = i.account_id) THEN 'submitted' ELSE 'rejected' END, "
            "reject_code = $3, reject_reason = $4 WHERE order_id = $1 AND status = 'reserving' RETURNING *",
            order_id,
            refusal is None,
            None if refusal is None else refusal.code,
            None if refusal is None else refusal.reason,
        )
        if row is None:
            return  # not an order of ours, or already answered
        error = refusal
        if error is None and row["status"] == "rejected":
            # The mandate was revoked while the order was being covered.
            error = not_mandated(row["broker_id"], row["account_id"])
            await uow.conn.execute(
                "UPDATE intake_orders SET reject_code = $2, reject_reason = $3 WHERE order_id = $1",
                order_id,
                error.code,
                error.reason,
            )
        context = Context.following(envelope, "matching-intake", row["correlation_id"])
        order = placed(row)
        if error is None:
            await uow.send(order, topics.MATCHING_ORDERS, order.instrument_id, context)
            return
        if refusal is None:
            sent, topic, key = uncover(order, self.instruments[order.instrument_id], error.code)
            await uow.send(sent, topic, key, context)
        refused_order = rejected(order_id, row["instrument_id"], row["broker_id"], error)
        await uow.send(refused_order, topics.MATCHING_EVENTS, row["instrument_id"], context)

    async def _mandate(
        self, uow: UnitOfWork, envelope: Envelope, event: registry_pb2.MandateGranted | registry_pb2.MandateRevoked
    ) -> None:
        check_mandate(event)
        context = Context.following(envelope, "matching-intake")
        await uow.append(f"fact-{envelope.event_id}", 0, [(event, [])], context)
        if isinstance(event, registry_pb2.MandateRevoked) and not await mandates.mandated(
            uow.conn, event.broker_id, event.account_id
        ):
            # No mandate left: the broker's open orders for the account are cancelled.
            for row in await projections.open_orders(uow.conn, event.broker_id, event.account_id):
                cancel = pb.CancelOrder(
                    order_id=row["order_id"], instrument_id=row["instrument_id"], broker_id=event.broker_id
                )
                await uow.send(cancel, topics.MATCHING_ORDERS, cancel.instrument_id, context)

    # --- engine ---

    async def on_sequenced(self, uow: UnitOfWork, envelope: Envelope, command: Message) -> None:
        """One input of an instrument's engine: decide on its book, record the journal."""
        inputs = pb.SubmitOrder | pb.CancelOrder | pb.ReplaceOrder | pb.ExpireOrders | pb.CloseSession | pb.OpenSession
        if not isinstance(command, inputs):
            raise DomainError("COMMAND_UNSUPPORTED", f"the engine does not take {envelope.type}")
        context = Context.following(envelope, "matching-engine")
        instrument = self.instruments.get(command.instrument_id)
        if instrument is None:
            # No book to number it: the refusal is a stream of its own, folded into `orders`.
            refused = refusal(
                command, DomainError("INSTRUMENT_UNKNOWN", f"no instrument {shown(command.instrument_id)}")
            )
            destination = [(topics.MATCHING_EVENTS, refused.instrument_id)]
            await uow.append(f"refused-{envelope.event_id}", 0, [(refused, destination)], context)
            return
        book = await uow.load(self.books, instrument.instrument_id)
        if (
            isinstance(command, pb.SubmitOrder)
            and is_identifier(command.order_id)
            and await projections.order_id_used(uow.conn, command.order_id)
        ):
            # Order ids are unique across all history and instruments: the projection's key.
            duplicate = DomainError("SEQUENCE_DUPLICATE_ID", f"order id {shown(command.order_id)} was used")
            events = book.refuse(command, duplicate)
        else:
            events = book.decide(command, instrument)
        destination = [(topics.MATCHING_EVENTS, instrument.instrument_id)]
        await uow.record(book, [(event, destination) for event in events], context)
        for event in events:
            # What a sell order no longer offers (cancelled, reduced without a trade, or
            # refused by the engine after intake reserved it) goes back to its holder. A
            # reused order id is not released: the reservation is the first order's.
            if isinstance(event, pb.OrderCancelled) and event.side == pb.SELL and event.remaining_quantity:
                order_id, account_id, released = event.order_id, event.account_id, event.remaining_quantity
            elif isinstance(event, pb.OrderReduced) and event.side == pb.SELL and event.quantity:
                order_id, account_id, released = event.order_id, event.account_id, event.quantity
            elif (
                isinstance(event, pb.OrderRejected)
                and event.order.side == pb.SELL
                and event.code != "SEQUENCE_DUPLICATE_ID"
                and event.order.quantity
            ):
                order_id, account_id, released = event.order.order_id, event.order.account_id, event.order.quantity
            else:
                continue
            release = registry_pb2.ReleaseReservation(reservation_id=order_id, quantity=released)
            await uow.send(release, topics.REGISTRY_COMMANDS, account_id, context)


def build(kernel: Kernel) -> Matching:
    return Matching(kernel, load())
