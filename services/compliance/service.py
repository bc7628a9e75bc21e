"""Compliance: screens transfers and keeps each jurisdiction's audit chain."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from functools import partial

import asyncpg
from google.protobuf.message import Message

from services.common import outbox, topics
from services.common.application import Application
from services.common.consumer import Handler
from services.common.envelope import Context, wrap
from services.compliance.domain import audit
from services.compliance.domain.facts import Facts
from services.compliance.domain.jurisdictions import concerned
from services.compliance.domain.screening import Policy, screen
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1.envelope_pb2 import Envelope

OBSERVED = "observed"
DECISIONS = "decisions"
AUDIT_CHANNEL = "audit"
# Every event stream of the venue is audited.
AUDITED = (
    topics.REGISTRY_EVENTS,
    topics.MATCHING_EVENTS,
    topics.SETTLEMENT_EVENTS,
    topics.COMPLIANCE_REQUESTS,
    topics.COMPLIANCE_DECISIONS,
)
_FACTS = (rpb.AccountOpened, rpb.AuthorizationRecorded, rpb.UnitsReserved, rpb.UnitsTransferred)


class Compliance(Application):
    facts: Facts
    decisions: dict[str, cpb.ScreeningDecision]

    def __init__(self, pool: asyncpg.Pool, policy: Policy) -> None:
        self.policy = policy
        super().__init__(pool)

    def reset(self) -> None:
        self.facts = Facts()
        self.decisions = {}

    def apply(self, event: Message) -> None:
        if isinstance(event, cpb.ScreeningDecision):
            self.decisions[event.request_id] = event
        else:
            self.facts.apply(event)

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return {topic: partial(self.on_record, topic) for topic in AUDITED}

    async def on_record(self, topic: str, conn: asyncpg.Connection, envelope: Envelope, event: Message) -> None:
        context = Context.following(envelope, "compliance")
        async with self.lock:
            if isinstance(event, _FACTS):
                await self.record(conn, OBSERVED, [(event, [])], context)
            elif isinstance(event, cpb.ScreenTransfer):
                decision = screen(event, self.facts, self.policy)
                destinations = [(topics.COMPLIANCE_DECISIONS, event.trade_id)]
                await self.record(conn, DECISIONS, [(decision, destinations)], context)
            jurisdictions = concerned(event, self.facts)
            if envelope.correlation_id:
                # Steps that name no account (a decision, an instruction) follow their flow.
                rows = await conn.fetch(
                    "SELECT DISTINCT jurisdiction FROM audit_chain WHERE correlation_id = $1",
                    envelope.correlation_id,
                )
                jurisdictions |= {r["jurisdiction"] for r in rows}
            for jurisdiction in sorted(jurisdictions):
                await self._audit(conn, jurisdiction, topic, envelope)

    async def _audit(self, conn: asyncpg.Connection, jurisdiction: str, topic: str, envelope: Envelope) -> None:
        row = await conn.fetchrow(
            "SELECT sequence, hash FROM audit_chain WHERE jurisdiction = $1 ORDER BY sequence DESC LIMIT 1",
            jurisdiction,
        )
        previous = cpb.AuditRecord(sequence=row["sequence"], hash=row["hash"]) if row else None
        record = audit.link(
            previous,
            jurisdiction=jurisdiction,
            source_topic=topic,
            event_id=envelope.event_id,
            event_type=envelope.type,
            envelope=envelope.SerializeToString(),
        )
        await conn.execute(
            "INSERT INTO audit_chain (jurisdiction, sequence, previous_hash, hash, source_topic, "
            "event_id, event_type, envelope, correlation_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            record.jurisdiction,
            record.sequence,
            record.previous_hash,
            record.hash,
            record.source_topic,
            record.event_id,
            record.event_type,
            record.envelope,
            envelope.correlation_id,
        )
        if jurisdiction in topics.JURISDICTIONS:
            wrapped = wrap(
                record,
                aggregate_id=jurisdiction,
                context=Context(envelope.correlation_id, envelope.event_id, "compliance"),
                occurred_at=envelope.occurred_at.ToDatetime(tzinfo=UTC),
                sequence=record.sequence,
                event_id=f"{jurisdiction}:{record.sequence}",
            )
            await outbox.enqueue(conn, topics.audit(jurisdiction), jurisdiction, wrapped)
        await conn.execute(f"NOTIFY {AUDIT_CHANNEL}, '{jurisdiction}'")

    async def chain(self, jurisdiction: str, after: int = 0, limit: int = 1000) -> list[cpb.AuditRecord]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM audit_chain WHERE jurisdiction = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
                jurisdiction,
                after,
                limit,
            )
        return [
            cpb.AuditRecord(
                jurisdiction=r["jurisdiction"],
                sequence=r["sequence"],
                previous_hash=r["previous_hash"],
                hash=r["hash"],
                source_topic=r["source_topic"],
                event_id=r["event_id"],
                event_type=r["event_type"],
                envelope=r["envelope"],
            )
            for r in rows
        ]
