"""Matching's read models: the `orders`, `trades` and `bars` tables, folded from the
engine journal in the recording transaction (and by replay), the `mandates` folded from
the registry's mandate facts, and the paged reads the API serves."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
from google.protobuf.message import Message

from services.common import mandates
from services.common.errors import DomainError
from services.common.statehash import Projection
from services.matching.bars import INTERVALS, bar_starts
from services.matching.domain.engine import nanoseconds
from tonne.v1 import matching_pb2 as pb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1.envelope_pb2 import Envelope

PROJECTIONS = (
    Projection(
        "orders",
        (
            "order_id",
            "instrument_id",
            "broker_id",
            "account_id",
            "side",
            "price",
            "quantity",
            "filled",
            "status",
            "client_order_id",
            "engine_sequence",
            "reject_code",
            "reject_reason",
            "reduced",
            "expire_ns",
        ),
        ("order_id",),
    ),
    Projection(
        "trades",
        (
            "instrument_id",
            "version",
            "trade_id",
            "engine_sequence",
            "price",
            "quantity",
            "currency",
            "aggressor",
            "buy_order_id",
            "sell_order_id",
            "buyer_account_id",
            "seller_account_id",
            "buyer_broker_id",
            "seller_broker_id",
        ),
        ("instrument_id", "version"),
    ),
    Projection(
        "bars",
        # numeric as text: the hash's canonical form has no decimals, and these are integral.
        (
            "instrument_id",
            "interval",
            "start_s",
            "open",
            "high",
            "low",
            "close",
            "volume::text",
            "notional::text",
            "trades",
        ),
        ("instrument_id", "interval", "start_s"),
    ),
    mandates.PROJECTION,
)

# A trade into each of its bars (one row per interval), in the statement that records it:
# the first trade of a bar opens it, each later one (in journal order) closes it.
_BARS = (
    "bar AS (INSERT INTO bars AS b (instrument_id, interval, start_s, open, high, low, close, volume, notional, "
    "trades) SELECT $1, i.interval, i.start_s, $5::bigint, $5::bigint, $5::bigint, $5::bigint, $6::bigint::numeric, "
    "$5::bigint::numeric * $6::bigint, 1 FROM unnest($15::text[], $16::bigint[]) AS i(interval, start_s) "
    "ON CONFLICT (instrument_id, interval, start_s) DO UPDATE SET high = greatest(b.high, EXCLUDED.high), "
    "low = least(b.low, EXCLUDED.low), close = EXCLUDED.close, volume = b.volume + EXCLUDED.volume, "
    "notional = b.notional + EXCLUDED.notional, trades = b.trades + 1)"
)

_INSERT_ORDER = (
    "INSERT INTO orders (order_id, instrument_id, broker_id, account_id, side, price, quantity, filled, status, "
    "client_order_id, engine_sequence, reject_code, reject_reason, expire_ns) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12, $13)"
)


async def _insert_order(
    conn: asyncpg.Connection, o: pb.SubmitOrder, status: str, sequence: int, refused: tuple[str, str] | None = None
) -> None:
    code, reason = refused or (None, None)
    await conn.execute(
        _INSERT_ORDER + " ON CONFLICT (order_id) DO NOTHING",
        o.order_id,
        o.instrument_id,
        o.broker_id,
        o.account_id,
        o.side,
        o.price,
        o.quantity,
        status,
        o.client_order_id,
        sequence,
        code,
        reason,
        nanoseconds(o.expire_at) if o.HasField("expire_at") else None,
    )


async def project(conn: asyncpg.Connection, envelope: Envelope, event: Message) -> None:
    match event:
        case pb.OrderAccepted():
            await _insert_order(conn, event.order, "resting", event.engine_sequence)
        case pb.OrderRejected() if event.HasField("order"):
            # A reused id is refused without touching the order that holds it.
            await _insert_order(conn, event.order, "rejected", event.engine_sequence, (event.code, event.reason))
        case pb.TradeExecuted():
            # Its bars by its journal time, never the clock now (replay folds the same).
            intervals, starts = bar_starts(envelope.occurred_at.seconds)
            await conn.execute(
                f"WITH {_BARS} INSERT INTO trades (instrument_id, version, trade_id, engine_sequence, price, quantity, "
                "currency, aggressor, buy_order_id, sell_order_id, buyer_account_id, seller_account_id, "
                "buyer_broker_id, seller_broker_id) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                event.instrument_id,
                envelope.aggregate_sequence,
                event.trade_id,
                event.engine_sequence,
                event.price,
                event.quantity,
                event.currency,
                event.aggressor,
                event.buy_order_id,
                event.sell_order_id,
                event.buyer_account_id,
                event.seller_account_id,
                event.buyer_broker_id,
                event.seller_broker_id,
                intervals,
                starts,
            )
            await conn.execute(
                "UPDATE orders SET filled = filled + $2, "
                "status = CASE WHEN filled + $2 + reduced = quantity THEN 'filled' ELSE status END "
                "WHERE order_id = ANY($1::text[])",
                [event.buy_order_id, event.sell_order_id],
                event.quantity,
            )
        case pb.OrderCancelled():
            await conn.execute("UPDATE orders SET status = 'cancelled' WHERE order_id = $1", event.order_id)
        case pb.OrderReduced():
            # Taken off without a trade; an order with nothing left open is done.
            await conn.execute(
                "UPDATE orders SET reduced = reduced + $2, "
                "status = CASE WHEN $3 = 0 THEN 'cancelled' ELSE status END WHERE order_id = $1",
                event.order_id,
                event.quantity,
                event.remaining_quantity,
            )
        case pb.OrderReplaced():
            # A new price and open quantity: what it no longer offers counts as reduced.
            await conn.execute(
                "UPDATE orders SET price = $2, reduced = quantity - filled - $3 WHERE order_id = $1",
                event.order_id,
                event.price,
                event.quantity,
            )
        case rpb.MandateGranted() | rpb.MandateRevoked():
            await mandates.fold(conn, event)


async def open_orders(conn: asyncpg.Connection, broker_id: str, account_id: str) -> list[asyncpg.Record]:
    """The broker's orders for the account that may still rest: sequenced by intake and
    not (yet) known to the engine as filled, cancelled or rejected. Sells still waiting
    for their reservation are checked again when it comes back."""
    return list(
        await conn.fetch(
            "SELECT i.order_id, i.instrument_id FROM intake_orders i LEFT JOIN orders o ON o.order_id = i.order_id "
            "WHERE i.broker_id = $1 AND i.account_id = $2 AND i.status = 'submitted' "
            "AND (o.status IS NULL OR o.status = 'resting') ORDER BY i.created_at, i.order_id",
            broker_id,
            account_id,
        )
    )


async def order_id_used(conn: asyncpg.Connection, order_id: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM orders WHERE order_id = $1)", order_id))


async def resting_order(conn: asyncpg.Connection, order_id: str, broker_id: str) -> asyncpg.Record | None:
    """The engine's view of the broker's order, with the price intake covered it at."""
    return await conn.fetchrow(
        "SELECT o.instrument_id, o.status, o.side, i.price AS covered_price FROM orders o "
        "JOIN intake_orders i ON i.order_id = o.order_id WHERE o.order_id = $1 AND o.broker_id = $2",
        order_id,
        broker_id,
    )


# --- reads for the API: one page, O(page) ---


@dataclass(frozen=True)
class Fill:
    trade_id: str
    price: int
    quantity: int


@dataclass(frozen=True)
class OrderRow:
    """An order as its broker sees it: intake's record, the engine's status over it."""

    order_id: str
    client_order_id: str
    instrument_id: str
    side: int
    price: int
    quantity: int
    account_id: str
    status: str  # reserving | rejected | pending | resting | filled | cancelled
    filled: int
    reject_code: str | None
    reject_reason: str | None
    fills: list[Fill] = field(default_factory=list)


# The engine's row joins only the order intake placed for this broker and instrument.
_ORDER_VIEW = (
    "SELECT i.order_id, i.client_order_id, i.instrument_id, i.side, i.price, i.quantity, i.account_id, "
    "i.status AS intake_status, i.reject_code AS intake_code, i.reject_reason AS intake_reason, "
    "o.status, o.filled, o.reject_code, o.reject_reason "
    "FROM intake_orders i LEFT JOIN orders o "
    "ON o.order_id = i.order_id AND o.broker_id = i.broker_id AND o.instrument_id = i.instrument_id "
)


def _order_row(row: asyncpg.Record) -> OrderRow:
    if row["status"] is not None:
        status, filled, code, reason = row["status"], row["filled"], row["reject_code"], row["reject_reason"]
    else:
        # Not through the engine yet: "submitted" orders are sequenced and on their way.
        status = "pending" if row["intake_status"] == "submitted" else row["intake_status"]
        filled, code, reason = 0, row["intake_code"], row["intake_reason"]
    return OrderRow(
        order_id=row["order_id"],
        client_order_id=row["client_order_id"],
        instrument_id=row["instrument_id"],
        side=row["side"],
        price=row["price"],
        quantity=row["quantity"],
        account_id=row["account_id"],
        status=status,
        filled=filled,
        reject_code=code,
        reject_reason=reason,
    )


async def _with_fills(conn: asyncpg.Connection, orders: list[OrderRow]) -> list[OrderRow]:
    if not orders:
        return orders
    rows = await conn.fetch(
        "SELECT order_id, trade_id, price, quantity FROM ("
        " SELECT buy_order_id AS order_id, trade_id, price, quantity, instrument_id, version FROM trades"
        " WHERE buy_order_id = ANY($1::text[])"
        " UNION ALL"
        " SELECT sell_order_id, trade_id, price, quantity, instrument_id, version FROM trades"
        " WHERE sell_order_id = ANY($1::text[])"
        ") f ORDER BY instrument_id, version",
        [o.order_id for o in orders],
    )
    by_id = {order.order_id: order for order in orders}
    for row in rows:
        by_id[row["order_id"]].fills.append(Fill(row["trade_id"], row["price"], row["quantity"]))
    return orders


async def broker_order(conn: asyncpg.Connection, broker_id: str, order_id: str) -> OrderRow | None:
    row = await conn.fetchrow(_ORDER_VIEW + "WHERE i.broker_id = $1 AND i.order_id = $2", broker_id, order_id)
    return None if row is None else (await _with_fills(conn, [_order_row(row)]))[0]


async def broker_orders(
    conn: asyncpg.Connection, broker_id: str, limit: int, after: str | None
) -> tuple[list[OrderRow], str | None]:
    """The broker's orders, oldest first, after the order `after`; and the next cursor."""
    if after is None:
        rows = await conn.fetch(
            _ORDER_VIEW + "WHERE i.broker_id = $1 ORDER BY i.created_at, i.order_id LIMIT $2", broker_id, limit + 1
        )
    else:
        cursor = await conn.fetchrow(
            "SELECT created_at, order_id FROM intake_orders WHERE broker_id = $1 AND order_id = $2", broker_id, after
        )
        if cursor is None:
            raise DomainError("CURSOR_UNKNOWN", "`after` must be an order id from a previous page")
        rows = await conn.fetch(
            _ORDER_VIEW + "WHERE i.broker_id = $1 AND (i.created_at, i.order_id) > ($2, $3) "
            "ORDER BY i.created_at, i.order_id LIMIT $4",
            broker_id,
            cursor["created_at"],
            cursor["order_id"],
            limit + 1,
        )
    page = await _with_fills(conn, [_order_row(row) for row in rows[:limit]])
    return page, page[-1].order_id if len(rows) > limit else None


