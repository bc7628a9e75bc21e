"""The audit chain: per jurisdiction, each record commits to the one before it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from tonne.v1.compliance_pb2 import AuditRecord

GENESIS = "0" * 64


def digest(record: AuditRecord) -> str:
    h = hashlib.sha256()
    for part in (
        record.previous_hash,
        str(record.sequence),
        record.jurisdiction,
        record.source_topic,
        record.event_id,
        record.event_type,
    ):
        h.update(part.encode())
        h.update(b"\x00")
    h.update(record.envelope)
    return h.hexdigest()


def link(
    previous: AuditRecord | None,
    *,
    jurisdiction: str,
    source_topic: str,
    event_id: str,
    event_type: str,
    envelope: bytes,
) -> AuditRecord:
    record = AuditRecord(
        jurisdiction=jurisdiction,
        sequence=previous.sequence + 1 if previous else 1,
        previous_hash=previous.hash if previous else GENESIS,
        source_topic=source_topic,
        event_id=event_id,
        event_type=event_type,
        envelope=envelope,
    )
    record.hash = digest(record)
    return record


def first_break(records: Iterable[AuditRecord], after: int = 0, after_hash: str = GENESIS) -> int | None:
    """Sequence of the first record that does not follow from its predecessor, or None.

    `records` continue the chain after record `after`, whose stored hash is `after_hash`
    (the genesis by default), so a long chain is verified one window at a time."""
    expected_previous, expected_sequence = after_hash, after + 1
    for record in records:
        if (
            record.sequence != expected_sequence
            or record.previous_hash != expected_previous
            or record.hash != digest(record)
        ):
            return record.sequence
        expected_previous, expected_sequence = record.hash, record.sequence + 1
    return None
