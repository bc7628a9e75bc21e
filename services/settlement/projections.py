"""Settlement's projections: SQL tables folded from every recorded event (live, in the
recording transaction; in replay, over the whole event table into a fresh schema)."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg
from google.protobuf.message import Message

from services.common import mandates
from services.common.inputs import INT64_MAX
from services.common.serials import Interval, absorb
from services.common.statehash import Projection
from services.settlement.domain.cash import Leg, legs
from services.settlement.domain.settlement import Phase
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb
from tonne.v1.envelope_pb2 import Envelope

PROJECTIONS = (
    Projection(
        "settlements",
        (
            "trade_id",
            "instrument_id",
            "seller_account_id",
            "buyer_account_id",
            "reservation_id",
            "quantity",
            "price",
            "currency",
            "phase",
            "failure",
            "buyer_broker_id",
            "seller_broker_id",
        ),
        ("trade_id",),
    ),
    Projection("accounts", ("account_id", "jurisdiction"), ("account_id",)),
    mandates.PROJECTION,
    Projection(
        "adjustments",
        ("trade_id", "adjustment_id", "party", "side", "vintage", "quantity", "authorization_id", "event"),
        ("trade_id", "adjustment_id"),
    ),
    Projection("itmo_actions", ("action_id", "party", "year", "action"), ("action_id",)),
    Projection("adjustment_ledger", ("party", "vintage", "side", "quantity::text"), ("party", "vintage", "side")),
    # numeric has no canonical form in the hash: its text has.
    Projection(
        "cash_accounts", ("account_id", "currency", "available::text", "held::text"), ("account_id", "currency")
    ),
    Projection("cash_covers", ("order_id", "account_id", "currency"), ("order_id",)),
    Projection(
        "cash_legs",
        ("posting_id", "account_id", "currency", "bucket", "amount::text", "trade_id"),
        ("posting_id", "account_id", "currency", "bucket"),
    ),
    Projection(
        "authorizations",
        (
            "authorization_id",
            "host_party",
            "quantity",
            "use",
            "first_transfer",
            "vintage_from",
            "vintage_to",
            "cooperative_approach",
            "authorized_entities::text",
            "version",
            "revoked",
        ),
        ("authorization_id",),
    ),
    Projection("first_transferred", ("namespace", "start", '"end"'), ("namespace", "start")),
)


async def project(conn: asyncpg.Connection, envelope: Envelope, event: Message) -> None:
    match event:
        case spb.SettlementStarted():
            await conn.execute(
                "INSERT INTO settlements (trade_id, instrument_id, seller_account_id, buyer_account_id, "
                "reservation_id, quantity, price, currency, phase, buyer_broker_id, seller_broker_id) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                event.trade_id,
                event.instrument_id,
                event.seller_account_id,
                event.buyer_account_id,
                event.reservation_id,
                event.quantity,
                event.price,
                event.currency,
                Phase.SCREENING.value,
                event.buyer_broker_id,
                event.seller_broker_id,
            )
        case spb.TransferInstructed():
            await _set_phase(conn, event.trade_id, Phase.TRANSFERRING)
        case spb.CorrespondingAdjustmentApplied():
            if event.side == spb.FIRST_TRANSFERRING:  # its serials owe nothing on this side again
                for namespace in sorted({s.namespace for s in event.serials}):
                    await lock_namespace(conn, namespace)
                for serial in event.serials:
                    await mark_first_transferred(conn, serial.namespace, (serial.start, serial.end))
            await conn.execute(
                "WITH adjusted AS (INSERT INTO adjustments (trade_id, adjustment_id, party, side, vintage, quantity, "
                "authorization_id, event) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)) "
                "INSERT INTO adjustment_ledger AS l (party, vintage, side, quantity) VALUES ($3, $5, $4, $6) "
                "ON CONFLICT (party, vintage, side) DO UPDATE SET quantity = l.quantity + EXCLUDED.quantity",
                event.trade_id,
                event.adjustment_id,
                event.party,
                event.side,
                event.vintage,
                event.quantity,
                event.authorization_id,
                event.event,
            )
        case spb.ItmoActionsRecorded():
            await conn.execute(
                "INSERT INTO itmo_actions (action_id, party, year, action) SELECT * FROM unnest($1::text[], "
                "$2::text[], $3::int[], $4::bytea[])",
                [a.action_id for a in event.actions],
                [a.party for a in event.actions],
                [a.year for a in event.actions],
                [a.SerializeToString(deterministic=True) for a in event.actions],
            )
        case spb.SettlementCompleted():
            await _set_phase(conn, event.trade_id, Phase.SETTLED)
        case (
            spb.CashDeposited()
            | spb.CashWithdrawn()
            | spb.CashReserved()
            | spb.CashReservationReleased()
            | spb.CashHeld()
            | spb.CashHoldReleased()
            | spb.CashPaid()
            | spb.CashReceived()
        ):
            await _post(conn, legs(event), getattr(event, "trade_id", ""))
            if isinstance(event, spb.CashReserved):
                # Which account covers a buy order: what its cancellation must find.
                await conn.execute(
                    "INSERT INTO cash_covers (order_id, account_id, currency) VALUES ($1, $2, $3)",
                    event.order_id,
                    event.account_id,
                    event.currency,
                )
        case spb.SettlementFailed():
            await _set_phase(conn, event.trade_id, Phase.FAILED, f"{event.code}: {event.reason}")
        case rpb.AuthorizationRevoked():
            await conn.execute(
                "UPDATE authorizations SET revoked = true WHERE authorization_id = $1", event.authorization_id
            )
        case rpb.AuthorizationRecorded() | rpb.AuthorizationChanged():
            a = event.authorization
            # The latest terms of an LoA stand.
            await conn.execute(
                "INSERT INTO authorizations (authorization_id, host_party, quantity, use, first_transfer, "
                "vintage_from, vintage_to, cooperative_approach, authorized_entities, version) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
                "ON CONFLICT (authorization_id) DO UPDATE SET host_party = $2, quantity = $3, use = $4, "
                "first_transfer = $5, vintage_from = $6, vintage_to = $7, cooperative_approach = $8, "
                "authorized_entities = $9, version = $10",
                a.authorization_id,
                a.host_party,
                a.quantity,
                a.use,
                a.first_transfer,
                a.vintage_from,
                a.vintage_to,
                a.cooperative_approach,
                list(a.authorized_entities),
                event.version if isinstance(event, rpb.AuthorizationChanged) else 1,
            )
        case rpb.AccountOpened():
            await conn.execute(
                "INSERT INTO accounts (account_id, jurisdiction) VALUES ($1, $2) "
                "ON CONFLICT (account_id) DO UPDATE SET jurisdiction = $2",
                event.account_id,
                event.jurisdiction,
            )
        case rpb.MandateGranted() | rpb.MandateRevoked():
            await mandates.fold(conn, event)


async def _post(conn: asyncpg.Connection, posted: list[Leg], trade_id: str) -> None:
    """A posting's legs and the balances they change, in one statement."""
    await conn.execute(
        "WITH legs AS (INSERT INTO cash_legs (posting_id, account_id, currency, bucket, amount, trade_id) "
        "SELECT p, a, c, b, m, $6 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[]) "
        "AS l(p, a, c, b, m) RETURNING account_id, currency, bucket, amount) "
        "INSERT INTO cash_accounts AS t (account_id, currency, available, reserved, held) "
        "SELECT account_id, currency, coalesce(sum(amount) FILTER (WHERE bucket = 'available'), 0), "
        "coalesce(sum(amount) FILTER (WHERE bucket = 'reserved'), 0), "
        "coalesce(sum(amount) FILTER (WHERE bucket = 'held'), 0) FROM legs GROUP BY account_id, currency "
        "ON CONFLICT (account_id, currency) DO UPDATE SET available = t.available + EXCLUDED.available, "
        "reserved = t.reserved + EXCLUDED.reserved, held = t.held + EXCLUDED.held",
        [leg.posting_id for leg in posted],
        [leg.account_id for leg in posted],
        [leg.currency for leg in posted],
        [leg.bucket for leg in posted],
        [leg.amount for leg in posted],
        trade_id,
    )


