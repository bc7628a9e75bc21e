"""A carbon-inclusion issuance's manifest (DOMAIN.md §3, PHCER; scenario 4): the many small
quantified reductions one block aggregates (1.2 million metro rides of a few grams each),
as a Merkle tree whose root the block carries, so any participant can be shown that their
own record is in it (an inclusion proof) without seeing anyone else's.

Hashing is RFC 6962's (Certificate Transparency): leaf = SHA-256(0x00 || record),
node = SHA-256(0x01 || left || right), split at the largest power of two below the size.
Records are ordered by id, so the root does not depend on the order they were uploaded in.
A record's reduction is activity x factor, in integer milligrams CO2e; the block's tonnes
are the total rounded down (fractions of a tonne are not issued; the remainder is kept).
Pure."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.common.errors import DomainError

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
MG_PER_TONNE = 10**9


@dataclass(frozen=True, slots=True)
class Record:
    record_id: str
    participant_id: str
    activity: int  # units of activity (rides, kWh saved)
    factor_mg: int  # mg CO2e reduced per unit of activity (the methodology's)

    def __post_init__(self) -> None:
        if not (_ID.fullmatch(self.record_id) and _ID.fullmatch(self.participant_id)):
            raise DomainError("MANIFEST_INVALID", "record and participant ids are identifiers", [self.record_id[:64]])
        if not (0 < self.activity < 2**63 and 0 < self.factor_mg < 2**63):
            raise DomainError("MANIFEST_INVALID", "activity and factor are positive", [self.record_id])

    @property
    def reduction_mg(self) -> int:
        return self.activity * self.factor_mg

    def encode(self) -> bytes:
        """Length-prefixed fields: no two records share bytes."""
        parts = (
            self.record_id.encode(),
            self.participant_id.encode(),
            str(self.activity).encode(),
            str(self.factor_mg).encode(),
        )
        return b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def leaf_hash(encoded: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + encoded).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Manifest:
    """The tree over records sorted by id, every level kept (level 0: the leaves), so a
    store can serve proofs without rebuilding it."""

    def __init__(self, records: Iterable[Record]) -> None:
        ordered = sorted(records, key=lambda r: r.record_id)
        for a, b in itertools.pairwise(ordered):
            if a.record_id == b.record_id:
                raise DomainError("MANIFEST_INVALID", "record ids are unique in a manifest", [a.record_id])
        if not ordered:
            raise DomainError("MANIFEST_INVALID", "a manifest has at least one record")
        self.records = ordered
        self.total_mg = sum(r.reduction_mg for r in ordered)
        self.levels: list[list[bytes]] = [[leaf_hash(r.encode()) for r in ordered]]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            # Pairing left to right and carrying an odd last node up unchanged builds the
            # same tree as RFC 6962's largest-power-of-two split.
            above = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            if len(below) % 2:
                above.append(below[-1])
            self.levels.append(above)

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    @property
    def size(self) -> int:
        return len(self.records)

    @property
    def tonnes(self) -> int:
        return self.total_mg // MG_PER_TONNE

    def index(self, record_id: str) -> int:
        low, high = 0, len(self.records)
        while low < high:
            middle = (low + high) // 2
            if self.records[middle].record_id < record_id:
                low = middle + 1
            else:
                high = middle
        if low == len(self.records) or self.records[low].record_id != record_id:
            raise DomainError("MANIFEST_RECORD_UNKNOWN", "no such record in the manifest", [record_id[:64]])
        return low

    def proof(self, index: int) -> list[bytes]:
        return proof(self.levels, index)


def proof(levels: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    """The audit path of leaf `index`, from the stored levels alone: the sibling at each
    level where there is one (a carried node has none)."""
    path: list[bytes] = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
    return path


def verify(encoded: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """Whether the record (its encoding) is leaf `index` of a tree of `size` leaves with
    `root` (RFC 6962 §2.1.1's audit path check, in its level-wise form)."""
    if not 0 <= index < size:
        return False
    digest, width, steps = leaf_hash(encoded), size, list(path)
    while width > 1:
        if index % 2 == 1:
            if not steps:
                return False
            digest = node_hash(steps.pop(0), digest)
        elif index + 1 < width:
            if not steps:
                return False
            digest = node_hash(digest, steps.pop(0))
        index, width = index // 2, (width + 1) // 2
    return not steps and digest == root
