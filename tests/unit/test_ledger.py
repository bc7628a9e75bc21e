from __future__ import annotations

import contextlib
import itertools

import pytest
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import DomainError
from services.registry.domain.blocks import Status
from services.registry.domain.ledger import Ledger
from tests.unit.factories import issuance, loa, open_account
from tonne.v1 import registry_pb2 as pb


def run(ledger: Ledger, command: Message) -> list[Message]:
    events = ledger.decide(command)
    for event in events:
        ledger.apply(event)
    return events


@pytest.fixture
def ledger() -> Ledger:
    ledger = Ledger()
    run(ledger, open_account("TH-GOV", "TH", pb.GOVERNMENT))
    run(ledger, open_account("CH-BUYER", "CH"))
    run(ledger, loa())
    run(ledger, issuance("I-1", "TH-GOV", 1, 5000, authorization_id="LOA-TH-1"))
    return ledger


def reserve(reservation_id: str, quantity: int, account: str = "TH-GOV") -> pb.ReserveUnits:
    return pb.ReserveUnits(
        reservation_id=reservation_id,
        account_id=account,
        quantity=quantity,
        selector=pb.UnitSelector(standard=pb.JCM, host_party="TH", vintage=2024, authorized_for=pb.NDC),
    )


def test_issuance_records_one_block(ledger: Ledger) -> None:
    [block] = ledger.holdings("TH-GOV")
    assert (block.namespace, block.start, block.end, block.status) == ("JCM-TH", 1, 5000, Status.HELD)


def test_overlapping_issuance_is_double_issuance(ledger: Ledger) -> None:
    with pytest.raises(DomainError) as caught:
        ledger.decide(issuance("I-2", "TH-GOV", 4000, 6000))
    assert caught.value.code == "DOUBLE_ISSUANCE_OVERLAP"
    assert caught.value.evidence == ["JCM-TH:1-5000"]


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (issuance("I-3", "TH-GOV", 10, 9), "SERIAL_RANGE_INVALID"),
        (issuance("I-1", "TH-GOV", 9000, 9001), "SEQUENCE_DUPLICATE_ID"),
        (issuance("I-4", "NOBODY", 9000, 9001), "ACCOUNT_UNKNOWN"),
        (issuance("I-5", "TH-GOV", 9000, 9001, authorization_id="LOA-NONE"), "AUTHORIZATION_UNKNOWN"),
        (issuance("I-6", "CH-BUYER", 9000, 9001), "ACCOUNT_TYPE_NOT_ALLOWED"),
        (open_account("CH-BUYER", "CH"), "ACCOUNT_EXISTS"),
        (open_account("X", "Thailand"), "ACCOUNT_INVALID"),
        (reserve("R-1", 0), "QUANTITY_INVALID"),
        (reserve("R-1", 5001), "HOLDINGS_INSUFFICIENT"),
        (
            pb.TransferUnits(transfer_id="T", reservation_id="R-none", to_account_id="CH-BUYER", quantity=1),
            "RESERVATION_UNKNOWN",
        ),
    ],
)
def test_bad_commands_are_refused_and_change_nothing(ledger: Ledger, command: Message, code: str) -> None:
    before = sorted((b.namespace, b.start, b.end, b.account_id, b.status) for b in ledger.holdings("TH-GOV"))
    with pytest.raises(DomainError) as caught:
        ledger.decide(command)
    assert caught.value.code == code
    after = sorted((b.namespace, b.start, b.end, b.account_id, b.status) for b in ledger.holdings("TH-GOV"))
    assert after == before


def test_reserve_then_transfer_splits_blocks(ledger: Ledger) -> None:
    [reserved] = run(ledger, reserve("R-1", 3000))
    assert isinstance(reserved, pb.UnitsReserved)
    assert [(b.start, b.end) for b in reserved.blocks] == [(1, 3000)]
    [moved] = run(
        ledger, pb.TransferUnits(transfer_id="T-1", reservation_id="R-1", to_account_id="CH-BUYER", quantity=1000)
    )
    assert isinstance(moved, pb.UnitsTransferred)
    assert (moved.from_jurisdiction, moved.to_jurisdiction) == ("TH", "CH")
    assert [(b.start, b.end) for b in moved.blocks] == [(1, 1000)]
    assert [(b.start, b.end, b.status) for b in ledger.holdings("CH-BUYER")] == [(1, 1000, Status.HELD)]
    seller = sorted((b.start, b.end, b.status) for b in ledger.holdings("TH-GOV"))
    assert seller == [(1001, 3000, Status.RESERVED), (3001, 5000, Status.HELD)]


def test_transfer_cannot_exceed_reservation(ledger: Ledger) -> None:
    run(ledger, reserve("R-1", 100))
    with pytest.raises(DomainError) as caught:
        ledger.decide(pb.TransferUnits(transfer_id="T", reservation_id="R-1", to_account_id="CH-BUYER", quantity=101))
    assert caught.value.code == "RESERVATION_INSUFFICIENT"


def test_release_returns_the_highest_reserved_serials(ledger: Ledger) -> None:
    run(ledger, reserve("R-1", 100))
    [released] = run(ledger, pb.ReleaseReservation(reservation_id="R-1", quantity=40))
    assert isinstance(released, pb.ReservationReleased)
    assert [(b.start, b.end) for b in released.blocks] == [(61, 100)]
    assert sum(b.quantity for b in ledger.reserved("R-1")) == 60


def test_reserved_units_cannot_be_reserved_again(ledger: Ledger) -> None:
    run(ledger, reserve("R-1", 5000))
    with pytest.raises(DomainError) as caught:
        ledger.decide(reserve("R-2", 1))
    assert caught.value.code == "HOLDINGS_INSUFFICIENT"


@given(st.lists(st.tuples(st.sampled_from(["reserve", "transfer", "release"]), st.integers(1, 700)), max_size=30))
def test_units_are_conserved_and_never_overlap(steps: list[tuple[str, int]]) -> None:
    ledger = Ledger()
    for setup in (
        open_account("TH-GOV", "TH", pb.GOVERNMENT),
        open_account("CH-BUYER", "CH"),
        loa(),
        issuance("I-1", "TH-GOV", 1, 2000, authorization_id="LOA-TH-1"),
    ):
        run(ledger, setup)
    for n, (action, quantity) in enumerate(steps):
        command: Message
        if action == "reserve":
            command = reserve(f"R-{n}", quantity)
        else:
            open_reservations = sorted(
                {b.reservation_id for b in ledger.blocks["JCM-TH"] if b.status is Status.RESERVED}
            )
            if not open_reservations:
                continue
            rid = open_reservations[0]
            command = (
                pb.TransferUnits(transfer_id=f"T-{n}", reservation_id=rid, to_account_id="CH-BUYER", quantity=quantity)
                if action == "transfer"
                else pb.ReleaseReservation(reservation_id=rid, quantity=quantity)
            )
        with contextlib.suppress(DomainError):
            run(ledger, command)
        blocks = sorted(ledger.blocks["JCM-TH"], key=lambda b: b.start)
        assert sum(b.quantity for b in blocks) == 2000
        assert all(a.end < b.start for a, b in itertools.pairwise(blocks))
