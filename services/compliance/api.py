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

import base64
import dataclasses
import json
from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Security
from fastapi.responses import JSONResponse, Response, StreamingResponse
from google.protobuf.json_format import MessageToDict
from pydantic import BaseModel, Field
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


class Checkpoint(BaseModel):
    sequence: int
    hash: str
    signature: str  # base64


class CheckpointPage(BaseModel):
    items: list[Checkpoint]
    next: int | None


class SigningKey(BaseModel):
    algorithm: str = "Ed25519"
    public_key: str = Field(description="the raw 32-byte key, base64")
    checkpoint_every: int
    message: str = (
        "b'tonne-audit-checkpoint-v1' NUL jurisdiction NUL sequence (decimal) NUL hash (hex), NUL being one zero byte"
    )


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


def ndjson(view: dict[str, object] | None) -> bytes:
    return (json.dumps(view) if view is not None else '{"heartbeat": true}').encode() + b"\n"


def server_sent(view: dict[str, object] | None) -> bytes:
    """An SSE event whose id is the record's sequence (what `Last-Event-ID` resumes from);
    a comment line as the heartbeat."""
    if view is None:
        return b": heartbeat\n\n"
    return f"id: {view['sequence']}\nevent: record\ndata: {json.dumps(view)}\n\n".encode()


async def audit_lines(
    compliance: Compliance, subscription: Subscription, after: int, framed: Callable[[dict[str, object] | None], bytes]
) -> AsyncGenerator[bytes, None]:
    """Every record after `after`, then each new one as it is chained; a heartbeat when
    nothing was chained for HEARTBEAT_SECONDS. `framed`: NDJSON or server-sent events."""
    cursor = after
    await compliance.feed.listen()  # before the first read, so nothing chained after it is missed
    while True:
        subscription.woken.clear()
        while True:
            page = await compliance.audit.page(subscription.jurisdiction, cursor, STREAM_PAGE)
            for record in page:
                cursor = record.sequence
                yield framed(record_view(record))
            if len(page) < STREAM_PAGE:
                break
        if not await compliance.feed.wait(subscription, HEARTBEAT_SECONDS):
            yield framed(None)


class AuditStream(StreamingResponse):
    """Gives its place in the feed back however the response ends (finished, client
    gone, or never started)."""

    def __init__(self, lines: AsyncGenerator[bytes, None], subscription: Subscription, media_type: str) -> None:
        super().__init__(lines, media_type=media_type)
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
    async def stream(
        jurisdiction: Party,
        reader: Identity = supervisor,
        after: Cursor = 0,
        accept: Annotated[str, Header()] = "",
        last_event_id: Annotated[int | None, Header(ge=0, le=INT64_MAX)] = None,
    ) -> Response:
        """Every record after `after`, then each new one as it is chained. NDJSON, or
        server-sent events when the client accepts `text/event-stream`: each event's id is
        the record's sequence, and a reconnecting client's `Last-Event-ID` resumes after it."""
        chain_reader(jurisdiction, reader)
        events = "text/event-stream" in accept
        start = last_event_id if events and last_event_id is not None else after
        try:
            subscription = compliance.feed.subscribe(jurisdiction)
        except StreamsFull:
            error = DomainError("AUDIT_STREAMS_FULL", "this instance serves as many audit streams as it allows")
            return JSONResponse(
                status_code=503, content=error.body(), headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
            )
        framed, media_type = (server_sent, "text/event-stream") if events else (ndjson, "application/x-ndjson")
        return AuditStream(audit_lines(compliance, subscription, start, framed), subscription, media_type)

    @api.get(
        "/audit/{jurisdiction}/checkpoints",
        response_model=CheckpointPage,
        responses=refusals(_422="REQUEST_INVALID"),
    )
    async def checkpoints(
        jurisdiction: Party, reader: Identity = supervisor, after: Cursor = 0, limit: Limit = 100
    ) -> CheckpointPage:
        """The chain's signed checkpoints (every `checkpoint_every` records): Ed25519 over
        the checkpoint message of GET /audit-signing-key, base64."""
        chain_reader(jurisdiction, reader)
        rows = await compliance.audit.checkpoints(jurisdiction, after, limit)
        items = [
            Checkpoint(sequence=r["sequence"], hash=r["hash"], signature=base64.b64encode(r["signature"]).decode())
            for r in rows
        ]
        return CheckpointPage(items=items, next=items[-1].sequence if len(items) == limit else None)

    @api.get("/audit-signing-key", response_model=SigningKey, responses=refusals())
    async def signing_key(_: Identity = supervisor) -> SigningKey:
        """The public key that signs the audit chains' checkpoints, and what is signed."""
        return SigningKey(public_key=compliance.signer.public_key, checkpoint_every=compliance.signer.every)

    return api
