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
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from services.common import mandates, topics
from services.common.auth import Identity
from services.common.consumer import Handler
from services.common.envelope import Context
from services.common.errors import DomainError, NotFound
from services.common.eventstore import ConcurrencyError
from services.common.inputs import is_identifier
from services.common.repository import Repository
from services.common.runtime import Kernel
from services.common.serials import Interval
from services.common.statehash import ServiceState
from services.common.unit_of_work import UnitOfWork, UnitOfWorkFactory
from services.settlement.domain import adjustments, aef, cash, dvp
from services.settlement.domain.cash import CashAccount
from services.settlement.domain.checks import (
    check_account,
    check_authorization,
    check_blocks,
    check_cover,
    check_mandate,
    check_trade,
)
from services.settlement.domain.settlement import Phase, TradeSettlement
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
        self.cash_accounts: Repository[CashAccount] = Repository(
            CashAccount, cash.PREFIX, snapshot_every=settings.snapshot_every, cache_size=settings.aggregate_cache
        )
        self.unit_of_work = UnitOfWorkFactory(kernel.pool, project)
        self.state = ServiceState([self.settlements, self.cash_accounts], project, PROJECTIONS)

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return {
            topics.SETTLEMENT_COMMANDS: self.on_command,
            topics.MATCHING_EVENTS: self.on_matching,
            topics.COMPLIANCE_DECISIONS: self.on_decision,
            topics.REGISTRY_EVENTS: self.on_registry,
        }

    # --- handlers ---

    async def on_command(self, uow: UnitOfWork, envelope: Envelope, command: Message) -> None:
        """settlement.commands: matching's intake covers a buy order before it may rest."""
        if not isinstance(command, spb.ReserveCash | spb.ReleaseCash):
            raise DomainError("COMMAND_UNSUPPORTED", f"settlement does not take {envelope.type}")
        check_cover(command)  # before its ids name a stream
        context = Context.following(envelope, ACTOR)
        account = await uow.load(self.cash_accounts, cash.key(command.account_id, command.currency))
        if isinstance(command, spb.ReleaseCash):
            await self._book(uow, account, account.uncover(command.order_id, command.reason), context)
            return
        try:
            events = account.reserve(command.order_id, command.amount, command.quantity)
        except DomainError as error:
            # Answered as the registry answers a refused command: matching rejects the order.
            refused = CommandRejected(
                command_id=command.order_id,
                command_type=command.DESCRIPTOR.full_name,
                code=error.code,
                reason=error.reason,
                evidence=error.evidence,
            )
            sink = [(topics.SETTLEMENT_COVERS, command.account_id)]
            await uow.append(f"rejected-{envelope.event_id}", 0, [(refused, sink)], context)
            return
        await self._book(uow, account, events, context)

    async def on_matching(self, uow: UnitOfWork, envelope: Envelope, event: Message) -> None:
        """A trade to settle; a buy order that ended with units unfilled gives back its cover."""
        match event:
            case mpb.TradeExecuted():
                await self.on_trade(uow, envelope, event)
            case mpb.OrderCancelled(side=mpb.BUY) | mpb.OrderRejected() if is_identifier(event.order_id):
                await self._uncover(uow, event.order_id, type(event).__name__, Context.following(envelope, ACTOR))

    async def _uncover(self, uow: UnitOfWork, order_id: str, reason: str, context: Context) -> None:
        row = await uow.conn.fetchrow("SELECT account_id, currency FROM cash_covers WHERE order_id = $1", order_id)
        if row is not None:
            account = await uow.load(self.cash_accounts, cash.key(row["account_id"], row["currency"]))
            await self._book(uow, account, account.uncover(order_id, reason), context)

    async def on_trade(self, uow: UnitOfWork, envelope: Envelope, trade: mpb.TradeExecuted) -> None:
        check_trade(trade)  # before its ids name streams
        context = Context.following(envelope, ACTOR)
        settlement = await uow.load(self.settlements, trade.trade_id)
        buyer = await uow.load(self.cash_accounts, cash.key(trade.buyer_account_id, trade.currency))
        steps = dvp.opened(settlement, trade, buyer)
        await self._record(uow, settlement, steps, context, buyer)
        if not steps.settlement:
            return
        if steps.failed is not None:
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
        started = settlement.started
        if started is None:
            return
        buyer, seller = await self._parties(uow, started)
        steps = dvp.screened(settlement, decision, buyer, seller)
        await self._record(uow, settlement, steps, context, buyer, seller)
        if not steps.settlement:
            return
        if steps.failed is None:
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
                await self._adjust(uow, envelope, event, f"authorization:{event.authorization.authorization_id}")
            case rpb.AuthorizationChanged():
                loa = event.authorization
                check_authorization(loa)
                before = (await _authorizations(uow.conn, [loa.authorization_id])).get(loa.authorization_id)
                await uow.append(f"fact-{envelope.event_id}", 0, [(event, [])], context)
                more = adjustments.added(loa, before)
                if more is not None:
                    # Adjusted and reported as if the added tonnes were authorized on their own.
                    source = f"authorization:{loa.authorization_id}:v{event.version}"
                    await self._adjust(uow, envelope, rpb.AuthorizationRecorded(authorization=more), source)
            case rpb.AuthorizationRevoked():
                check_authorization(event)
                await uow.append(f"fact-{envelope.event_id}", 0, [(event, [])], context)
            case rpb.AccountOpened():
                check_account(event)
                await uow.append(f"fact-{envelope.event_id}", 0, [(event, [])], context)
            case rpb.MandateGranted() | rpb.MandateRevoked():
                check_mandate(event)
                await uow.append(f"fact-{envelope.event_id}", 0, [(event, [])], context)
            case rpb.UnitsIssued():
                check_blocks(adjustments.serial_blocks(event))
                await self._adjust(uow, envelope, event, f"issuance:{event.issuance_id}")
            case rpb.UnitsTransferred():
                check_blocks(adjustments.serial_blocks(event))
                delivered = is_identifier(event.transfer_id) and await self._transferred(uow, event, context)
                # A trade's delivery owes its adjustments under the trade's id.
                await self._adjust(
                    uow, envelope, event, event.transfer_id if delivered else f"transfer:{event.transfer_id}"
                )
            case rpb.UnitsRetired():
                check_blocks(adjustments.serial_blocks(event))
                await self._adjust(uow, envelope, event, f"retirement:{event.retirement_id}")
            case rpb.UnitsAllocated():
                check_blocks(adjustments.serial_blocks(event))
                await self._adjust(uow, envelope, event, f"allocation:{event.issuance_id}")
            case CommandRejected(command_type="tonne.v1.TransferUnits") if is_identifier(event.command_id):
                settlement = await uow.load(self.settlements, event.command_id)
                if settlement.started is not None:
                    buyer, _ = await self._parties(uow, settlement.started)
                    await self._record(uow, settlement, dvp.refused(settlement, event, buyer), context, buyer)

    async def _transferred(self, uow: UnitOfWork, transfer: rpb.UnitsTransferred, context: Context) -> bool:
        """Complete the settlement waiting for this delivery; whether one was."""
        settlement = await uow.load(self.settlements, transfer.transfer_id)
        started = settlement.started
        if started is None or settlement.phase is not Phase.TRANSFERRING:
            return False  # not a transfer a settlement is waiting for
        buyer, seller = await self._parties(uow, started)
        steps = dvp.delivered(settlement, transfer, buyer, seller)
        await self._record(uow, settlement, steps, context, buyer, seller)
        return bool(steps.settlement)

    async def _adjust(self, uow: UnitOfWork, envelope: Envelope, event: Message, source: str) -> None:
        """Record the corresponding adjustments the registry event owes (once per serial and
        side: the namespaces' runs are locked and read first), each on settlement.events and
        on its party's national-registry channel; and the AEF actions it makes."""
        blocks = adjustments.serial_blocks(event)
        loas = await _authorizations(uow.conn, sorted({b.attributes.authorization_id for b in blocks}))
        owed = adjustments.owed(event, source, loas, await _first_transferred(uow.conn, blocks))
        made = aef.actions(event, source, envelope.occurred_at.ToDatetime().year, owed)
        records: list[tuple[Message, list[tuple[str, str]]]] = [(e, _adjustment_destinations(e)) for e in owed]
        if made:
            records.append((spb.ItmoActionsRecorded(actions=made), []))
        if records:
            await uow.append(f"adjustments-{envelope.event_id}", 0, records, Context.following(envelope, ACTOR))

    async def _parties(self, uow: UnitOfWork, started: spb.SettlementStarted) -> tuple[CashAccount, CashAccount]:
        """The buyer's and the seller's cash accounts in the trade's currency (one lock order)."""
        keys = {
            side: cash.key(account, started.currency)
            for side, account in (("buyer", started.buyer_account_id), ("seller", started.seller_account_id))
        }
        loaded = {k: await uow.load(self.cash_accounts, k) for k in sorted(set(keys.values()))}
        return loaded[keys["buyer"]], loaded[keys["seller"]]

    async def _record(
        self,
        uow: UnitOfWork,
        settlement: TradeSettlement,
        steps: dvp.Steps,
        context: Context,
        buyer: CashAccount | None = None,
        seller: CashAccount | None = None,
    ) -> None:
        destinations = [(topics.SETTLEMENT_EVENTS, self.settlements.key(settlement.stream_id))]
        await uow.record(settlement, [(event, destinations) for event in steps.settlement], context)
        for account, events in ((buyer, steps.buyer), (seller, steps.seller)):
            if events:
                assert account is not None
                await self._book(uow, account, events, context)

    async def _book(self, uow: UnitOfWork, account: CashAccount, events: list[Message], context: Context) -> None:
        # A buy order's cover is matching's answer; every other movement is the ledger's news.
        await uow.record(account, [(e, [(_topic(e), account.account_id)]) for e in events], context)

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

    async def aef_report(self, party: str, year: int) -> dict[str, Any]:
        """The party's AEF report for `year`, from the projections: its authorizations
        (table 2), actions (table 3), holdings at year end (table 4), and the findings of
        the consistency checks (a report with findings is marked so)."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            history = [
                spb.ItmoAction.FromString(row["action"])
                for row in await conn.fetch(
                    "SELECT action FROM itmo_actions WHERE party = $1 AND year <= $2 ORDER BY year, action_id",
                    party,
                    year,
                )
            ]
            loas = await _authorizations(conn, sorted({a.authorization_id for a in history if a.authorization_id}))
            rows = await conn.fetch(
                # The adjustments the year's actions made that table 3 shows as actions: at a
                # first transfer abroad, and the acquirer's at use.
                "SELECT vintage, side, sum(a.quantity) AS quantity FROM adjustments a "
                "WHERE a.party = $1 AND a.trade_id = ANY($2::text[]) AND (a.side = $3 OR a.event = $4) "
                "GROUP BY vintage, side",
                party,
                sorted({a.source for a in history if a.year == year}),
                spb.ACQUIRING,
                rpb.AT_FIRST_INTERNATIONAL_TRANSFER,
            )
            # Tables 2 and 5: every authorization the party gave, whether or not it was used.
            terms = await conn.fetch(
                "SELECT * FROM authorizations WHERE host_party = $1 ORDER BY authorization_id", party
            )
            own = [_loa(row) for row in terms]
        ledger = {(row["vintage"], row["side"]): int(row["quantity"]) for row in rows}
        findings = aef.check(party, year, loas, history, ledger)
        this_year = [a for a in history if a.year == year]
        return {
            "party": party,
            "year": year,
            "submission": {"party": party, "reported_year": year, "format": "AEF (decision 6/CMA.4)"},
            "authorizations": [
                _json(loa) | {"version": row["version"], "revoked": row["revoked"]}
                for loa, row in zip(own, terms, strict=True)
            ],
            "actions": [_json(a) for a in this_year],
            "holdings": [
                {"namespace": namespace, "vintage": vintage, "quantity": quantity}
                for (namespace, vintage), quantity in sorted(aef.holdings(history).items())
            ],
            "authorized_entities": [
                {"authorization_id": loa.authorization_id, "entity": entity}
                for loa in own
                for entity in loa.authorized_entities
            ],
            "findings": [{"code": f.code, "detail": f.detail, "rows": list(f.rows)} for f in findings],
            "consistent": not findings,
        }

    async def ledger(self, party: str) -> list[dict[str, int]]:
        """The party's corresponding adjustments per vintage year: what it added as the
        first-transferring party, what it subtracted as the acquiring one, the net."""
        rows = await self.pool.fetch(
            "SELECT vintage, side, quantity FROM adjustment_ledger WHERE party = $1 ORDER BY vintage, side", party
        )
        years: dict[int, dict[str, int]] = {}
        for row in rows:
            year = years.setdefault(
                row["vintage"], {"vintage": row["vintage"], "first_transferring": 0, "acquiring": 0}
            )
            side = "first_transferring" if row["side"] == spb.FIRST_TRANSFERRING else "acquiring"
            year[side] = int(row["quantity"])
        return [year | {"net": year["first_transferring"] - year["acquiring"]} for year in years.values()]

    async def move_cash(self, movement: Movement, by: Identity) -> tuple[dict[str, object], bool]:
        """Record a deposit or withdrawal the operator confirms. Returns the account's
        balances after it and whether this call recorded it: the same reference with the
        same terms again changes nothing; with other terms it is refused (409)."""
        for attempt in range(3):
            try:
                async with self.unit_of_work() as uow:
                    if await _recorded(uow.conn, movement):
                        return await _after(uow.conn, movement), False
                    if not await uow.conn.fetchval(
                        "SELECT true FROM accounts WHERE account_id = $1", movement.account_id
                    ):
                        raise NotFound("ACCOUNT_UNKNOWN", f"no account {movement.account_id!r}")
                    account = await uow.load(self.cash_accounts, cash.key(movement.account_id, movement.currency))
                    decide = account.deposit if movement.kind == "deposit" else account.withdraw
                    events = decide(movement.movement_id, movement.amount, by.subject)
                    await self._book(uow, account, events, Context.new(actor=f"settlement-api:{by.subject}"))
                    return await _after(uow.conn, movement), True
            except (ConcurrencyError, asyncpg.UniqueViolationError):
                if attempt == 2:  # another request with this reference or on this account: look again
                    raise
        raise AssertionError("unreachable")

    async def cash(self, account_id: str, reader: Identity) -> dict[str, dict[str, int]] | None:
        """Balances per currency (available, reserved for resting buy orders, held for trades
        being settled) if `reader`
        is the operator or a broker with a mandate for the account; None otherwise (the
        same for an account that does not exist)."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            if not await self._may_see_cash(conn, account_id, reader):
                return None
            rows = await conn.fetch(
                "SELECT currency, available, reserved, held FROM cash_accounts WHERE account_id = $1 ORDER BY currency",
                account_id,
            )
        return {row["currency"]: {b: int(row[b]) for b in (cash.AVAILABLE, cash.RESERVED, cash.HELD)} for row in rows}

    async def statement(
        self, account_id: str, currency: str, reader: Identity, limit: int, after: int
    ) -> dict[str, Any] | None:
        """A page of the account's ledger legs in one currency, oldest first; None as `cash`."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            if not await self._may_see_cash(conn, account_id, reader):
                return None
            rows = await conn.fetch(
                "SELECT seq, posting_id, bucket, amount, trade_id FROM cash_legs "
                "WHERE account_id = $1 AND currency = $2 AND seq > $3 ORDER BY seq LIMIT $4",
                account_id,
                currency,
                after,
                limit + 1,
            )
        page = rows[:limit]
        items = [
            {
                "posting_id": r["posting_id"],
                "bucket": r["bucket"],
                "amount": int(r["amount"]),
                "trade_id": r["trade_id"],
            }
            for r in page
        ]
        return {"items": items, "next": page[-1]["seq"] if len(rows) > limit else None}

    @staticmethod
    async def _may_see_cash(conn: asyncpg.Connection, account_id: str, reader: Identity) -> bool:
        broker = _broker(reader)
        return reader.operator or (broker is not None and await mandates.mandated(conn, broker, account_id))


@dataclass(frozen=True)
class Movement:
    """A deposit or withdrawal as the operator confirms it (`movement_id`: its reference)."""

    kind: Literal["deposit", "withdrawal"]
    movement_id: str
    account_id: str
    currency: str
    amount: int

    def leg(self) -> cash.Leg:
        """Its leg on the participant's account."""
        event_kind = spb.CashDeposited if self.kind == "deposit" else spb.CashWithdrawn
        event = event_kind(
            movement_id=self.movement_id, account_id=self.account_id, currency=self.currency, amount=self.amount
        )
        [leg] = [leg for leg in cash.legs(event) if leg.account_id != cash.EXTERNAL]
        return leg


