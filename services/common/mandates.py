"""The mandates table of a service that checks a broker's authority over accounts: folded
from the registry's MandateGranted / MandateRevoked (kept as fact streams)."""

from __future__ import annotations

import asyncpg
from google.protobuf.message import Message

from services.common.statehash import Projection
from tonne.v1 import registry_pb2 as rpb

PROJECTION = Projection("mandates", ("mandate_id", "account_id", "broker_id", "jurisdiction"), ("mandate_id",))


async def fold(conn: asyncpg.Connection, event: Message) -> None:
    match event:
        case rpb.MandateGranted():
            await conn.execute(
                "INSERT INTO mandates (mandate_id, account_id, broker_id, jurisdiction) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (mandate_id) DO UPDATE SET account_id = $2, broker_id = $3, jurisdiction = $4",
                event.mandate_id,
                event.account_id,
                event.broker_id,
                event.jurisdiction,
            )
        case rpb.MandateRevoked():
            await conn.execute("DELETE FROM mandates WHERE mandate_id = $1", event.mandate_id)


async def mandated(conn: asyncpg.Connection, broker_id: str, account_id: str) -> bool:
    """Whether the broker holds a mandate for the account (the same answer for an account
    that does not exist and one the broker has no mandate for)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM mandates WHERE broker_id = $1 AND account_id = $2)", broker_id, account_id
        )
    )
