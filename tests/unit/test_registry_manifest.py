"""The carbon-inclusion manifest: an RFC 6962 Merkle tree over the records, every record's
proof verifying against the root and nothing else's, the root independent of upload
order, tonnes rounded down."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import DomainError
from services.registry.domain.manifest import MG_PER_TONNE, Manifest, Record, leaf_hash, node_hash, verify
from services.registry.manifests import siblings


def rides(n: int, grams: int = 3) -> list[Record]:
    return [Record(f"ride-{i:07d}", f"card-{i % 97}", 1, grams * 1000) for i in range(n)]


def reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1's recursive definition, straight from the text."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


@pytest.mark.parametrize("n", range(1, 71))
def test_the_level_wise_tree_is_rfc_6962s(n: int) -> None:
    manifest = Manifest(rides(n))
    assert manifest.root == reference_root(manifest.levels[0])


def test_a_known_answer() -> None:
    a, b = Record("a", "p", 1, 5), Record("b", "p", 2, 5)
    leaves = [hashlib.sha256(b"\x00" + r.encode()).digest() for r in (a, b)]
    assert Manifest([b, a]).root == hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    assert a.encode() == b"\x00\x01a\x00\x01p\x00\x011\x00\x015"


@given(n=st.integers(1, 300), seed=st.integers(0, 10**6))
def test_every_record_s_proof_verifies_and_nothing_else_does(n: int, seed: int) -> None:
    records = rides(n)
    manifest = Manifest(records)
    rng = random.Random(seed)
    index = rng.randrange(n)
    record = manifest.records[index]
    path = manifest.proof(index)
    assert verify(record.encode(), index, n, path, manifest.root)
    forged = Record(record.record_id, record.participant_id, record.activity + 1, record.factor_mg)
    assert not verify(forged.encode(), index, n, path, manifest.root)
    if n > 1:
        assert not verify(record.encode(), (index + 1) % n, n, path, manifest.root)
    if path:
        assert not verify(record.encode(), index, n, path[:-1], manifest.root)  # a path cut short
        assert not verify(record.encode(), index, n, [*path, path[0]], manifest.root)  # one too long
    # The store reads the same path back by (level, position).
    assert [manifest.levels[level][position] for level, position in siblings(index, n)] == path


def test_the_root_does_not_depend_on_upload_order() -> None:
    records = rides(500)
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    assert Manifest(records).root == Manifest(shuffled).root


def test_tonnes_are_rounded_down() -> None:
    manifest = Manifest(rides(1_000, grams=3))  # 3 kg: 0.003 t
    assert (manifest.total_mg, manifest.tonnes) == (3_000_000_000 // 1000, 0)
    assert Manifest([Record("r", "p", 2, MG_PER_TONNE - 1)]).tonnes == 1


@pytest.mark.parametrize(
    "records",
    [
        [],
        [Record("r-1", "p", 1, 1), Record("r-1", "q", 1, 1)],
    ],
)
def test_a_manifest_must_be_whole(records: list[Record]) -> None:
    with pytest.raises(DomainError) as caught:
        Manifest(records)
    assert caught.value.code == "MANIFEST_INVALID"


@pytest.mark.parametrize(("record_id", "activity", "factor"), [("bad id", 1, 1), ("r", 0, 1), ("r", 1, -1)])
def test_a_record_must_be_whole(record_id: str, activity: int, factor: int) -> None:
    with pytest.raises(DomainError) as caught:
        Record(record_id, "p", activity, factor)
    assert caught.value.code == "MANIFEST_INVALID"


def test_node_and_leaf_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"") != node_hash(b"", b"")
