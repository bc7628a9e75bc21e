"""The Union Registry's controls in the registry's pure core: freezes, the trusted list with
four eyes and a delay, per-transfer limits, scheduled transfers that complete or are
cancelled exactly once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.protobuf.message import Message

from services.common.errors import DomainError
from services.registry.domain.blocks import Status
from services.registry.domain.controls import Policy
from services.registry.domain.memory import MemoryRegistry
from tests.unit.factories import issuance, open_account, screened
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as pb

POLICY = Policy(trust_delay=timedelta(days=7), untrusted_delay=timedelta(hours=26), untrusted_cap=1000)


@pytest.fixture
def registry() -> MemoryRegistry:
    registry = MemoryRegistry(POLICY)
    registry.execute(open_account("TH-CO", "TH"))
    registry.execute(open_account("CH-BUYER", "CH"))
    screened(registry, issuance("I-1", "TH-CO", 1, 5000))
    return registry


def refused(registry: MemoryRegistry, command: Message, channel: str = "") -> str:
    with pytest.raises(DomainError) as caught:
        registry.decide(command, channel)
    return caught.value.code


def reserve(reservation_id: str, quantity: int) -> pb.ReserveUnits:
    return pb.ReserveUnits(reservation_id=reservation_id, account_id="TH-CO", quantity=quantity)


def send(transfer_id: str, quantity: int, to: str = "CH-BUYER") -> pb.RequestTransfer:
    return pb.RequestTransfer(
        transfer_id=transfer_id, account_id="TH-CO", to_account_id=to, quantity=quantity, by="rep-1"
    )


def held(registry: MemoryRegistry, account_id: str) -> int:
    return sum(b.quantity for b in registry.index.holdings(account_id) if b.status == Status.HELD)


def trust(registry: MemoryRegistry, trusted: str = "CH-BUYER") -> None:
    registry.execute(pb.ProposeTrustedAccount(account_id="TH-CO", trusted_account_id=trusted, by="rep-1"))
    registry.execute(pb.ApproveTrustedAccount(account_id="TH-CO", trusted_account_id=trusted, by="rep-2"))


def test_a_frozen_account_moves_no_units_until_unfrozen(registry: MemoryRegistry) -> None:
    registry.execute(reserve("R-1", 10))
    [frozen] = registry.execute(pb.FreezeAccount(account_id="TH-CO", reason="suspected hijack", by="regulator-th"))
    assert isinstance(frozen, pb.AccountFrozen) and (frozen.jurisdiction, frozen.by) == ("TH", "regulator-th")
    assert refused(registry, reserve("R-2", 10)) == "ACCOUNT_FROZEN"
    transfer = pb.TransferUnits(transfer_id="T-1", reservation_id="R-1", to_account_id="CH-BUYER", quantity=10)
    assert refused(registry, transfer) == "ACCOUNT_FROZEN"
    assert refused(registry, send("X-1", 5)) == "ACCOUNT_FROZEN"
    # Units still come in, and the venue may still give a reservation back.
    registry.execute(pb.ReleaseReservation(reservation_id="R-1", quantity=10))
    assert registry.execute(pb.FreezeAccount(account_id="TH-CO", reason="again", by="x")) == []
    registry.execute(pb.UnfreezeAccount(account_id="TH-CO", reason="cleared", by="regulator-th"))
    [reserved] = registry.execute(reserve("R-2", 10))
    assert isinstance(reserved, pb.UnitsReserved)


def test_a_freeze_needs_a_reason(registry: MemoryRegistry) -> None:
    assert refused(registry, pb.FreezeAccount(account_id="TH-CO", reason="")) == "REASON_REQUIRED"
    assert refused(registry, pb.FreezeAccount(account_id="TH-CO", reason="a\x00b")) == "REASON_REQUIRED"
    assert refused(registry, pb.FreezeAccount(account_id="TH-NOBODY", reason="r")) == "ACCOUNT_UNKNOWN"


def test_a_frozen_project_s_units_neither_reserve_nor_transfer(registry: MemoryRegistry) -> None:
    screened(registry, issuance("I-2", "TH-CO", 6001, 7000, project_id="TH-WIND-2"))
    registry.execute(reserve("R-1", 10))  # the lowest serials: TH-FSOLAR-1's
    registry.execute(pb.FreezeProject(project_id="TH-FSOLAR-1", host_party="TH", reason="review", by="reg"))
    assert refused(registry, reserve("R-2", 10)) == "PROJECT_FROZEN"
    transfer = pb.TransferUnits(transfer_id="T-1", reservation_id="R-1", to_account_id="CH-BUYER", quantity=10)
    assert refused(registry, transfer) == "PROJECT_FROZEN"
    freeze_elsewhere = pb.FreezeProject(project_id="TH-FSOLAR-1", host_party="CN", reason="mine", by="reg")
    assert refused(registry, freeze_elsewhere) == "PROJECT_PARTY_MISMATCH"
    registry.execute(pb.UnfreezeProject(project_id="TH-FSOLAR-1", host_party="TH", reason="cleared", by="reg"))
    [delivered] = registry.execute(transfer)
    assert isinstance(delivered, pb.UnitsTransferred)


def test_a_trusted_account_needs_a_second_person_and_the_delay(registry: MemoryRegistry) -> None:
    registry.execute(pb.ProposeTrustedAccount(account_id="TH-CO", trusted_account_id="CH-BUYER", by="rep-1"))
    same = pb.ApproveTrustedAccount(account_id="TH-CO", trusted_account_id="CH-BUYER", by="rep-1")
    assert refused(registry, same) == "FOUR_EYES_REQUIRED"
    [approved] = registry.execute(
        pb.ApproveTrustedAccount(account_id="TH-CO", trusted_account_id="CH-BUYER", by="rep-2")
    )
    assert isinstance(approved, pb.TrustedAccountApproved)
    assert approved.effective_at.ToDatetime().replace(tzinfo=registry.now.tzinfo) == registry.now + POLICY.trust_delay
    # Not effective yet: a transfer to it is still scheduled.
    [_, scheduled] = screened(registry, send("X-1", 5))
    assert isinstance(scheduled, pb.TransferScheduled)
    registry.now += POLICY.trust_delay
    [_, delivered] = screened(registry, send("X-2", 5))
    assert isinstance(delivered, pb.UnitsTransferred) and delivered.to_account_id == "CH-BUYER"
    assert held(registry, "CH-BUYER") == 5
    propose_again = pb.ProposeTrustedAccount(account_id="TH-CO", trusted_account_id="CH-BUYER", by="rep-3")
    assert refused(registry, propose_again) == "TRUSTED_ACCOUNT_EXISTS"
    own = pb.ProposeTrustedAccount(account_id="TH-CO", trusted_account_id="TH-CO", by="rep-3")
    assert refused(registry, own) == "TRUSTED_ACCOUNT_INVALID"


def test_an_approved_transfer_completes_only_if_its_units_can_still_leave(registry: MemoryRegistry) -> None:
    trust(registry)
    registry.now += POLICY.trust_delay
    [_, proposal] = registry.execute(send("X-1", 5))
    assert isinstance(proposal, pb.ScreenProposal) and proposal.transaction_type == "10-00"
    assert held(registry, "CH-BUYER") == 0  # nothing moves before the transaction log answers
    registry.execute(pb.FreezeAccount(account_id="TH-CO", reason="takeover suspected", by="regulator"))
    approval = cpb.ProposalScreened(proposal_id="X-1", account_id="TH-CO", verdict=cpb.APPROVED)
    [rejected, released] = registry.execute(approval)
    assert isinstance(rejected, pb.ProposalRejected) and rejected.code == "ACCOUNT_FROZEN"
    assert isinstance(released, pb.ReservationReleased) and released.quantity == 5
    assert held(registry, "CH-BUYER") == 0


def test_removing_trust_takes_effect_at_once(registry: MemoryRegistry) -> None:
    trust(registry)
    registry.now += POLICY.trust_delay
    registry.execute(pb.RemoveTrustedAccount(account_id="TH-CO", trusted_account_id="CH-BUYER", by="rep-1"))
    [_, scheduled] = screened(registry, send("X-1", 5))
    assert isinstance(scheduled, pb.TransferScheduled)


def test_an_untrusted_transfer_waits_is_capped_and_completes_once(registry: MemoryRegistry) -> None:
    assert refused(registry, send("X-1", POLICY.untrusted_cap + 1)) == "TRANSFER_LIMIT_EXCEEDED"
    [reserved, scheduled] = screened(registry, send("X-1", 300))
    assert isinstance(reserved, pb.UnitsReserved) and isinstance(scheduled, pb.TransferScheduled)
    assert held(registry, "TH-CO") == 4700 and held(registry, "CH-BUYER") == 0
    execute = pb.ExecuteTransfer(transfer_id="X-1", account_id="TH-CO")
    assert refused(registry, execute) == "TRANSFER_NOT_DUE"
    # The venue can neither deliver nor give back a scheduled transfer's units.
    steal = pb.TransferUnits(transfer_id="T-9", reservation_id="X-1", to_account_id="CH-BUYER", quantity=300)
    assert refused(registry, steal) == "RESERVATION_HELD_FOR_TRANSFER"
    give_back = pb.ReleaseReservation(reservation_id="X-1", quantity=300)
    assert refused(registry, give_back) == "RESERVATION_HELD_FOR_TRANSFER"
    registry.now += POLICY.untrusted_delay
    [delivered] = registry.execute(execute)
    assert isinstance(delivered, pb.UnitsTransferred) and delivered.quantity == 300
    assert held(registry, "CH-BUYER") == 300
    assert registry.execute(execute) == []  # another scheduler's second go records nothing
    assert refused(registry, send("X-1", 5)) == "SEQUENCE_DUPLICATE_ID"


def test_a_trusted_transfer_is_not_capped_by_the_registry(registry: MemoryRegistry) -> None:
    trust(registry)
    registry.now += POLICY.trust_delay
    [_, delivered] = screened(registry, send("X-1", POLICY.untrusted_cap + 1))
    assert isinstance(delivered, pb.UnitsTransferred)


def test_the_account_s_own_limit_applies_to_every_outgoing_transfer(registry: MemoryRegistry) -> None:
    registry.execute(pb.SetTransferLimit(account_id="TH-CO", per_transfer=50, by="rep-1"))
    assert refused(registry, reserve("R-1", 51)) == "TRANSFER_LIMIT_EXCEEDED"
    assert refused(registry, send("X-1", 51)) == "TRANSFER_LIMIT_EXCEEDED"
    registry.execute(reserve("R-1", 50))
    registry.execute(pb.SetTransferLimit(account_id="TH-CO", per_transfer=0, by="rep-1"))
    registry.execute(reserve("R-2", 51))


def test_a_cancelled_transfer_gives_its_units_back(registry: MemoryRegistry) -> None:
    screened(registry, send("X-1", 300))
    cancel = pb.CancelTransfer(transfer_id="X-1", account_id="TH-CO", reason="not ours", by="rep-2")
    [cancelled, released] = registry.execute(cancel)
    assert isinstance(cancelled, pb.TransferCancelled) and cancelled.code == "TRANSFER_CANCELLED"
    assert isinstance(released, pb.ReservationReleased) and released.quantity == 300
    assert held(registry, "TH-CO") == 5000
    assert refused(registry, cancel) == "TRANSFER_UNKNOWN"
    registry.now += POLICY.untrusted_delay
    assert registry.execute(pb.ExecuteTransfer(transfer_id="X-1", account_id="TH-CO")) == []


def test_a_transfer_due_on_a_frozen_account_is_cancelled_with_that_reason(registry: MemoryRegistry) -> None:
    screened(registry, send("X-1", 300))
    registry.execute(pb.FreezeAccount(account_id="TH-CO", reason="suspected hijack", by="reg"))
    registry.now += POLICY.untrusted_delay
    [cancelled, released] = registry.execute(pb.ExecuteTransfer(transfer_id="X-1", account_id="TH-CO"))
    assert isinstance(cancelled, pb.TransferCancelled) and cancelled.code == "ACCOUNT_FROZEN"
    assert isinstance(released, pb.ReservationReleased)
    assert held(registry, "TH-CO") == 5000 and held(registry, "CH-BUYER") == 0


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (pb.FreezeAccount(account_id="CH-BUYER", reason="r"), "CHANNEL_JURISDICTION_MISMATCH"),
        (pb.FreezeProject(project_id="P", host_party="CH", reason="r"), "CHANNEL_JURISDICTION_MISMATCH"),
        (pb.ProposeTrustedAccount(account_id="TH-CO", trusted_account_id="CH-BUYER"), "COMMAND_NOT_ALLOWED_ON_CHANNEL"),
        (
            pb.RequestTransfer(transfer_id="X", account_id="TH-CO", to_account_id="CH-BUYER", quantity=1),
            "COMMAND_NOT_ALLOWED_ON_CHANNEL",
        ),
        (pb.SetTransferLimit(account_id="TH-CO", per_transfer=1), "COMMAND_NOT_ALLOWED_ON_CHANNEL"),
    ],
)
def test_a_national_registry_freezes_only_its_own_and_never_moves_units(
    registry: MemoryRegistry, command: Message, code: str
) -> None:
    assert refused(registry, command, channel="TH") == code


def test_the_own_channel_may_freeze(registry: MemoryRegistry) -> None:
    [frozen] = registry.decide(pb.FreezeAccount(account_id="TH-CO", reason="court order"), "TH")
    assert isinstance(frozen, pb.AccountFrozen)


def test_an_account_id_names_its_jurisdiction(registry: MemoryRegistry) -> None:
    assert refused(registry, open_account("CH-SQUAT", "CN")) == "ACCOUNT_INVALID"
    assert refused(registry, open_account("ACCT-1", "TH")) == "ACCOUNT_INVALID"


def freeze(freeze_id: str, start: int, end: int, account: str = "TH-CO") -> pb.FreezeBlocks:
    return pb.FreezeBlocks(
        freeze_id=freeze_id, account_id=account, namespace="JCM-TH", start=start, end=end, reason="under review"
    )


def test_frozen_serials_stay_put_until_unfrozen(registry: MemoryRegistry) -> None:
    [frozen] = registry.execute(freeze("F-1", 1, 100))
    assert isinstance(frozen, pb.BlocksFrozen) and [(b.start, b.end) for b in frozen.blocks] == [(1, 100)]
    assert held(registry, "TH-CO") == 4900
    # The reservation takes the lowest serials still held; nothing frozen moves.
    [reserved] = registry.execute(reserve("R-1", 10))
    assert isinstance(reserved, pb.UnitsReserved) and [(b.start, b.end) for b in reserved.blocks] == [(101, 110)]
    assert refused(registry, freeze("F-2", 100, 120)) == "UNITS_NOT_HELD"  # 100 frozen, 101-110 reserved
    assert refused(registry, freeze("F-1", 200, 300)) == "SEQUENCE_DUPLICATE_ID"  # in force
    assert refused(registry, freeze("F-3", 4990, 5010)) == "UNITS_NOT_HELD"  # 5001- never issued
    assert refused(registry, pb.UnfreezeBlocks(freeze_id="F-9", account_id="TH-CO", reason="r")) == "FREEZE_UNKNOWN"
    [thawed] = registry.execute(pb.UnfreezeBlocks(freeze_id="F-1", account_id="TH-CO", reason="cleared"))
    assert isinstance(thawed, pb.BlocksUnfrozen) and [(b.start, b.end) for b in thawed.blocks] == [(1, 100)]
    assert held(registry, "TH-CO") == 4990
    # A national registry freezes only its own accounts' serials.
    assert refused(registry, freeze("F-4", 1, 10), "CH") == "CHANNEL_JURISDICTION_MISMATCH"
    [own] = registry.execute(freeze("F-4", 1, 10), "TH")
    assert isinstance(own, pb.BlocksFrozen)
