"""Settlement's service layer: trades in, screening, transfer, adjustments, cash.

Each trade is an aggregate (stream `settlement-<trade_id>`); registry facts it needs later
(authorizations, first international transfers of authorized units, accounts'
jurisdictions, brokers' mandates) are one-event streams `fact-<source event id>` folded
into the `authorizations`, `first_transferred`, `accounts` and `mandates` tables. Reads
come from the projections in `projections.py`, filtered by the caller's tenancy in SQL.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from services.common import mandates, topics
from services.common.auth import Identity
from services.common.consumer import Handler
from services.common.envelope import Context
from services.common.errors import DomainError
from services.common.repository import Repository
from services.common.runtime import Kernel
from services.common.serials import Interval
from services.common.statehash import ServiceState
from services.common.unit_of_work import UnitOfWork, UnitOfWorkFactory
from services.settlement.domain.adjustments import authorized_blocks
from services.settlement.domain.checks import (
    check_account,
    check_authorization,
    check_blocks,
    check_mandate,
    check_trade,
    is_identifier,
)
from services.settlement.domain.settlement import Balances, Phase, TradeSettlement
from services.settlement.projections import PROJECTIONS, lock_namespace, overlapping, project
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb
from tonne.v1.envelope_pb2 import CommandRejected, Envelope

ACTOR = "settlement"


class Settlement:
    def __init__(self, kernel: Kernel) -> None:
        settings = kernel.settings
        self.pool = kernel.pool
        self.auth = kernel.auth
        self.settlements: Repository[TradeSettlement] = Repository(
            TradeSettlement,
            "settlement-",
            snapshot_every=settings.snapshot_every,
            cache_size=settings.aggregate_cache,
        )
        self.unit_of_work = UnitOfWorkFactory(kernel.pool, project)
        self.state = ServiceState([self.settlements], project, PROJECTIONS)

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return {
            topics.MATCHING_EVENTS: self.on_trade,
            topics.COMPLIANCE_DECISIONS: self.on_decision,
            topics.REGISTRY_EVENTS: self.on_registry,
        }

    # --- handlers ---

    async def on_trade(self, uow: UnitOfWork, envelope: Envelope, trade: Message) -> None:
        if not isinstance(trade, mpb.TradeExecuted):
            return
        check_trade(trade)  # before its id names a stream
        context = Context.following(envelope, ACTOR)
        settlement = await uow.load(self.settlements, trade.trade_id)
        events = settlement.start(trade)
        await self._record(uow, settlement, events, context)
        if not events:
            return
        if isinstance(events[-1], spb.SettlementFailed):
            await self._release(uow, trade.sell_order_id, trade.quantity, trade.seller_account_id, context)
            return
        screen = cpb.ScreenTransfer(
            request_id=trade.trade_id,
            trade_id=trade.trade_id,
            reservation_id=trade.sell_order_id,
            from_account_id=trade.seller_account_id,
            to_account_id=trade.buyer_account_id,
            quantity=trade.quantity,
        )
        await uow.send(screen, topics.COMPLIANCE_REQUESTS, trade.trade_id, context)

    async def on_decision(self, uow: UnitOfWork, envelope: Envelope, decision: Message) -> None:
        if not isinstance(decision, cpb.ScreeningDecision) or not is_identifier(decision.trade_id):
            return  # no settlement has an id that is not an identifier
        context = Context.following(envelope, ACTOR)
        settlement = await uow.load(self.settlements, decision.trade_id)
        events = settlement.screened(decision)
        await self._record(uow, settlement, events, context)
        started = settlement.started
        if not events or started is None:
            return
        if isinstance(events[0], spb.TransferInstructed):
            command = rpb.TransferUnits(
                transfer_id=started.trade_id,
                reservation_id=started.reservation_id,
                to_account_id=started.buyer_account_id,
                quantity=started.quantity,
            )
            await uow.send(command, topics.REGISTRY_COMMANDS, started.seller_account_id, context)
        else:
            await self._release(uow, started.reservation_id, started.quantity, started.seller_account_id, context)

    async def on_registry(self, uow: UnitOfWork, envelope: Envelope, event: Message) -> None:
        context = Context.following(envelope, ACTOR)
        match event:
            case rpb.AuthorizationRecorded():
                check_authorization(event.authorization)
                await uow.append(f"fact-{envelope.event_id}", 0, [(event, [])], context)
            case rpb.AccountOpened():
                check_account(event)
                await uow.append(f"fact-{envelope.event_id}", 0, [(event, [])], context)
            case rpb.MandateGranted() | rpb.MandateRevoked():
                check_mandate(event)
                await uow.append(f"fact-{envelope.event_id}", 0, [(event, [])], context)
            case rpb.UnitsTransferred():
                itmo = authorized_blocks(event)
                check_blocks(itmo)
                if is_identifier(event.transfer_id):
                    await self._transferred(uow, event, context)
                if itmo:
                    # Remember which serials crossed a border, after deciding on this transfer.
                    await uow.append(f"fact-{envelope.event_id}", 0, [(event, [])], context)
            case CommandRejected(command_type="tonne.v1.TransferUnits") if is_identifier(event.command_id):
                settlement = await uow.load(self.settlements, event.command_id)
                await self._record(uow, settlement, settlement.refused(event), context)

    async def _transferred(self, uow: UnitOfWork, transfer: rpb.UnitsTransferred, context: Context) -> None:
        settlement = await uow.load(self.settlements, transfer.transfer_id)
        started = settlement.started
        if started is None or settlement.phase is not Phase.TRANSFERRING:
            return  # not a transfer a settlement is waiting for
        blocks = authorized_blocks(transfer)
        authorizations = await _authorizations(uow.conn, sorted({b.attributes.authorization_id for b in blocks}))
        first_transferred = await _first_transferred(uow.conn, blocks)
        balances = await _balances(uow.conn, started.currency, (started.buyer_account_id, started.seller_account_id))
        events = settlement.transferred(transfer, authorizations, first_transferred, balances)
        await self._record(uow, settlement, events, context)

    async def _record(
        self, uow: UnitOfWork, settlement: TradeSettlement, events: list[Message], context: Context
    ) -> None:
        destinations = [(topics.SETTLEMENT_EVENTS, self.settlements.key(settlement.stream_id))]
        await uow.record(settlement, [(event, destinations) for event in events], context)

    async def _release(
        self, uow: UnitOfWork, reservation_id: str, quantity: int, seller_account_id: str, context: Context
    ) -> None:
        """The trade will not settle: its units go back to the seller."""
        command = rpb.ReleaseReservation(reservation_id=reservation_id, quantity=quantity)
        await uow.send(command, topics.REGISTRY_COMMANDS, seller_account_id, context)

    # --- reads (projections only; each costs O(page)) ---

    async def view(self, trade_id: str, reader: Identity) -> dict[str, Any] | None:
        """The settlement if `reader` may see it (the operator, a broker of either side, a
        regulator of either account's jurisdiction); None otherwise, as if it did not exist."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            row = await conn.fetchrow(
                "SELECT * FROM settlements s WHERE s.trade_id = $1 AND ($2 "
                "OR s.buyer_broker_id = $3::text OR s.seller_broker_id = $3::text "
                "OR EXISTS (SELECT 1 FROM accounts a WHERE a.account_id IN (s.buyer_account_id, s.seller_account_id) "
                "AND a.jurisdiction = ANY($4::text[])))",
                trade_id,
                reader.operator,
                _broker(reader),
                sorted(reader.jurisdictions("regulator")),
            )
            if row is None:
                return None
            adjustments = await conn.fetch(
                "SELECT * FROM adjustments WHERE trade_id = $1 ORDER BY adjustment_id", trade_id
            )
        view = {key: row[key] for key in _VIEW_COLUMNS}
        view["corresponding_adjustments"] = [_adjustment(a) for a in adjustments]
        return view

    async def adjustments(self, party: str | None, limit: int, after: str | None) -> dict[str, Any]:
        """A page of adjustments in (trade, adjustment id) order, optionally of one party."""
        trade_id, adjustment_id = _decode_cursor(after) if after else ("", "")
        if party is None:
            rows = await self.pool.fetch(
                "SELECT * FROM adjustments WHERE (trade_id, adjustment_id) > ($1, $2) "
                "ORDER BY trade_id, adjustment_id LIMIT $3",
                trade_id,
                adjustment_id,
                limit + 1,
            )
        else:
            rows = await self.pool.fetch(
                "SELECT * FROM adjustments WHERE party = $1 AND (trade_id, adjustment_id) > ($2, $3) "
                "ORDER BY trade_id, adjustment_id LIMIT $4",
                party,
                trade_id,
                adjustment_id,
                limit + 1,
            )
        page = rows[:limit]
        more = len(rows) > limit
        return {
            "items": [_adjustment(row) for row in page],
            "next": _encode_cursor(page[-1]["trade_id"], page[-1]["adjustment_id"]) if more else None,
        }

    async def cash(self, account_id: str, reader: Identity) -> dict[str, int] | None:
        """Balances per currency if `reader` is the operator or a broker with a mandate for
        the account; None otherwise (the same for an account that does not exist)."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            broker = _broker(reader)
            allowed = reader.operator or (broker is not None and await mandates.mandated(conn, broker, account_id))
            if not allowed:
                return None
            rows = await conn.fetch(
                "SELECT currency, balance FROM cash_balances WHERE account_id = $1 ORDER BY currency", account_id
            )
        return {row["currency"]: row["balance"] for row in rows}


def _broker(reader: Identity) -> str | None:
    """The reader's broker id when it acts as a broker (None matches no row)."""
    return reader.broker_id if reader.holds("broker") and is_identifier(reader.broker_id) else None


