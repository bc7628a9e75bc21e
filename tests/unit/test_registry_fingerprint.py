"""The same tonnes issued once across programmes: issuances carrying a project fingerprint
and a monitoring period are refused when the project had a day of that period issued
already, as a VCU or a CCER alike; descriptions that differ only in spelling match."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from services.common.errors import DomainError
from services.registry.domain.fingerprint import key
from services.registry.domain.memory import MemoryRegistry
from tests.unit.factories import issuance, open_account, screened
from tonne.v1 import registry_pb2 as pb

JANUARY = ("2024-01-01", "2024-01-31")
PLANT = pb.ProjectFingerprint(host_party="CN", location="CN-GD-Shenzhen", capacity_kw=50_000, operator="Sunrise PV Ltd")


@pytest.fixture
def registry() -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.execute(open_account("CN-CO", "CN"))
    return registry


def issued(
    issuance_id: str,
    start: int,
    standard: pb.Standard.ValueType,
    period: tuple[str, str],
    plant: pb.ProjectFingerprint = PLANT,
) -> pb.RecordIssuance:
    name = pb.Standard.Name(standard)
    command = issuance(issuance_id, "CN-CO", start, start + 99, namespace=f"{name}-CN", host="CN", standard=standard)
    command.fingerprint.CopyFrom(plant)
    command.period.start, command.period.end = period
    return command


def refused(registry: MemoryRegistry, command: Message) -> DomainError:
    with pytest.raises(DomainError) as caught:
        registry.decide(command)
    return caught.value


def test_a_project_period_issued_as_vcu_is_not_issued_again_as_ccer(registry: MemoryRegistry) -> None:
    [first] = screened(registry, issued("VCU-1", 1, pb.VCU, ("2024-01-01", "2024-06-30")))
    assert isinstance(first, pb.UnitsIssued) and first.fingerprint_key == key(PLANT)
    again = refused(registry, issued("CCER-1", 1, pb.CCER, ("2024-06-30", "2024-12-31")))  # one shared day
    assert again.code == "DOUBLE_ISSUANCE_PROJECT_PERIOD"
    assert again.evidence == ["VCU-1 (VCU, 2024-01-01..2024-06-30)"]
    # The next period is new reductions, and another plant is another project.
    screened(registry, issued("CCER-2", 1, pb.CCER, ("2024-07-01", "2024-12-31")))
    other = pb.ProjectFingerprint(host_party="CN", location="CN-GD-Shenzhen", capacity_kw=60_000, operator="Sunrise")
    screened(registry, issued("VCU-2", 101, pb.VCU, ("2024-01-01", "2024-06-30"), other))


def test_spelling_does_not_make_a_new_project() -> None:
    same = pb.ProjectFingerprint(
        host_party="CN", location="cn gd  shenzhen", capacity_kw=50_000, operator="SUNRISE PV, LTD."
    )
    assert key(same) == key(PLANT)
    # Fields cannot run into each other.
    moved = pb.ProjectFingerprint(host_party="CN", location="CN-GD", capacity_kw=50_000, operator="Shenzhen Sunrise")
    assert key(moved) != key(PLANT)


@pytest.mark.parametrize(
    ("plant", "period"),
    [
        (pb.ProjectFingerprint(host_party="CN", location="x", capacity_kw=0, operator="o"), JANUARY),
        (pb.ProjectFingerprint(host_party="TH", location="x", capacity_kw=1, operator="o"), JANUARY),
        (PLANT, ("2024-02-01", "2024-01-01")),
        (PLANT, ("2024-13-01", "2024-12-01")),
        (PLANT, ("", "")),
    ],
)
def test_a_fingerprint_must_be_whole(
    registry: MemoryRegistry, plant: pb.ProjectFingerprint, period: tuple[str, str]
) -> None:
    assert refused(registry, issued("VCU-1", 1, pb.VCU, period, plant)).code == "FINGERPRINT_INVALID"
