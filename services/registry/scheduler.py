"""Completes the transfers that controls scheduled (domain/controls.py) once they come due.

Every instance runs one. Each transfer is decided under its account's lock, and one
that another instance completed (or the holder cancelled) meanwhile records nothing, so
each completes exactly once however many schedulers see it due.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from services.common.periodic import every
from services.registry.service import Registry
from tonne.v1 import registry_pb2 as pb

# Due transfers taken per round.
BATCH = 100


class Scheduler:
    def __init__(self, registry: Registry, every_seconds: float = 1.0) -> None:
        self.registry = registry
        self.every_seconds = every_seconds

    async def run_once(self, now: datetime | None = None) -> int:
        """Decide every transfer due at `now` (default: the clock); how many were due."""
        now = now or datetime.now(UTC)
        rows = await self.registry.pool.fetch(
            "SELECT transfer_id, account_id FROM scheduled_transfers WHERE execute_at <= $1 "
            "ORDER BY execute_at, transfer_id LIMIT $2",
            now,
            BATCH,
        )
        for row in rows:
            command = pb.ExecuteTransfer(transfer_id=row["transfer_id"], account_id=row["account_id"])
            await self.registry.decide(command, "registry-scheduler", now)
        return len(rows)

    def start(self) -> asyncio.Task[None]:
        return every(self.every_seconds, self.run_once, "transfer-scheduler")
