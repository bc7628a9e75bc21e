"""Issuance rules as policy data (services/registry/policies): A6.4's share of proceeds
and OMGE cancellation taken through the pending account, rounded up; the JCM split with
Thailand's government; files validated before the registry starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import DomainError
from services.registry.domain.blocks import Status
from services.registry.domain.issuance_rules import IssuancePolicies, IssuanceRules, allocate
from services.registry.domain.memory import MemoryRegistry
from services.registry.policies import HERE, SCHEMA, issuance_policies, schema
from services.registry.service import destinations
from tests.unit.factories import issuance, open_account, screened
from tonne.v1 import registry_pb2 as pb

SHIPPED = issuance_policies()
A6_4 = SHIPPED.for_block(pb.UnitAttributes(standard=pb.A6_4ER, host_party="TH"))


@pytest.fixture
def registry() -> MemoryRegistry:
    registry = MemoryRegistry(issuance=SHIPPED)
    for account_id, kind in (
        ("UN-A64-PENDING", pb.PENDING),
        ("UN-A64-SOP-AF", pb.SHARE_OF_PROCEEDS),
        ("UN-A64-OMGE", pb.OMGE_CANCELLATION),
    ):
        registry.execute(open_account(account_id, "UN", kind))
    registry.execute(open_account("TH-PP", "TH"))
    registry.execute(open_account("TH-GOV", "TH", pb.GOVERNMENT))
    registry.execute(open_account("JP-PP", "JP"))
    return registry


def a6_4(issuance_id: str, start: int, end: int, account_id: str = "TH-PP") -> pb.RecordIssuance:
    return issuance(issuance_id, account_id, start, end, namespace="A64-TH", standard=pb.A6_4ER)


def units(registry: MemoryRegistry, account_id: str, status: Status = Status.HELD) -> int:
    return sum(b.quantity for b in registry.index.holdings(account_id) if b.status == status)


def refused(registry: MemoryRegistry, command: Message) -> str:
    with pytest.raises(DomainError) as caught:
        registry.decide(command)
    return caught.value.code


def test_a6_4_units_pass_the_pending_account_and_pay_both_levies_rounded_up(registry: MemoryRegistry) -> None:
    issued, allocated = screened(registry, a6_4("I-1", 1, 1001))
    assert isinstance(issued, pb.UnitsIssued) and issued.account_id == "UN-A64-PENDING"
    assert isinstance(allocated, pb.UnitsAllocated) and allocated.policy == "a6.4-issuance@2026-01"
    pieces = [(a.role, a.account_id, a.block.start, a.block.end, a.cancelled) for a in allocated.allocations]
    # 5 % of 1001 is 50.05 and 2 % is 20.02: both rounded up.
    assert pieces == [
        ("share_of_proceeds", "UN-A64-SOP-AF", 1, 51, False),
        ("omge", "UN-A64-OMGE", 52, 72, True),
        ("participants", "TH-PP", 73, 1001, False),
    ]
    assert units(registry, "UN-A64-PENDING") == 0
    assert units(registry, "UN-A64-SOP-AF") == 51
    assert units(registry, "UN-A64-OMGE", Status.CANCELLED) == 21
    assert units(registry, "TH-PP") == 929


def test_a6_4_refuses_what_its_accounts_cannot_take(registry: MemoryRegistry) -> None:
    assert refused(registry, a6_4("I-1", 1, 1)) == "ISSUANCE_ALLOCATION_INVALID"  # 1 + 1 levied of 1
    assert refused(registry, a6_4("I-1", 1, 100, account_id="TH-NOBODY")) == "ACCOUNT_UNKNOWN"
    bare = MemoryRegistry(issuance=SHIPPED)
    bare.execute(open_account("TH-PP", "TH"))
    assert refused(bare, a6_4("I-1", 1, 100)) == "ACCOUNT_UNKNOWN"  # no pending account
    wrong = MemoryRegistry(issuance=SHIPPED)
    for account_id in ("UN-A64-PENDING", "UN-A64-SOP-AF", "UN-A64-OMGE"):
        wrong.execute(open_account(account_id, "UN", pb.PENDING))
    wrong.execute(open_account("TH-PP", "TH"))
    assert refused(wrong, a6_4("I-1", 1, 100)) == "ACCOUNT_TYPE_NOT_ALLOWED"  # the SOP account is PENDING


def test_jcm_splits_with_thailand_s_government_when_the_issuance_names_it(registry: MemoryRegistry) -> None:
    jcm = issuance("I-1", "TH-PP", 1, 10_001)
    jcm.accounts["host_government"] = "TH-GOV"
    _, allocated = screened(registry, jcm)
    assert isinstance(allocated, pb.UnitsAllocated) and allocated.policy == "jcm-th-allocation@2026-02"
    assert (units(registry, "TH-GOV"), units(registry, "TH-PP")) == (5000, 5001)  # rounded down
    # Not named: the Joint Committee allocated otherwise; the whole block to the issuance's account.
    [alone] = screened(registry, issuance("I-2", "TH-PP", 20_001, 21_000))
    assert isinstance(alone, pb.UnitsIssued)
    named_wrong = issuance("I-3", "TH-PP", 30_001, 31_000)
    named_wrong.accounts["host_government"] = "JP-PP"
    assert refused(registry, named_wrong) == "ACCOUNT_TYPE_NOT_ALLOWED"


def test_a_jcm_issuance_lands_with_thailand_and_half_goes_to_japan_s_side(registry: MemoryRegistry) -> None:
    """DOMAIN.md scenario 1: the Joint Committee's 10,000 t, half to Thailand's government."""
    jcm = issuance("JC-TH-2024", "JP-PP", 1, 10_000)
    jcm.accounts["host_government"] = "TH-GOV"
    issued, allocated = screened(registry, jcm)
    assert isinstance(issued, pb.UnitsIssued) and issued.account_id == "TH-GOV"
    assert isinstance(allocated, pb.UnitsAllocated)
    assert [(a.role, a.account_id, a.jurisdiction, a.block.start, a.block.end) for a in allocated.allocations] == [
        ("host_government", "TH-GOV", "TH", 1, 5000),
        ("participants", "JP-PP", "JP", 5001, 10_000),
    ]
    assert (units(registry, "TH-GOV"), units(registry, "JP-PP")) == (5000, 5000)
    # Both registries hear of it.
    assert {topic for topic, _ in destinations(allocated)} >= {"registry.outbound.TH", "registry.outbound.JP"}


@given(quantity=st.integers(2, 10**12))
def test_levies_are_at_least_their_share_and_nothing_is_lost(quantity: int) -> None:
    assert A6_4 is not None
    pieces = allocate(A6_4, 1, quantity)
    sizes = {p.role: p.end - p.start + 1 for p in pieces}
    assert sizes["share_of_proceeds"] * 100 >= 5 * quantity > (sizes["share_of_proceeds"] - 1) * 100
    assert sizes["omge"] * 100 >= 2 * quantity > (sizes["omge"] - 1) * 100
    assert sum(sizes.values()) == quantity
    assert [p.start for p in pieces] == [1] + [p.end + 1 for p in pieces[:-1]]  # consecutive


def rules(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = json.loads((HERE / "issuance" / "a6_4.json").read_text())
    return base | overrides


@pytest.mark.parametrize(
    "document",
    [
        rules(shares=[]),
        rules(shares=[{"role": "a", "basis_points": 6000, "rounding": "up", "account_type": "HOLDING"}] * 2),
        rules(shares=[{"role": "participants", "basis_points": 10, "rounding": "up", "account_type": "HOLDING"}]),
        rules(shares=[{"role": "a", "basis_points": 0, "rounding": "up", "account_type": "HOLDING"}]),
        rules(shares=[{"role": "a", "basis_points": 10, "rounding": "nearest", "account_type": "HOLDING"}]),
        rules(host_party="Thailand"),
        rules(programme="EUA"),
        rules(surprise=True),
        rules(shares=[{"role": "pending", "basis_points": 10, "rounding": "up", "account_type": "HOLDING"}]),
    ],
)
def test_a_rules_file_that_does_not_validate_is_refused(document: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        IssuanceRules.model_validate(document)


def test_the_loader_names_the_bad_file_and_refuses_two_rules_for_one_programme(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(json.dumps(rules(version="")))
    with pytest.raises(ValueError, match=r"bad\.json"):
        issuance_policies(tmp_path)
    (tmp_path / "bad.json").unlink()
    for name in ("one.json", "two.json"):
        (tmp_path / name).write_text(json.dumps(rules()))
    with pytest.raises(ValueError, match="two issuance rules"):
        issuance_policies(tmp_path)
    assert IssuancePolicies().for_block(pb.UnitAttributes(standard=pb.A6_4ER, host_party="TH")) is None


def test_the_published_schema_is_the_models() -> None:
    assert SCHEMA.read_text() == schema()
