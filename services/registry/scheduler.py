"""Completes the transfers that controls scheduled (domain/controls.py) once they come due.

Every instance runs one. Each transfer is decided under its account's lock, and one
that another instance completed (or the holder cancelled) meanwhile records nothing, so
each completes exactly once however many schedulers see it due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from services.registry.service import Registry
from tonne.v1 import registry_pb2 as pb

log = logging.getLogger(__name__)

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

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # the next round tries again; a stopped scheduler would strand transfers
                log.exception("scheduled transfers: round failed")
            await asyncio.sleep(self.every_seconds)  # a polling period, not a readiness wait

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self.run(), name="transfer-scheduler")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