async def trades(
    conn: asyncpg.Connection, instrument_id: str | None, limit: int, after: str | None
) -> tuple[list[asyncpg.Record], str | None]:
    """Trades in (instrument, journal) order after the trade `after`; and the next cursor."""
    start: tuple[str, int] = ("", 0)
    if after is not None:
        cursor = await conn.fetchrow("SELECT instrument_id, version FROM trades WHERE trade_id = $1", after)
        if cursor is None:
            raise DomainError("CURSOR_UNKNOWN", "`after` must be a trade id from a previous page")
        start = (cursor["instrument_id"], cursor["version"])
    columns = (
        "trade_id, instrument_id, price, quantity, currency, aggressor, buy_order_id, sell_order_id, engine_sequence"
    )
    if instrument_id is None:
        rows = await conn.fetch(
            f"SELECT {columns} FROM trades WHERE (instrument_id, version) > ($1, $2) "
            "ORDER BY instrument_id, version LIMIT $3",
            *start,
            limit + 1,
        )
    else:
        rows = await conn.fetch(
            f"SELECT {columns} FROM trades WHERE instrument_id = $1 AND (instrument_id, version) > ($2, $3) "
            "ORDER BY instrument_id, version LIMIT $4",
            instrument_id,
            *start,
            limit + 1,
        )
    page = rows[:limit]
    return page, page[-1]["trade_id"] if len(rows) > limit else None


