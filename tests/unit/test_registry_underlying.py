"""An ITMO keeps both ID ranges (DOMAIN.md §3): its own serials and its units' serials in
the crediting registry, one offset for the whole issuance, so every piece a transfer
splits off knows its own underlying range; the AEF reports both."""

from __future__ import annotations

import pytest

from services.registry.domain.ledger import underlying
from services.registry.domain.memory import MemoryRegistry
from services.settlement.domain import aef
from tests.unit.factories import issuance, loa, open_account, screened
from tests.unit.test_registry_fingerprint import refused
from tonne.v1 import registry_pb2 as pb


def itmos(issuance_id: str, start: int, end: int, offset: int, registry: str = "VERRA") -> pb.RecordIssuance:
    command = issuance(issuance_id, "TH-GOV", start, end, authorization_id="LOA-TH-1")
    attributes = command.block.attributes
    attributes.underlying_registry, attributes.underlying_namespace = registry, "VCS-2250"
    attributes.underlying_offset = offset
    return command


@pytest.fixture
def registry() -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.execute(open_account("TH-GOV", "TH", pb.GOVERNMENT))
    registry.execute(open_account("CH-BUYER", "CH"))
    registry.execute(loa())
    return registry


def test_every_piece_knows_its_underlying_units(registry: MemoryRegistry) -> None:
    screened(registry, itmos("I-1", 1, 100, 5000))  # ITMOs 1-100 are VCS-2250 units 5001-5100
    registry.execute(pb.ReserveUnits(reservation_id="R-1", account_id="TH-GOV", quantity=30))
    [moved] = registry.execute(
        pb.TransferUnits(transfer_id="T-1", reservation_id="R-1", to_account_id="CH-BUYER", quantity=30)
    )
    assert isinstance(moved, pb.UnitsTransferred)
    [piece] = moved.blocks
    assert (piece.start, piece.end) == (1, 30)
    assert underlying(piece.start, piece.end, piece.attributes) == (5001, 5030)
    [kept] = [b for b in registry.index.holdings("TH-GOV")]
    assert underlying(kept.start, kept.end, kept.units.message()) == (5031, 5100)
    # The AEF's rows carry both ranges.
    made = aef.actions(moved, "T-1", 2026, [])
    assert len(made) == 2  # a transfer and an acquisition
    for action in made:
        assert (action.underlying_registry, action.underlying.namespace) == ("VERRA", "VCS-2250")
        assert (action.underlying.start, action.underlying.end) == (5001, 5030)


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (itmos("I-2", 1, 100, -1), "UNITS_INVALID"),  # underlying serial 0
        (itmos("I-3", 1, 100, 2**63 - 50), "UNITS_INVALID"),  # beyond int64
        (itmos("I-4", 1, 100, 10, registry=""), "UNITS_INVALID"),  # whose units?
        (itmos("I-5", 1, 100, 10, registry="A" * 65), "IDENTIFIER_INVALID"),
    ],
)
def test_an_underlying_range_is_whole(registry: MemoryRegistry, command: pb.RecordIssuance, code: str) -> None:
    assert refused(registry, command).code == code
