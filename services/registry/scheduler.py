"""Completes the transfers that controls scheduled (domain/controls.py) once they come due,
returns the units of external transfers left unanswered (domain/external.py) and of
proposals the transaction log left unanswered (domain/screening.py), and sends each
party's registry its holdings digest once a period (domain/reconciliation.py).

Every instance runs one. Each transfer is decided under its account's lock, and one
that another instance completed (or the holder cancelled) meanwhile records nothing, so
each completes exactly once however many schedulers see it due.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from google.protobuf.message import Message

from services.common import topics
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
        """Decide every transfer and proposal due at `now` (default: the clock) and the
        digests; how many transfers and proposals were due."""
        now = now or datetime.now(UTC)
        scheduled = await self.registry.pool.fetch(
            "SELECT transfer_id, account_id FROM scheduled_transfers WHERE execute_at <= $1 "
            "ORDER BY execute_at, transfer_id LIMIT $2",
            now,
            BATCH,
        )
        unanswered = await self.registry.pool.fetch(
            "SELECT transfer_id, account_id FROM external_transfers WHERE state = 'proposed' AND expires_at <= $1 "
            "ORDER BY expires_at, transfer_id LIMIT $2",
            now,
            BATCH,
        )
        unscreened = await self.registry.pool.fetch(
            "SELECT proposal_id, account_id FROM proposals WHERE state = 'screening' AND expires_at <= $1 "
            "ORDER BY expires_at, proposal_id LIMIT $2",
            now,
            BATCH,
        )
        commands: list[Message] = [
            pb.ExecuteTransfer(transfer_id=r["transfer_id"], account_id=r["account_id"]) for r in scheduled
        ]
        commands += [
            pb.ExpireExternalTransfer(transfer_id=r["transfer_id"], account_id=r["account_id"]) for r in unanswered
        ]
        commands += [pb.ExpireProposal(proposal_id=r["proposal_id"], account_id=r["account_id"]) for r in unscreened]
        # Each party's holdings digest: one issued within the period records nothing.
        commands += [pb.IssueHoldingsDigest(jurisdiction=party) for party in topics.JURISDICTIONS]
        for command in commands:
            await self.registry.decide(command, "registry-scheduler", now)
        return len(scheduled) + len(unanswered) + len(unscreened)

    def start(self) -> asyncio.Task[None]:
        return every(self.every_seconds, self.run_once, "transfer-scheduler")
