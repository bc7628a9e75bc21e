"""Settlement's service layer: trades in, screening, transfer, adjustments, cash."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg
from google.protobuf.message import Message

from services.common import topics
from services.common.application import Application
from services.common.consumer import Handler
from services.common.envelope import Context
from services.settlement.domain.settlement import Settlements
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb
from tonne.v1.envelope_pb2 import CommandRejected, Envelope

# Registry facts settlement keeps its own copy of, to fold them on recovery.
OBSERVED = "observed"


class Settlement(Application):
    book: Settlements

    def reset(self) -> None:
        self.book = Settlements()

    def apply(self, event: Message) -> None:
        self.book.apply(event)

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return {
            topics.MATCHING_EVENTS: self.on_trade,
            topics.COMPLIANCE_DECISIONS: self.on_decision,
            topics.REGISTRY_EVENTS: self.on_registry,
        }

    async def on_trade(self, conn: asyncpg.Connection, envelope: Envelope, event: Message) -> None:
        if not isinstance(event, mpb.TradeExecuted):
            return
        context = Context.following(envelope, "settlement")
        async with self.lock:
            events = self.book.start(event)
            await self._record(conn, event.trade_id, events, context)
        if events:
            screen = cpb.ScreenTransfer(
                request_id=event.trade_id,
                trade_id=event.trade_id,
                reservation_id=event.sell_order_id,
                from_account_id=event.seller_account_id,
                to_account_id=event.buyer_account_id,
                quantity=event.quantity,
            )
            await self.send(conn, screen, topics.COMPLIANCE_REQUESTS, event.trade_id, context)

    async def on_decision(self, conn: asyncpg.Connection, envelope: Envelope, decision: Message) -> None:
        if not isinstance(decision, cpb.ScreeningDecision):
            return
        context = Context.following(envelope, "settlement")
        async with self.lock:
            events = self.book.screened(decision)
            await self._record(conn, decision.trade_id, events, context)
        if not events:
            return
        started = self.book.trades[decision.trade_id].started
        if isinstance(events[0], spb.TransferInstructed):
            command: Message = rpb.TransferUnits(
                transfer_id=started.trade_id,
                reservation_id=started.reservation_id,
                to_account_id=started.buyer_account_id,
                quantity=started.quantity,
            )
        else:
            # Refused: the trade's units go back to the seller.
            command = rpb.ReleaseReservation(reservation_id=started.reservation_id, quantity=started.quantity)
        await self.send(conn, command, topics.REGISTRY_COMMANDS, started.seller_account_id, context)

    async def on_registry(self, conn: asyncpg.Connection, envelope: Envelope, event: Message) -> None:
        context = Context.following(envelope, "settlement")
        async with self.lock:
            match event:
                case rpb.AuthorizationRecorded():
                    await self.record(conn, OBSERVED, [(event, [])], context)
                case rpb.UnitsTransferred():
                    await self._record(conn, event.transfer_id, self.book.transferred(event), context)
                    if event.from_jurisdiction != event.to_jurisdiction:
                        await self.record(conn, OBSERVED, [(event, [])], context)
                case CommandRejected(command_type="tonne.v1.TransferUnits"):
                    await self._record(conn, event.command_id, self.book.refused(event), context)

    async def _record(self, conn: asyncpg.Connection, trade_id: str, events: list[Message], context: Context) -> None:
        if events:
            destinations = [(topics.SETTLEMENT_EVENTS, trade_id)]
            await self.record(conn, f"settlement-{trade_id}", [(e, destinations) for e in events], context)
