"""Reconciliation with a national registry, in the pure core: one digest per period,
answered only by its party's registry and only while it is the pending one; a
disagreement names the party's accounts to freeze; a snapshot keeps the pending digest."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from services.common.errors import DomainError
from services.registry.domain.reconciliation import Reconciliation, disputed, sha256
from tonne.v1 import registry_pb2 as pb

NOW = datetime(2026, 11, 22, tzinfo=UTC)
HOUR = timedelta(hours=1)


def row(account_id: str, quantity: int, vintage: int = 2024) -> pb.HoldingRow:
    return pb.HoldingRow(
        account_id=account_id, status="holding", standard=pb.JCM, host_party="TH", vintage=vintage, quantity=quantity
    )


def issued(reconciliation: Reconciliation, rows: list[pb.HoldingRow], now: datetime = NOW) -> pb.HoldingsDigestIssued:
    [digest] = reconciliation.issue("TH", rows, now, HOUR)
    assert isinstance(digest, pb.HoldingsDigestIssued)
    reconciliation.mutate([digest])
    return digest


def refused(call: object) -> str:
    assert callable(call)
    with pytest.raises(DomainError) as caught:
        call()
    return caught.value.code


def test_a_digest_is_the_rows_in_key_order_and_their_hash() -> None:
    digest = issued(Reconciliation("reconciliation-TH"), [row("TH-B", 5), row("TH-A", 7)])
    assert (digest.digest_id, [r.account_id for r in digest.rows]) == ("TH-1", ["TH-A", "TH-B"])
    # What a registry computes from its own books, field by field, length-prefixed.
    expected = hashlib.sha256()
    for r in digest.rows:
        for field in (r.account_id, r.status, r.standard, r.host_party, r.vintage, r.authorization_id, r.quantity):
            encoded = str(field).encode()
            expected.update(len(encoded).to_bytes(4, "big") + encoded)
    assert digest.sha256 == expected.digest() == sha256(reversed(digest.rows))


def test_one_digest_per_period_whoever_asks() -> None:
    reconciliation = Reconciliation("reconciliation-TH")
    issued(reconciliation, [row("TH-A", 7)])
    assert reconciliation.issue("TH", [row("TH-A", 7)], NOW + HOUR / 2, HOUR) == []
    assert issued(reconciliation, [row("TH-A", 7)], NOW + HOUR).digest_id == "TH-2"


def test_an_agreeing_answer_reconciles_and_a_disagreeing_one_names_the_accounts() -> None:
    reconciliation = Reconciliation("reconciliation-TH")
    digest = issued(reconciliation, [row("TH-A", 7), row("TH-B", 5)])
    [agreed] = reconciliation.answer(pb.AnswerHoldingsDigest(digest_id=digest.digest_id, matches=True), "TH", [])
    assert isinstance(agreed, pb.HoldingsReconciled)
    reconciliation.mutate([agreed])
    again = pb.AnswerHoldingsDigest(digest_id=digest.digest_id, matches=True)
    assert refused(lambda: reconciliation.answer(again, "TH", [])) == "DIGEST_UNKNOWN"  # answered already

    digest = issued(reconciliation, [row("TH-A", 7), row("TH-B", 5)], NOW + HOUR)
    theirs = [row("TH-B", 4), row("TH-C", 3)]  # a row it has and tonne has not
    answer = pb.AnswerHoldingsDigest(digest_id=digest.digest_id, theirs=theirs)
    [mismatch] = reconciliation.answer(answer, "TH", digest.rows)
    assert isinstance(mismatch, pb.ReconciliationMismatch)
    assert list(mismatch.accounts) == ["TH-B", "TH-C"]
    assert [(r.account_id, r.quantity) for r in mismatch.ours] == [("TH-B", 5)]
    assert disputed(mismatch) == {"TH-B": [(pb.JCM, "TH", 2024, "")], "TH-C": [(pb.JCM, "TH", 2024, "")]}


def test_a_dispute_freezes_only_units_that_can_still_move() -> None:
    retired = row("TH-A", 3, 2023)
    retired.status = "retired"
    mismatch = pb.ReconciliationMismatch(
        digest_id="TH-1", jurisdiction="TH", ours=[row("TH-A", 7), retired], theirs=[row("TH-A", 6)], accounts=["TH-A"]
    )
    assert disputed(mismatch) == {"TH-A": [(pb.JCM, "TH", 2024, "")]}
    only_retired = pb.ReconciliationMismatch(digest_id="TH-1", jurisdiction="TH", ours=[retired], accounts=["TH-A"])
    assert disputed(only_retired) == {}


def test_only_the_party_s_registry_answers_the_pending_digest() -> None:
    reconciliation = Reconciliation("reconciliation-TH")
    first = issued(reconciliation, [row("TH-A", 7)])
    issued(reconciliation, [row("TH-A", 7)], NOW + HOUR)  # supersedes the first
    stale = pb.AnswerHoldingsDigest(digest_id=first.digest_id, matches=True)
    assert refused(lambda: reconciliation.answer(stale, "TH", [])) == "DIGEST_UNKNOWN"
    current = pb.AnswerHoldingsDigest(digest_id="TH-2", matches=True)
    assert refused(lambda: reconciliation.answer(current, "CH", [])) == "CHANNEL_JURISDICTION_MISMATCH"
    foreign = pb.AnswerHoldingsDigest(digest_id="TH-2", theirs=[row("CH-X", 1)])
    assert refused(lambda: reconciliation.answer(foreign, "TH", [])) == "DIGEST_ANSWER_INVALID"  # not TH's rows


def test_the_pending_digest_survives_a_snapshot() -> None:
    reconciliation = Reconciliation("reconciliation-TH")
    issued(reconciliation, [row("TH-A", 7)])
    restored = Reconciliation.restore(reconciliation.stream_id, reconciliation.snapshot())
    assert restored.snapshot() == reconciliation.snapshot()
    assert (restored.issued, restored.last_issued_at, restored.pending) == (1, NOW, reconciliation.pending)


def test_a_digest_of_many_rows_comes_in_parts_with_one_hash() -> None:
    rows = [row(f"TH-{n:05d}", n + 1) for n in range(25)]
    issued = Reconciliation("reconciliation-TH").issue("TH", list(reversed(rows)), NOW, HOUR, part_rows=10)
    parts = [p for p in issued if isinstance(p, pb.HoldingsDigestIssued)]
    assert [(p.part, p.parts, len(p.rows), p.total_rows) for p in parts] == [
        (1, 3, 10, 25),
        (2, 3, 10, 25),
        (3, 3, 5, 25),
    ]
    assert [r for p in parts for r in p.rows] == rows
    assert {p.sha256 for p in parts} == {sha256(rows)} and {p.digest_id for p in parts} == {"TH-1"}
    reconciliation = Reconciliation("reconciliation-TH")
    reconciliation.mutate(parts)
    assert reconciliation.issued == 1 and reconciliation.pending is not None
    assert (reconciliation.pending.parts, list(reconciliation.pending.rows)) == (3, [])  # the rows stay in the events
    # A difference in the last part: the answer is compared with the rows under its keys.
    theirs = [row("TH-00024", 1)]
    [mismatch] = reconciliation.answer(pb.AnswerHoldingsDigest(digest_id="TH-1", theirs=theirs), "TH", [rows[24]])
    assert isinstance(mismatch, pb.ReconciliationMismatch)
    assert [(r.account_id, r.quantity) for r in mismatch.ours] == [("TH-00024", 25)]