_VIEW_COLUMNS = (
    "trade_id",
    "phase",
    "failure",
    "instrument_id",
    "quantity",
    "price",
    "currency",
    "seller_account_id",
    "buyer_account_id",
)


def _adjustment(row: asyncpg.Record) -> dict[str, object]:
    """The adjustment as its event's JSON, as the API has always shown it."""
    event = spb.CorrespondingAdjustmentApplied(
        adjustment_id=row["adjustment_id"],
        trade_id=row["trade_id"],
        party=row["party"],
        side=row["side"],
        vintage=row["vintage"],
        quantity=row["quantity"],
        authorization_id=row["authorization_id"],
    )
    return MessageToDict(event, preserving_proto_field_name=True)


def _encode_cursor(trade_id: str, adjustment_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([trade_id, adjustment_id]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise DomainError("REQUEST_INVALID", "`after` is not a cursor this API issued") from exc
    if not (isinstance(key, list) and len(key) == 2 and all(isinstance(part, str) for part in key)):
        raise DomainError("REQUEST_INVALID", "`after` is not a cursor this API issued")
    return key[0], key[1]


async def _authorizations(conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, rpb.RecordAuthorization]:
    if not ids:
        return {}
    rows = await conn.fetch("SELECT * FROM authorizations WHERE authorization_id = ANY($1::text[])", list(ids))
    return {
        row["authorization_id"]: rpb.RecordAuthorization(
            authorization_id=row["authorization_id"],
            host_party=row["host_party"],
            quantity=row["quantity"],
            use=row["use"],
            first_transfer=row["first_transfer"],
            vintage_from=row["vintage_from"],
            vintage_to=row["vintage_to"],
        )
        for row in rows
    }


async def _first_transferred(conn: asyncpg.Connection, blocks: Sequence[rpb.SerialBlock]) -> dict[str, list[Interval]]:
    """The indexed runs that overlap the blocks, per namespace (locked until commit)."""
    found: dict[str, set[Interval]] = {}
    for namespace in sorted({b.namespace for b in blocks}):
        await lock_namespace(conn, namespace)
    for block in blocks:
        runs = await overlapping(conn, block.namespace, (block.start, block.end))
        found.setdefault(block.namespace, set()).update(runs)
    return {namespace: sorted(runs) for namespace, runs in found.items()}


async def _balances(conn: asyncpg.Connection, currency: str, accounts: Sequence[str]) -> Balances:
    """Current balances, row-locked so a concurrent booking cannot pass the range check too."""
    rows = await conn.fetch(
        "SELECT account_id, balance FROM cash_balances WHERE currency = $1 AND account_id = ANY($2::text[]) "
        "ORDER BY account_id FOR UPDATE",
        currency,
        sorted(set(accounts)),
    )
    return {(row["account_id"], currency): row["balance"] for row in rows}
