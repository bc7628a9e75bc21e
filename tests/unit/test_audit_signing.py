"""Signed checkpoints and the offline verifier: any byte changed in an exported chain is
found at its sequence."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from services.compliance.domain import audit, signing
from services.compliance.verify import first_bad
from tonne.v1.compliance_pb2 import AuditRecord

SIGNER = signing.Signer(signing.DEVELOPMENT_SEED, every=2)


def chain(length: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    previous = None
    for n in range(length):
        previous = audit.link(
            previous,
            jurisdiction="CN",
            source_topic="registry.events",
            event_id=f"e{n}",
            event_type="tonne.v1.UnitsTransferred",
            envelope=bytes([n % 256]) * (n + 5),
        )
        records.append(previous)
    return records


def checkpoints(records: list[AuditRecord]) -> list[dict[str, object]]:
    return [
        {
            "sequence": r.sequence,
            "hash": r.hash,
            "signature": base64.b64encode(SIGNER.sign("CN", r.sequence, r.hash)).decode(),
        }
        for r in records
        if SIGNER.due(r.sequence)
    ]


def test_a_checkpoint_verifies_with_its_key_only() -> None:
    signature = SIGNER.sign("CN", 4, "ab" * 32)
    assert signing.verify(SIGNER.public_key, "CN", 4, "ab" * 32, signature)
    assert not signing.verify(SIGNER.public_key, "CN", 5, "ab" * 32, signature)
    other = signing.Signer(bytes(32), every=2)
    assert not signing.verify(other.public_key, "CN", 4, "ab" * 32, signature)


def test_an_intact_chain_and_its_checkpoints_hold() -> None:
    records = chain(7)
    assert first_bad(records, checkpoints(records), SIGNER.public_key) is None
    forged = signing.Signer(bytes(32), every=2)
    assert first_bad(records, checkpoints(records), forged.public_key) == (2, "checkpoint signature does not verify")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_byte_changed_is_found_at_its_sequence(data: st.DataObject) -> None:
    records = chain(9)
    signed = checkpoints(records)
    victim = data.draw(st.integers(0, len(records) - 1))
    record = records[victim]
    field = data.draw(st.sampled_from(["envelope", "hash", "previous_hash", "event_id"]))
    if field == "envelope":
        position = data.draw(st.integers(0, len(record.envelope) - 1))
        changed = bytearray(record.envelope)
        changed[position] ^= data.draw(st.integers(1, 255))
        record.envelope = bytes(changed)
    else:
        value = getattr(record, field)
        position = data.draw(st.integers(0, len(value) - 1))
        setattr(record, field, value[:position] + ("x" if value[position] != "x" else "y") + value[position + 1 :])
    bad = first_bad(records, signed, SIGNER.public_key)
    assert bad is not None and bad[0] == record.sequence