async def _set_phase(conn: asyncpg.Connection, trade_id: str, phase: Phase, failure: str = "") -> None:
    await conn.execute(
        "UPDATE settlements SET phase = $2, failure = $3 WHERE trade_id = $1", trade_id, phase.value, failure
    )


# --- the first-transferred index ---


async def lock_namespace(conn: asyncpg.Connection, namespace: str) -> None:
    """Serialise readers-then-writers of one namespace's runs across instances, until commit."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"settlement.first_transferred:{namespace}")


async def overlapping(conn: asyncpg.Connection, namespace: str, interval: Interval) -> list[Interval]:
    """The runs that overlap `interval`, in O(log n + k) on the (namespace, start) btree:
    runs are disjoint, so only the last run starting at or before `interval` can reach
    into it from the left; every other overlapping run starts inside it."""
    start, end = interval
    rows = await conn.fetch(
        '(SELECT start, "end" FROM first_transferred WHERE namespace = $1 AND start <= $2 '
        "ORDER BY start DESC LIMIT 1) UNION ALL "
        '(SELECT start, "end" FROM first_transferred WHERE namespace = $1 AND start > $2 AND start <= $3 '
        "ORDER BY start)",
        namespace,
        start,
        end,
    )
    return [(row["start"], row["end"]) for row in rows if row["end"] >= start]


async def mark_first_transferred(conn: asyncpg.Connection, namespace: str, interval: Interval) -> None:
    """Add `interval` to the index, merged with the runs it overlaps or adjoins (so only
    serials not yet covered are added and the index stays a set of disjoint maximal runs)."""
    start, end = interval
    touching = await overlapping(conn, namespace, (start - 1, min(end + 1, INT64_MAX)))
    merged = absorb(interval, touching)
    if touching == [merged]:
        return  # already covered
    await _delete_runs(conn, namespace, (s for s, _ in touching))
    await conn.execute(
        'INSERT INTO first_transferred (namespace, start, "end") VALUES ($1, $2, $3)', namespace, *merged
    )


async def _delete_runs(conn: asyncpg.Connection, namespace: str, starts: Iterable[int]) -> None:
    keys = list(starts)
    if keys:
        await conn.execute(
            "DELETE FROM first_transferred WHERE namespace = $1 AND start = ANY($2::bigint[])", namespace, keys
        )
