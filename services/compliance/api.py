"""Regulator API: screening decisions and each jurisdiction's audit chain, live.

Authority (docs/trust.md): a jurisdiction's chain is read by its regulator
(`regulator:<JUR>`) and the operator; a regulator naming another jurisdiction is refused
403 AUTH_FORBIDDEN (jurisdictions are public, so the refusal reveals nothing). A
decision is read by the operator and a regulator of its accounts' jurisdictions; anyone
else gets 404 DECISION_UNKNOWN, as for a decision that does not exist.

Every read is one page from the tables. Live streams are capped per process
(TONNE_AUDIT_STREAMS, default 32): beyond it a stream request is answered 503 with
`Retry-After`; a stream holds no database connection while it waits.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Security
from fastapi.responses import JSONResponse, Response, StreamingResponse
from google.protobuf.json_format import MessageToDict
from starlette.types import Receive, Scope, Send

from services.common.auth import Identity, forbidden
from services.common.envelope import unwrap
from services.common.errors import DomainError
from services.common.inputs import INT64_MAX, Identifier, Limit, Party
from services.common.problems import Problem, refusals
from services.compliance.chain import StreamsFull, Subscription
from services.compliance.service import Compliance
from tonne.v1.compliance_pb2 import AuditRecord

HEARTBEAT_SECONDS = 15.0
STREAM_PAGE = 100
RETRY_AFTER_SECONDS = 15

# A sequence number of the chain: records after it are returned.
Cursor = Annotated[int, Query(ge=0, le=INT64_MAX)]


_FULL: dict[int | str, dict[str, Any]] = {
    503: {
        "model": Problem,
        "description": "AUDIT_STREAMS_FULL: as many audit streams as this instance serves are open; "
        "retry after `Retry-After` seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    }
}


def record_view(record: AuditRecord) -> dict[str, object]:
    envelope, payload = unwrap(record.envelope)
    return {
        "jurisdiction": record.jurisdiction,
        "sequence": record.sequence,
        "previous_hash": record.previous_hash,
        "hash": record.hash,
        "source_topic": record.source_topic,
        "event_id": record.event_id,
        "event_type": record.event_type,
        "correlation_id": envelope.correlation_id,
        "occurred_at": envelope.occurred_at.ToJsonString(),
        "payload": MessageToDict(payload, preserving_proto_field_name=True),
        "envelope_hex": record.envelope.hex(),
    }


async def audit_lines(compliance: Compliance, subscription: Subscription, after: int) -> AsyncGenerator[bytes, None]:
    """NDJSON: every record after `after`, then each new one as it is chained; a
    heartbeat line when nothing was chained for HEARTBEAT_SECONDS."""
    cursor = after
    await compliance.feed.listen()  # before the first read, so nothing chained after it is missed
    while True:
        subscription.woken.clear()
        while True:
            page = await compliance.audit.page(subscription.jurisdiction, cursor, STREAM_PAGE)
            for record in page:
                cursor = record.sequence
                yield (json.dumps(record_view(record)) + "\n").encode()
            if len(page) < STREAM_PAGE:
                break
        if not await compliance.feed.wait(subscription, HEARTBEAT_SECONDS):
            yield b'{"heartbeat": true}\n'


class AuditStream(StreamingResponse):
    """Gives its place in the feed back however the response ends (finished, client
    gone, or never started)."""

    def __init__(self, lines: AsyncGenerator[bytes, None], subscription: Subscription) -> None:
        super().__init__(lines, media_type="application/x-ndjson")
        self._lines = lines
        self._subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._subscription.close()
            await self._lines.aclose()


def router(compliance: Compliance) -> APIRouter:
    api = APIRouter(tags=["compliance"])
    # A dependency as a default: annotations are strings here and cannot name this local.
    supervisor = Security(compliance.auth.authenticate, scopes=["regulator", "operator"])

    def chain_reader(jurisdiction: str, reader: Identity) -> None:
        if not (reader.operator or jurisdiction in reader.jurisdictions("regulator")):
            raise forbidden(f"only the operator and {jurisdiction}'s regulator read its audit chain")

    @api.get(
        "/decisions/{request_id}",
        responses=refusals(_404="DECISION_UNKNOWN: no decision the caller may see", _422="REQUEST_INVALID"),
    )
    async def decision(request_id: Identifier, reader: Identity = supervisor) -> dict[str, object]:
        found = await compliance.decision(request_id, reader)
        if found is None:  # unknown, or of accounts outside the caller's jurisdictions: one answer
            raise DomainError("DECISION_UNKNOWN", f"no decision for {request_id!r}", http_status=404)
        return MessageToDict(found, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)

    @api.get("/audit/{jurisdiction}", responses=refusals(_422="REQUEST_INVALID"))
    async def chain(
        jurisdiction: Party, reader: Identity = supervisor, after: Cursor = 0, limit: Limit = 100
    ) -> dict[str, object]:
        """A page of the chain: `next` is the `after` of the following page, null at the head."""
        chain_reader(jurisdiction, reader)
        records = await compliance.audit.page(jurisdiction, after, limit)
        full = len(records) == limit
        return {"items": [record_view(r) for r in records], "next": records[-1].sequence if full else None}

    @api.get(
        "/audit/{jurisdiction}/verify",
        responses=refusals(_404="AUDIT_RECORD_UNKNOWN: the chain has no record `after`", _422="REQUEST_INVALID"),
    )
    async def verify(
        jurisdiction: Party, reader: Identity = supervisor, after: Cursor = 0, limit: Limit = 1000
    ) -> dict[str, object]:
        """Verifies the records after `after` (at most `limit`) against the stored hash of
        record `after`. `next` continues with the following window; null at the head or
        after a break."""
        chain_reader(jurisdiction, reader)
        return dataclasses.asdict(await compliance.audit.verify(jurisdiction, after, limit))

    @api.get(
        "/audit/{jurisdiction}/stream",
        response_class=StreamingResponse,
        responses=_FULL | refusals(_422="REQUEST_INVALID"),
    )
    async def stream(jurisdiction: Party, reader: Identity = supervisor, after: Cursor = 0) -> Response:
        """NDJSON: every record after `after`, then each new one as it is chained."""
        chain_reader(jurisdiction, reader)
        try:
            subscription = compliance.feed.subscribe(jurisdiction)
        except StreamsFull:
            error = DomainError("AUDIT_STREAMS_FULL", "this instance serves as many audit streams as it allows")
            return JSONResponse(
                status_code=503, content=error.body(), headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
            )
        return AuditStream(audit_lines(compliance, subscription, after), subscription)

    return api
