"""Regulator API: screening decisions and each jurisdiction's audit chain, live."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from google.protobuf.json_format import MessageToDict

from services.common.envelope import unwrap
from services.common.errors import DomainError
from services.compliance.domain import audit
from services.compliance.service import AUDIT_CHANNEL, Compliance
from tonne.v1.compliance_pb2 import AuditRecord

HEARTBEAT_SECONDS = 15.0


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


def router(compliance: Compliance) -> APIRouter:
    api = APIRouter(tags=["compliance"])

    @api.get("/decisions/{request_id}")
    async def decision(request_id: str) -> dict[str, object]:
        found = compliance.decisions.get(request_id)
        if found is None:
            raise DomainError("DECISION_UNKNOWN", f"no decision for {request_id!r}", http_status=404)
        return MessageToDict(found, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)

    @api.get("/audit/{jurisdiction}")
    async def chain(
        jurisdiction: str, after: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[dict[str, object]]:
        return [record_view(r) for r in await compliance.chain(jurisdiction, after, limit)]

    @api.get("/audit/{jurisdiction}/verify")
    async def verify(jurisdiction: str) -> dict[str, object]:
        records, after = [], 0
        while batch := await compliance.chain(jurisdiction, after):
            records.extend(batch)
            after = batch[-1].sequence
        broken = audit.first_break(records)
        return {
            "jurisdiction": jurisdiction,
            "length": len(records),
            "head": records[-1].hash if records else audit.GENESIS,
            "intact": broken is None,
            "first_broken_sequence": broken,
        }

    @api.get("/audit/{jurisdiction}/stream")
    async def stream(jurisdiction: str, after: Annotated[int, Query(ge=0)] = 0) -> StreamingResponse:
        """NDJSON: every record after `after`, then each new one as it is chained."""

        async def lines() -> AsyncIterator[bytes]:
            wake = asyncio.Event()

            def notified(_conn: object, _pid: int, _channel: str, payload: str) -> None:
                if payload == jurisdiction:
                    wake.set()

            cursor = after
            async with compliance.pool.acquire() as listener:
                await listener.add_listener(AUDIT_CHANNEL, notified)
                try:
                    while True:
                        wake.clear()
                        for record in await compliance.chain(jurisdiction, cursor):
                            cursor = record.sequence
                            yield (json.dumps(record_view(record)) + "\n").encode()
                        try:
                            await asyncio.wait_for(wake.wait(), HEARTBEAT_SECONDS)
                        except TimeoutError:
                            yield b'{"heartbeat": true}\n'
                finally:
                    await listener.remove_listener(AUDIT_CHANNEL, notified)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return api
