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
import operator
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.common.errors import DomainError
from tonne.v1 import registry_pb2 as pb

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
        """Length-prefixed fields: no two records share bytes. (Spelled out rather than
        looped: half the time, and a manifest encodes every record.)"""
        record, participant = self.record_id.encode(), self.participant_id.encode()
        activity, factor = b"%d" % self.activity, b"%d" % self.factor_mg
        return b"".join(
            (
                len(record).to_bytes(2, "big"),
                record,
                len(participant).to_bytes(2, "big"),
                participant,
                len(activity).to_bytes(2, "big"),
                activity,
                len(factor).to_bytes(2, "big"),
                factor,
            )
        )


def leaf_hash(encoded: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + encoded).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Manifest:
    """The tree over records sorted by id, every level kept (level 0: the leaves), so a
    store can serve proofs without rebuilding it."""

    def __init__(self, records: Iterable[Record]) -> None:
        # The loops below are leaf_hash, node_hash and reduction_mg inlined: a million
        # records make the function calls a third of the build.
        ordered = sorted(records, key=operator.attrgetter("record_id"))
        ids = [r.record_id for r in ordered]
        if len(set(ids)) != len(ids):
            for a, b in itertools.pairwise(ids):
                if a == b:
                    raise DomainError("MANIFEST_INVALID", "record ids are unique in a manifest", [a])
        if not ordered:
            raise DomainError("MANIFEST_INVALID", "a manifest has at least one record")
        self.records = ordered
        self.total_mg = sum([r.activity * r.factor_mg for r in ordered])
        sha256 = hashlib.sha256
        self.levels: list[list[bytes]] = [[sha256(b"\x00" + r.encode()).digest() for r in ordered]]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            # Pairing left to right and carrying an odd last node up unchanged builds the
            # same tree as RFC 6962's largest-power-of-two split.
            above = [
                sha256(b"\x01" + left + right).digest() for left, right in zip(below[::2], below[1::2], strict=False)
            ]
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


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored manifest as an issuance that names it sees it."""

    manifest_id: str
    jurisdiction: str
    methodology: str
    root: bytes
    tonnes: int
    issued_by: str  # the issuance that issued its tonnes, "" while none has


def issued_root(command: pb.RecordIssuance, stored: Stored | None) -> bytes:
    """The root the issuance's block carries: the named manifest's, which must be stored,
    of the block's host party and methodology, exactly the block's tonnes (its remainder
    below a tonne is not issued), and not issued by another issuance."""
    block, attributes = command.block, command.block.attributes
    if stored is None:
        raise DomainError("MANIFEST_UNKNOWN", f"no manifest {command.manifest_id!r}", [command.manifest_id])
    if stored.issued_by and stored.issued_by != command.issuance_id:
        raise DomainError(
            "MANIFEST_ISSUED", f"manifest {stored.manifest_id!r} was issued by {stored.issued_by!r}", [stored.issued_by]
        )
    quantity = block.end - block.start + 1
    mismatches = [
        f"{name}: {ours} here, {theirs} in the manifest"
        for name, ours, theirs in (
            ("host_party", attributes.host_party, stored.jurisdiction),
            ("methodology", attributes.methodology, stored.methodology),
            ("tonnes", quantity, stored.tonnes),
        )
        if ours != theirs
    ]
    if attributes.manifest_root not in (b"", stored.root):
        mismatches.append(f"root: another here, {stored.root.hex()} in the manifest")
    if mismatches:
        raise DomainError("MANIFEST_MISMATCH", "the block is not what its manifest issues", mismatches)
    return stored.root
