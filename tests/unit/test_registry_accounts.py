"""Accounts as the Kyoto and Union registries type them, in the registry's pure core:
terminal accounts keep what reaches them, closed accounts take nothing in or out, and
every transfer id is used once."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from services.common.errors import DomainError
from services.registry.domain.accounts import Account
from services.registry.domain.memory import MemoryRegistry
from tests.unit.factories import issuance, open_account, screened
from tonne.v1 import registry_pb2 as pb


@pytest.fixture
def registry() -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.execute(open_account("TH-CO", "TH"))
    registry.execute(open_account("CH-BUYER", "CH", pb.TRADING))
    screened(registry, issuance("I-1", "TH-CO", 1, 5000))
    return registry


def refused(registry: MemoryRegistry, command: Message) -> str:
    with pytest.raises(DomainError) as caught:
        registry.decide(command)
    return caught.value.code


def deliver(registry: MemoryRegistry, transfer_id: str, quantity: int, to: str, reservation_id: str = "") -> None:
    reservation_id = reservation_id or f"R-{transfer_id}"
    registry.execute(pb.ReserveUnits(reservation_id=reservation_id, account_id="TH-CO", quantity=quantity))
    registry.execute(
        pb.TransferUnits(transfer_id=transfer_id, reservation_id=reservation_id, to_account_id=to, quantity=quantity)
    )


def close(account_id: str) -> pb.CloseAccount:
    return pb.CloseAccount(account_id=account_id, reason="holder left the scheme", by="operator")


@pytest.mark.parametrize("kind", [pb.RETIREMENT, pb.CANCELLATION, pb.MANDATORY_CANCELLATION, pb.OMGE_CANCELLATION])
def test_units_that_reach_a_terminal_account_never_leave_it(
    registry: MemoryRegistry, kind: pb.AccountType.ValueType
) -> None:
    registry.execute(open_account("TH-END", "TH", kind))
    deliver(registry, "T-1", 100, "TH-END")
    reserve = pb.ReserveUnits(reservation_id="R-2", account_id="TH-END", quantity=10)
    assert refused(registry, reserve) == "ACCOUNT_TERMINAL"
    retire = pb.RetireUnits(
        retirement_id="RT-1",
        account_id="TH-END",
        quantity=10,
        beneficiary="b",
        purpose="p",
        use=pb.CLAIM_NDC,
        claim_year=2025,
    )
    assert refused(registry, retire) == "ACCOUNT_TERMINAL"
    assert refused(registry, issuance("I-2", "TH-END", 6001, 7000)) == "ACCOUNT_TYPE_NOT_ALLOWED"


def test_a_transfer_id_is_used_once_whatever_the_reservation(registry: MemoryRegistry) -> None:
    deliver(registry, "T-1", 10, "CH-BUYER")
    registry.execute(pb.ReserveUnits(reservation_id="R-2", account_id="TH-CO", quantity=10))
    again = pb.TransferUnits(transfer_id="T-1", reservation_id="R-2", to_account_id="CH-BUYER", quantity=10)
    assert refused(registry, again) == "SEQUENCE_DUPLICATE_ID"
    # A holder's transfer cannot take a delivery's id either.
    holder = pb.RequestTransfer(transfer_id="T-1", account_id="TH-CO", to_account_id="CH-BUYER", quantity=5, by="x")
    assert refused(registry, holder) == "SEQUENCE_DUPLICATE_ID"


def test_an_account_closes_only_when_it_holds_nothing(registry: MemoryRegistry) -> None:
    deliver(registry, "T-1", 10, "CH-BUYER")
    assert refused(registry, close("CH-BUYER")) == "ACCOUNT_NOT_EMPTY"
    registry.execute(pb.ReserveUnits(reservation_id="R-B", account_id="CH-BUYER", quantity=10))
    # Reserved units and the open reservation keep it open too.
    assert refused(registry, close("CH-BUYER")) == "ACCOUNT_NOT_EMPTY"
    assert refused(registry, pb.CloseAccount(account_id="CH-BUYER", reason="")) == "REASON_REQUIRED"
    assert refused(registry, close("CH-NOBODY")) == "ACCOUNT_UNKNOWN"


def test_a_closed_account_takes_nothing_in_or_out(registry: MemoryRegistry) -> None:
    registry.execute(open_account("TH-OLD", "TH"))
    [closed] = registry.execute(close("TH-OLD"))
    assert isinstance(closed, pb.AccountClosed) and (closed.jurisdiction, closed.by) == ("TH", "operator")
    registry.execute(pb.ReserveUnits(reservation_id="R-1", account_id="TH-CO", quantity=10))
    into = pb.TransferUnits(transfer_id="T-1", reservation_id="R-1", to_account_id="TH-OLD", quantity=10)
    assert refused(registry, into) == "ACCOUNT_CLOSED"
    assert refused(registry, issuance("I-2", "TH-OLD", 6001, 7000)) == "ACCOUNT_CLOSED"
    assert refused(registry, pb.ReserveUnits(reservation_id="R-2", account_id="TH-OLD", quantity=1)) == "ACCOUNT_CLOSED"
    grant = pb.GrantMandate(mandate_id="M-1", account_id="TH-OLD", broker_id="broker-a")
    assert refused(registry, grant) == "ACCOUNT_CLOSED"
    assert refused(registry, close("TH-OLD")) == "ACCOUNT_CLOSED"


def test_a_closed_account_s_snapshot_keeps_it_closed(registry: MemoryRegistry) -> None:
    registry.execute(open_account("TH-OLD", "TH", pb.OMGE_CANCELLATION))
    registry.execute(close("TH-OLD"))
    account = registry.accounts["TH-OLD"]
    restored = Account.restore(account.stream_id, account.snapshot())
    assert restored.closed and restored.terminal and restored.snapshot() == account.snapshot()
