"""Envelope encode/decode: every record value is a tonne.v1.Envelope."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from tonne.v1 import (  # noqa: F401  (imported to register every type in the pool)
    compliance_pb2,
    envelope_pb2,
    matching_pb2,
    registry_pb2,
    settlement_pb2,
)

SCHEMA_VERSION = 1


class UndecodableRecord(Exception):
    """The bytes are not an Envelope of a known type; goes to the dead-letter topic."""

    code = "ENVELOPE_UNDECODABLE"


@dataclass(frozen=True)
class Context:
    """Who asked and why: carried from a cause to everything it causes."""

    correlation_id: str
    causation_id: str = ""
    actor: str = ""

    @classmethod
    def new(cls, actor: str) -> Context:
        return cls(correlation_id=str(uuid.uuid4()), actor=actor)

    @classmethod
    def following(cls, envelope: envelope_pb2.Envelope, actor: str, correlation_id: str = "") -> Context:
        """The context of what `envelope` causes: same flow, caused by it."""
        return cls(envelope.correlation_id or correlation_id, envelope.event_id, actor)


def wrap(
    message: Message,
    *,
    aggregate_id: str,
    context: Context,
    occurred_at: datetime,
    sequence: int = 0,
    event_id: str | None = None,
) -> envelope_pb2.Envelope:
    envelope = envelope_pb2.Envelope(
        event_id=event_id or str(uuid.uuid4()),
        type=message.DESCRIPTOR.full_name,
        schema_version=SCHEMA_VERSION,
        aggregate_id=aggregate_id,
        aggregate_sequence=sequence,
        causation_id=context.causation_id,
        correlation_id=context.correlation_id,
        actor=context.actor,
        payload=message.SerializeToString(),
    )
    envelope.occurred_at.FromDatetime(occurred_at)
    return envelope


def unwrap(value: bytes | None) -> tuple[envelope_pb2.Envelope, Message]:
    """Parse a record value into its envelope and typed payload."""
    if not value:
        raise UndecodableRecord("empty record value")
    envelope = envelope_pb2.Envelope()
    try:
        envelope.ParseFromString(value)
    except DecodeError as exc:
        raise UndecodableRecord(f"not an Envelope: {exc}") from exc
    if not envelope.event_id or not envelope.type:
        raise UndecodableRecord("envelope lacks event_id or type")
    try:
        # Ids key streams, tracking and audit records: only a UUID is accepted.
        uuid.UUID(envelope.event_id)
    except ValueError as exc:
        raise UndecodableRecord(f"event_id is not a UUID ({len(envelope.event_id)} characters)") from exc
    if len(envelope.correlation_id) > 64 or len(envelope.causation_id) > 64 or len(envelope.actor) > 128:
        raise UndecodableRecord("envelope ids or actor are oversize")
    return envelope, payload_of(envelope)


def payload_of(envelope: envelope_pb2.Envelope) -> Message:
    """The typed payload of a parsed envelope."""
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(envelope.type)
    except KeyError as exc:
        raise UndecodableRecord(f"unknown message type {envelope.type!r}") from exc
    payload = message_factory.GetMessageClass(descriptor)()
    try:
        payload.ParseFromString(envelope.payload)
    except DecodeError as exc:
        raise UndecodableRecord(f"payload is not a {envelope.type}: {exc}") from exc
    return payload