async def broker_mandates(
    conn: asyncpg.Connection, broker_id: str, limit: int, after: str | None
) -> tuple[list[asyncpg.Record], str | None]:
    """The broker's mandates in (account, mandate id) order; `after` is a mandate id."""
    start = ("", "")
    if after is not None:
        cursor = await conn.fetchrow(
            "SELECT account_id, mandate_id FROM mandates WHERE broker_id = $1 AND mandate_id = $2", broker_id, after
        )
        if cursor is None:
            raise DomainError("CURSOR_UNKNOWN", "`after` must be a mandate id from a previous page")
        start = (cursor["account_id"], cursor["mandate_id"])
    rows = await conn.fetch(
        "SELECT mandate_id, account_id, jurisdiction FROM mandates "
        "WHERE broker_id = $1 AND (account_id, mandate_id) > ($2, $3) ORDER BY account_id, mandate_id LIMIT $4",
        broker_id,
        *start,
        limit + 1,
    )
    page = rows[:limit]
    return page, page[-1]["mandate_id"] if len(rows) > limit else None


@dataclass(frozen=True)
class Bar:
    start_s: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    notional: int
    trades: int


def _bar(row: asyncpg.Record) -> Bar:
    return Bar(
        start_s=row["start_s"],
        open=row["open"],
        high=row["high"],
        low=row["low"],
        close=row["close"],
        volume=int(row["volume"]),  # integral numeric: exact
        notional=int(row["notional"]),
        trades=row["trades"],
    )


