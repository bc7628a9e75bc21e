"""Tells each instrument's engine when its GTD orders come due.

Expiry is an input of the engine like any other (ExpireOrders, sequenced on
matching.orders), so the journal, and replay, never depend on a clock. Every instance
runs one: an instrument's command is queued only while one of its resting orders is due,
and the engine refuses an `as_of` behind the one it has taken, so a second instance's
command changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from services.common import outbox, topics
from services.common.envelope import Context, wrap
from services.common.periodic import every
from services.matching.domain.engine import timestamp
from services.matching.service import Matching
from tonne.v1 import matching_pb2 as pb

# One statement per instrument: the command is queued (and the relay woken) only if due.
_DUE = (
    "WITH due AS (SELECT 1 FROM orders WHERE instrument_id = $1 AND status = 'resting' AND expire_ns <= $2 LIMIT 1), "
    f"{outbox.queued(3, when='EXISTS (SELECT 1 FROM due)')} "
    f"SELECT EXISTS (SELECT 1 FROM due) AS due, {outbox.WAKE} AS woken"
)


class Expiry:
    def __init__(self, matching: Matching, every_seconds: float = 1.0) -> None:
        self.matching = matching
        self.every_seconds = every_seconds

    async def run_once(self, now_ns: int | None = None) -> int:
        """Queue ExpireOrders for each instrument with a resting order due at `now_ns`
        (default: the clock); how many were queued."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        queued = 0
        for instrument_id in sorted(self.matching.instruments):
            command = pb.ExpireOrders(instrument_id=instrument_id, as_of=timestamp(now_ns))
            envelope = wrap(
                command,
                aggregate_id=instrument_id,
                context=Context.new("matching-expiry"),
                occurred_at=datetime.now(UTC),
            )
            row = await self.matching.pool.fetchrow(
                _DUE, instrument_id, now_ns, *outbox.queue_args([(topics.MATCHING_ORDERS, instrument_id, envelope)])
            )
            queued += bool(row["due"])
        return queued

    def start(self) -> asyncio.Task[None]:
        return every(self.every_seconds, self.run_once, "order-expiry")
