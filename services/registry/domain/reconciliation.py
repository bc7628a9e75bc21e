"""Reconciliation with the national registries (docs/national-registry-protocol.md): tonne
sends each party's registry what the party's accounts hold as tonne records it (a digest:
rows per account and kind of unit, and their SHA-256); the registry answers whether its
books agree. A disagreement freezes the units in dispute (domain/controls.py
freeze_disputed) and alerts the party's regulator (ReconciliationMismatch reaches its
audit stream).

The aggregate is the party's reconciliation (stream "reconciliation-<JUR>"): the digests
issued and the one awaiting its answer (its header: the rows are the events', and a
digest's rows are looked up where the answer needs them). Pure."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Self

from google.protobuf.message import Message

from services.common.aggregate import Aggregate
from services.common.errors import DomainError
from services.common.inputs import is_party
from services.registry.domain.ledger import check
from tonne.v1 import registry_pb2 as pb

# Rows one part of a digest carries at most (a message of ~1 MB), and one answer names.
ROWS_MAX = 10_000


# The kind of unit a row counts: (standard, host party, vintage, authorization id).
Kind = tuple[int, str, int, str]


def key(row: pb.HoldingRow) -> tuple[str, str, int, str, int, str]:
    return (row.account_id, row.status, row.standard, row.host_party, row.vintage, row.authorization_id)


def disputed(mismatch: pb.ReconciliationMismatch) -> dict[str, list[Kind]]:
    """Per account in dispute, the kinds of unit it holds (held or reserved) on which the
    two sides differ: what can still move, so what a dispute freezes. Differences over
    retired, cancelled, exported or frozen units are reported alone: those never move."""
    kinds: dict[str, set[Kind]] = {account_id: set() for account_id in mismatch.accounts}
    for row in (*mismatch.ours, *mismatch.theirs):
        if row.account_id in kinds and row.status == "holding":
            kinds[row.account_id].add((row.standard, row.host_party, row.vintage, row.authorization_id))
    return {account_id: sorted(found) for account_id, found in kinds.items() if found}


def sha256(rows: Iterable[pb.HoldingRow]) -> bytes:
    """Over the rows in key order, each field length-prefixed: a registry computes the same
    from its own books without protobuf."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=key):
        for field in (*key(row), row.quantity):
            encoded = str(field).encode()
            digest.update(len(encoded).to_bytes(4, "big") + encoded)
    return digest.digest()


class Reconciliation(Aggregate):
    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.issued = 0
        self.last_issued_at: datetime | None = None
        self.pending: pb.HoldingsDigestIssued | None = None

    def apply(self, event: Message) -> None:
        match event:
            case pb.HoldingsDigestIssued() if event.part <= 1:  # a digest's first part (or its only)
                self.issued += 1
                self.last_issued_at = event.issued_at.ToDatetime(tzinfo=UTC)
                self.pending = pb.HoldingsDigestIssued()
                self.pending.CopyFrom(event)
                del self.pending.rows[:]
            case pb.HoldingsReconciled() | pb.ReconciliationMismatch():
                self.pending = None

    def snapshot(self) -> bytes:
        message = pb.ReconciliationSnapshot(issued=self.issued, pending=self.pending)
        if self.last_issued_at is not None:
            message.last_issued_at.FromDatetime(self.last_issued_at)
        return message.SerializeToString(deterministic=True)

    @classmethod
    def restore(cls, stream_id: str, state: bytes) -> Self:
        message = pb.ReconciliationSnapshot.FromString(state)
        reconciliation = cls(stream_id)
        reconciliation.issued = message.issued
        reconciliation.pending = message.pending if message.HasField("pending") else None
        if message.HasField("last_issued_at"):
            reconciliation.last_issued_at = message.last_issued_at.ToDatetime(tzinfo=UTC)
        return reconciliation

    def due(self, now: datetime, every: timedelta) -> bool:
        return self.last_issued_at is None or now - self.last_issued_at >= every

    def issue(
        self,
        jurisdiction: str,
        rows: Sequence[pb.HoldingRow],
        now: datetime,
        every: timedelta,
        part_rows: int = ROWS_MAX,
    ) -> list[Message]:
        """The party's digest of `rows` (its accounts' non-zero holdings), in parts of at
        most `part_rows`, unless one was issued less than `every` ago (every instance's
        scheduler asks; one digest results). An unanswered digest is superseded (its
        answer, if it comes, is refused as unknown)."""
        if not is_party(jurisdiction):
            raise DomainError("CHANNEL_JURISDICTION_MISMATCH", "a digest is a party's", [jurisdiction[:8]])
        if not self.due(now, every):
            return []
        ordered = sorted(rows, key=key)
        whole = sha256(ordered)
        parts = max(1, -(-len(ordered) // part_rows))
        issued: list[Message] = []
        for part in range(parts):
            message = pb.HoldingsDigestIssued(
                digest_id=f"{jurisdiction}-{self.issued + 1}",
                jurisdiction=jurisdiction,
                rows=ordered[part * part_rows : (part + 1) * part_rows],
                sha256=whole,
                part=part + 1,
                parts=parts,
                total_rows=len(ordered),
            )
            message.issued_at.FromDatetime(now)
            issued.append(message)
        return issued

    def answer(self, command: pb.AnswerHoldingsDigest, channel: str, ours: Sequence[pb.HoldingRow]) -> list[Message]:
        """The registry's answer to the pending digest: matched, or the mismatch with the
        accounts in dispute (those of either side's differing rows that are the party's).
        `ours`: the digest's rows whose keys the answer names."""
        check(command)
        pending = self.pending
        if pending is None or command.digest_id != pending.digest_id:
            raise DomainError("DIGEST_UNKNOWN", "no digest awaits this answer", [command.digest_id[:64]])
        if channel != pending.jurisdiction:
            raise DomainError(
                "CHANNEL_JURISDICTION_MISMATCH", f"only {pending.jurisdiction}'s registry answers its digest", [channel]
            )
        if command.matches and not command.theirs:
            return [pb.HoldingsReconciled(digest_id=pending.digest_id, jurisdiction=pending.jurisdiction)]
        theirs = {key(r): r for r in command.theirs[:ROWS_MAX]}
        ours = sorted((r for r in ours if key(r) in theirs), key=key)
        missing = [k for k in theirs if k not in {key(r) for r in ours}]
        accounts = sorted(
            {r.account_id for r in ours} | {k[0] for k in missing if k[0].startswith(f"{pending.jurisdiction}-")}
        )
        if not accounts:
            raise DomainError("DIGEST_ANSWER_INVALID", "a disagreement names the party's rows that differ")
        return [
            pb.ReconciliationMismatch(
                digest_id=pending.digest_id,
                jurisdiction=pending.jurisdiction,
                ours=ours,
                theirs=list(theirs.values()),
                accounts=accounts,
            )
        ]
