"""Regulator API: screening decisions and each jurisdiction's audit chain, live.

Every read is one page from the tables. Live streams are capped per process
(TONNE_AUDIT_STREAMS, default 32): beyond it a stream request is answered 503 with
`Retry-After`; a stream holds no database connection while it waits.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse
from google.protobuf.json_format import MessageToDict
from starlette.types import Receive, Scope, Send

from services.common.envelope import unwrap
from services.common.errors import DomainError
from services.common.inputs import INT64_MAX, Identifier, Limit, Party
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
        "description": "As many audit streams as this instance serves are open; retry after `Retry-After` seconds.",
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

    @api.get("/decisions/{request_id}")
    async def decision(request_id: Identifier) -> dict[str, object]:
        found = await compliance.decision(request_id)
        if found is None:
            raise DomainError("DECISION_UNKNOWN", f"no decision for {request_id!r}", http_status=404)
        return MessageToDict(found, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)

    @api.get("/audit/{jurisdiction}")
    async def chain(jurisdiction: Party, after: Cursor = 0, limit: Limit = 100) -> dict[str, object]:
        """A page of the chain: `next` is the `after` of the following page, null at the head."""
        records = await compliance.audit.page(jurisdiction, after, limit)
        full = len(records) == limit
        return {"items": [record_view(r) for r in records], "next": records[-1].sequence if full else None}

    @api.get("/audit/{jurisdiction}/verify")
    async def verify(jurisdiction: Party, after: Cursor = 0, limit: Limit = 1000) -> dict[str, object]:
        """Verifies the records after `after` (at most `limit`) against the stored hash of
        record `after`. `next` continues with the following window; null at the head or
        after a break."""
        return dataclasses.asdict(await compliance.audit.verify(jurisdiction, after, limit))

    @api.get("/audit/{jurisdiction}/stream", response_class=StreamingResponse, responses=_FULL)
    async def stream(jurisdiction: Party, after: Cursor = 0) -> Response:
        """NDJSON: every record after `after`, then each new one as it is chained."""
        try:
            subscription = compliance.feed.subscribe(jurisdiction)
        except StreamsFull:
            error = DomainError("AUDIT_STREAMS_FULL", "this instance serves as many audit streams as it allows")
            return JSONResponse(
                status_code=503, content=error.body(), headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
            )
        return AuditStream(audit_lines(compliance, subscription, after), subscription)

    return api