_BAR_COLUMNS = "start_s, open, high, low, close, volume, notional, trades"


async def bars(
    conn: asyncpg.Connection, instrument_id: str, interval: str, limit: int, after: int | None
) -> tuple[list[Bar], int | None]:
    """The instrument's bars of `interval`, oldest first, starting after `after`
    (seconds since the epoch); and the next cursor (the last bar's start)."""
    assert interval in INTERVALS
    rows = await conn.fetch(
        f"SELECT {_BAR_COLUMNS} FROM bars WHERE instrument_id = $1 AND interval = $2 AND start_s > $3 "
        "ORDER BY start_s LIMIT $4",
        instrument_id,
        interval,
        -1 if after is None else after,
        limit + 1,
    )
    page = [_bar(row) for row in rows[:limit]]
    return page, page[-1].start_s if len(rows) > limit else None


async def last_daily_bar(conn: asyncpg.Connection, instrument_id: str, before_s: int) -> Bar | None:
    """The instrument's latest 1d bar that starts before `before_s`: the last session
    completed by then (the instruments trade continuously, a session is a UTC day)."""
    row = await conn.fetchrow(
        f"SELECT {_BAR_COLUMNS} FROM bars WHERE instrument_id = $1 AND interval = '1d' AND start_s < $2 "
        "ORDER BY start_s DESC LIMIT 1",
        instrument_id,
        before_s,
    )
    return None if row is None else _bar(row)