async def _recorded(conn: asyncpg.Connection, movement: Movement) -> bool:
    """Whether the movement's reference is recorded; refused when with other terms."""
    leg = movement.leg()
    rows = await conn.fetch(
        "SELECT account_id, currency, bucket, amount FROM cash_legs WHERE posting_id = $1 AND account_id <> $2",
        leg.posting_id,
        cash.EXTERNAL,
    )
    if rows and [(r["account_id"], r["currency"], r["bucket"], int(r["amount"])) for r in rows] != [leg[1:]]:
        raise DomainError(
            "CASH_MOVEMENT_ID_REUSED",
            f"{movement.kind} {movement.movement_id!r} was recorded with other terms",
            [],
            409,
        )
    return bool(rows)


async def _after(conn: asyncpg.Connection, movement: Movement) -> dict[str, object]:
    row = await conn.fetchrow(
        "SELECT available, reserved, held FROM cash_accounts WHERE account_id = $1 AND currency = $2",
        movement.account_id,
        movement.currency,
    )
    return {
        "movement_id": movement.movement_id,
        "account_id": movement.account_id,
        "currency": movement.currency,
        "amount": movement.amount,
        "available": int(row["available"]) if row else 0,
        "reserved": int(row["reserved"]) if row else 0,
        "held": int(row["held"]) if row else 0,
    }


