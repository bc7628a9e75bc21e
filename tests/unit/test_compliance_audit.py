"""The audit chain's tamper evidence, over random chains and random flips."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.compliance.domain import audit
from tonne.v1.compliance_pb2 import AuditRecord

FIELDS = ("envelope", "event_id", "previous_hash", "hash")


def chain(envelopes: list[bytes]) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    previous = None
    for n, envelope in enumerate(envelopes):
        previous = audit.link(
            previous,
            jurisdiction="TH",
            source_topic="registry.events",
            event_id=f"e{n}",
            event_type="x",
            envelope=envelope,
        )
        records.append(previous)
    return records


def flip(record: AuditRecord, field: str, position: int, mask: int) -> None:
    """Flip bits of one byte of `field` (ASCII strings stay ASCII)."""
    if field == "envelope":
        data = bytearray(record.envelope)
        data[position % len(data)] ^= mask
        record.envelope = bytes(data)
    else:
        text = getattr(record, field)
        i = position % len(text)
        setattr(record, field, text[:i] + chr(ord(text[i]) ^ (mask & 0x7F or 1)) + text[i + 1 :])


@given(
    envelopes=st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=30),
    data=st.data(),
)
def test_first_break_finds_a_flipped_byte_at_its_sequence(envelopes: list[bytes], data: st.DataObject) -> None:
    records = chain(envelopes)
    assert audit.first_break(records) is None
    k = data.draw(st.integers(0, len(records) - 1), label="tampered record")
    flip(
        records[k],
        data.draw(st.sampled_from(FIELDS), label="field"),
        data.draw(st.integers(0, 1000), label="position"),
        data.draw(st.integers(1, 255), label="mask"),
    )
    assert audit.first_break(records) == records[k].sequence == k + 1


@given(
    envelopes=st.lists(st.binary(min_size=1, max_size=16), min_size=2, max_size=30),
    data=st.data(),
)
def test_a_window_is_checked_against_the_record_before_it(envelopes: list[bytes], data: st.DataObject) -> None:
    records = chain(envelopes)
    k = data.draw(st.integers(0, len(records) - 1), label="tampered record")
    start = data.draw(st.integers(0, len(records) - 1), label="window start")
    end = data.draw(st.integers(start + 1, len(records)), label="window end")
    records[k].envelope = records[k].envelope + b"!"
    anchor = records[start - 1] if start else None
    window = records[start:end]
    found = audit.first_break(window, anchor.sequence, anchor.hash) if anchor else audit.first_break(window)
    # A tampered anchor is the previous window's finding: this one checks against its stored hash.
    assert found == (k + 1 if start <= k < end else None)


def test_a_window_that_skips_or_repeats_a_record_is_broken() -> None:
    records = chain([b"a", b"b", b"c", b"d"])
    assert audit.first_break(records[2:], 1, records[0].hash) == 3
    assert audit.first_break(records[1:], 1, records[0].hash) is None
    assert audit.first_break(records[1:], 1, audit.GENESIS) == 2
