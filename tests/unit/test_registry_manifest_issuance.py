"""A carbon-inclusion block carries its manifest's root: the issuance names a stored
manifest, which must be of the block's host party and methodology and exactly its
tonnes, and issues once. And the upload's CSV is refused at its first bad line."""

from __future__ import annotations

import pytest

from services.common.errors import DomainError
from services.registry.domain.manifest import Manifest, Record, Stored
from services.registry.domain.memory import MemoryRegistry
from services.registry.manifests import build, parse
from tests.unit.factories import issuance, open_account, screened
from tests.unit.test_registry_fingerprint import refused
from tonne.v1 import registry_pb2 as pb

ROOT = bytes(range(32))
METRO = Stored("SZ-METRO-2025", "CN", "CCER-METRO-01", ROOT, tonnes=8, issued_by="")


@pytest.fixture
def registry() -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.execute(open_account("CN-CO", "CN"))
    registry.manifests[METRO.manifest_id] = METRO
    return registry


def phcer(issuance_id: str, start: int, tonnes: int = 8, manifest_id: str = "SZ-METRO-2025") -> pb.RecordIssuance:
    command = issuance(
        issuance_id,
        "CN-CO",
        start,
        start + tonnes - 1,
        namespace="PHCER-CN",
        host="CN",
        standard=pb.CCER,
        methodology="CCER-METRO-01",
    )
    command.manifest_id = manifest_id
    return command


def test_the_block_carries_its_manifest_s_root_and_the_manifest_issues_once(registry: MemoryRegistry) -> None:
    [issued] = screened(registry, phcer("PH-1", 1))
    assert isinstance(issued, pb.UnitsIssued)
    assert (issued.manifest_id, issued.block.attributes.manifest_root) == ("SZ-METRO-2025", ROOT)
    again = refused(registry, phcer("PH-2", 101))
    assert (again.code, again.evidence) == ("MANIFEST_ISSUED", ["PH-1"])


def test_the_block_is_what_its_manifest_issues(registry: MemoryRegistry) -> None:
    unknown = refused(registry, phcer("PH-1", 1, manifest_id="SZ-BUS-2025"))
    assert (unknown.code, unknown.evidence) == ("MANIFEST_UNKNOWN", ["SZ-BUS-2025"])
    more = refused(registry, phcer("PH-1", 1, tonnes=9))
    assert (more.code, more.evidence) == ("MANIFEST_MISMATCH", ["tonnes: 9 here, 8 in the manifest"])
    other = phcer("PH-1", 1)
    other.block.attributes.methodology = "CCER-BUS-02"
    other.block.attributes.manifest_root = b"\x00" * 32
    mismatch = refused(registry, other)
    assert mismatch.evidence == [
        "methodology: CCER-BUS-02 here, CCER-METRO-01 in the manifest",
        f"root: another here, {ROOT.hex()} in the manifest",
    ]
    # A root with no manifest named proves nothing.
    claimed = phcer("PH-1", 1, manifest_id="")
    claimed.block.attributes.manifest_root = ROOT
    assert refused(registry, claimed).code == "MANIFEST_UNKNOWN"
    # Nothing was issued by the refusals.
    assert screened(registry, phcer("PH-1", 1))


def test_an_upload_is_refused_at_its_first_bad_line() -> None:
    header = "record_id,participant_id,activity,factor_mg"
    good = [header, "r-2,card-1,2,1500", "", "r-1,card-2,1,900"]
    assert [r.record_id for r in parse(good)] == ["r-2", "r-1"]
    assert build("\ufeff".join(["", "\n".join(good)]).encode()).root == Manifest(parse(good)).root  # BOM
    for lines, line in (
        (["record_id,participant,activity,factor_mg"], 1),
        ([header, "r-1,card-1,1,900", "r-2,card-1,-1,900"], 3),
        ([header, "r-1,card-1,1"], 2),
        ([header, "r-1,card-1,1,9e3"], 2),
        ([header, "bad id,card-1,1,900"], 2),
        ([header, 'r-1,"card-1,1,900'], 2),
    ):
        with pytest.raises(DomainError) as caught:
            parse(lines)
        assert (caught.value.code, caught.value.evidence) == ("MANIFEST_INVALID", [f"line {line}"]), lines
    with pytest.raises(DomainError) as caught:
        build(b"record_id,participant_id,activity,factor_mg\nr-1,caf\xe9,1,1\n")
    assert (caught.value.code, caught.value.evidence) == ("MANIFEST_INVALID", ["byte 51"])
    with pytest.raises(DomainError) as caught:
        parse([header, *(f"r-{i},p,1,1" for i in range(3))], limit=2)
    assert (caught.value.code, caught.value.http_status) == ("MANIFEST_TOO_LARGE", 413)
    assert Manifest([Record("r-1", "p", 1, 1)]).size == 1