def _json(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def _adjustment_destinations(event: Message) -> list[tuple[str, str]]:
    """Settlement's news, and the party's national registry if it has a channel."""
    assert isinstance(event, spb.CorrespondingAdjustmentApplied)
    found = [(topics.SETTLEMENT_EVENTS, event.party)]
    if event.party in topics.JURISDICTIONS:
        found.append((topics.registry_outbound(event.party), event.party))
    return found


def _topic(cash_event: Message) -> str:
    return topics.SETTLEMENT_COVERS if isinstance(cash_event, spb.CashReserved) else topics.SETTLEMENT_EVENTS


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
    return {row["authorization_id"]: _loa(row) for row in rows}


def _loa(row: asyncpg.Record) -> rpb.RecordAuthorization:
    return rpb.RecordAuthorization(
        authorization_id=row["authorization_id"],
        host_party=row["host_party"],
        quantity=row["quantity"],
        use=row["use"],
        first_transfer=row["first_transfer"],
        vintage_from=row["vintage_from"],
        vintage_to=row["vintage_to"],
        cooperative_approach=row["cooperative_approach"],
        authorized_entities=row["authorized_entities"],
    )


async def _first_transferred(conn: asyncpg.Connection, blocks: Sequence[rpb.SerialBlock]) -> dict[str, list[Interval]]:
    """The indexed runs that overlap the blocks, per namespace (locked until commit)."""
    found: dict[str, set[Interval]] = {}
    for namespace in sorted({b.namespace for b in blocks}):
        await lock_namespace(conn, namespace)
    for block in blocks:
        runs = await overlapping(conn, block.namespace, (block.start, block.end))
        found.setdefault(block.namespace, set()).update(runs)
    return {namespace: sorted(runs) for namespace, runs in found.items()}
