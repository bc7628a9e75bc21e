"""External transfers in the registry's pure core: proposed by the holder, answered by the
acquiring registry on its own channel only, returned when refused or unanswered; exported
units never move again; every late or foreign answer is refused and changes nothing."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from google.protobuf.message import Message

from services.common.errors import DomainError
from services.registry.domain.accounts import Account
from services.registry.domain.blocks import Status
from services.registry.domain.memory import MemoryRegistry
from tests.unit.factories import issuance, open_account, screened
from tonne.v1 import registry_pb2 as pb


@pytest.fixture
def registry() -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.execute(open_account("TH-CO", "TH"))
    registry.execute(open_account("TH-OTHER", "TH"))
    screened(registry, issuance("I-1", "TH-CO", 1, 1000))
    return registry


def propose(transfer_id: str = "X-1", quantity: int = 300, to: str = "JP") -> pb.ProposeExternalTransfer:
    return pb.ProposeExternalTransfer(
        transfer_id=transfer_id, account_id="TH-CO", to_registry=to, to_account="JP-100-7", quantity=quantity, by="rep"
    )


def answer(accepted: bool, transfer_id: str = "X-1", reason: str = "") -> pb.AnswerExternalTransfer:
    return pb.AnswerExternalTransfer(transfer_id=transfer_id, accepted=accepted, reason=reason)


def refused(registry: MemoryRegistry, command: Message, channel: str = "") -> str:
    with pytest.raises(DomainError) as caught:
        registry.decide(command, channel)
    return caught.value.code


def units(registry: MemoryRegistry, status: Status) -> int:
    return sum(b.quantity for b in registry.index.holdings("TH-CO") if b.status == status)


def test_an_accepted_proposal_exports_its_units_for_good(registry: MemoryRegistry) -> None:
    reserved, proposed = screened(registry, propose())
    assert isinstance(reserved, pb.UnitsReserved) and reserved.reservation_id == "X-1"
    assert isinstance(proposed, pb.ExternalTransferProposed)
    assert proposed.expires_at.ToDatetime(tzinfo=UTC) == registry.now + timedelta(hours=24)
    assert [(b.start, b.end) for b in proposed.blocks] == [(1, 300)]
    [completed] = registry.execute(answer(True), "JP")
    assert isinstance(completed, pb.ExternalTransferCompleted) and completed.to_account == "JP-100-7"
    assert (units(registry, Status.EXPORTED), units(registry, Status.HELD), units(registry, Status.RESERVED)) == (
        300,
        700,
        0,
    )
    # Exported serials are never picked again, and a second answer changes nothing.
    take_all = pb.ReserveUnits(reservation_id="R-1", account_id="TH-CO", quantity=701)
    assert refused(registry, take_all) == "HOLDINGS_INSUFFICIENT"
    assert refused(registry, answer(False, reason="changed our mind"), "JP") == "EXTERNAL_TRANSFER_UNKNOWN"
    assert registry.accounts["TH-CO"].reservations == {}


def test_a_refusal_returns_the_units_and_must_say_why(registry: MemoryRegistry) -> None:
    screened(registry, propose())
    assert refused(registry, answer(False), "JP") == "REASON_REQUIRED"
    [returned] = registry.execute(answer(False, reason="account JP-100-7 is closed"), "JP")
    assert isinstance(returned, pb.ExternalTransferReturned)
    assert (returned.code, returned.reason) == ("EXTERNAL_TRANSFER_REFUSED", "account JP-100-7 is closed")
    assert (units(registry, Status.HELD), units(registry, Status.RESERVED)) == (1000, 0)


def test_only_the_acquiring_registry_answers(registry: MemoryRegistry) -> None:
    screened(registry, propose())
    assert refused(registry, answer(True), "CH") == "CHANNEL_JURISDICTION_MISMATCH"
    assert refused(registry, answer(True)) == "CHANNEL_JURISDICTION_MISMATCH"  # not through the API either
    assert refused(registry, answer(True, transfer_id="X-NONE"), "JP") == "EXTERNAL_TRANSFER_UNKNOWN"
    # The venue cannot release or deliver the proposal's units meanwhile.
    release = pb.ReleaseReservation(reservation_id="X-1", quantity=300)
    assert refused(registry, release) == "RESERVATION_HELD_FOR_TRANSFER"
    # And a national registry cannot propose.
    assert refused(registry, propose("X-2"), "TH") == "COMMAND_NOT_ALLOWED_ON_CHANNEL"


def test_an_unanswered_proposal_returns_at_its_expiry_and_a_late_answer_is_refused(registry: MemoryRegistry) -> None:
    screened(registry, propose())
    expire = pb.ExpireExternalTransfer(transfer_id="X-1", account_id="TH-CO")
    registry.now += timedelta(hours=23)
    assert registry.execute(expire) == []  # not yet due
    registry.now += timedelta(hours=1)
    [returned] = registry.execute(expire)
    assert isinstance(returned, pb.ExternalTransferReturned) and returned.code == "EXTERNAL_TRANSFER_EXPIRED"
    assert registry.execute(expire) == []  # a racing scheduler returns it once
    assert refused(registry, answer(True), "JP") == "EXTERNAL_TRANSFER_UNKNOWN"
    assert units(registry, Status.HELD) == 1000


def test_a_freeze_after_the_proposal_holds_the_units_until_the_expiry(registry: MemoryRegistry) -> None:
    screened(registry, propose())
    registry.execute(pb.FreezeAccount(account_id="TH-CO", reason="suspected takeover", by="regulator-th"))
    assert refused(registry, answer(True), "JP") == "ACCOUNT_FROZEN"
    registry.now += timedelta(hours=24)
    [returned] = registry.execute(pb.ExpireExternalTransfer(transfer_id="X-1", account_id="TH-CO"))
    assert isinstance(returned, pb.ExternalTransferReturned)


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (propose(to="XX"), "EXTERNAL_REGISTRY_UNKNOWN"),
        (propose(to="TH"), "TRANSFER_INVALID"),  # its own registry: an internal transfer
        (propose(quantity=1001), "HOLDINGS_INSUFFICIENT"),
        (propose(quantity=0), "QUANTITY_INVALID"),
        (propose("X 1"), "IDENTIFIER_INVALID"),
    ],
)
def test_a_proposal_is_refused_with_its_reason(registry: MemoryRegistry, command: Message, code: str) -> None:
    assert refused(registry, command) == code


def test_a_transfer_id_is_proposed_once(registry: MemoryRegistry) -> None:
    screened(registry, propose())
    registry.execute(answer(False, reason="no"), "JP")
    assert refused(registry, propose()) == "SEQUENCE_DUPLICATE_ID"


def test_a_pending_proposal_survives_a_snapshot(registry: MemoryRegistry) -> None:
    screened(registry, propose())
    account = registry.accounts["TH-CO"]
    restored = Account.restore(account.stream_id, account.snapshot())
    assert restored.external == account.external and restored.snapshot() == account.snapshot()


def block(start: int, end: int, namespace: str = "VCU-JP", authorization_id: str = "") -> pb.SerialBlock:
    attributes = pb.UnitAttributes(
        standard=pb.VCU, host_party="JP", project_id="JP-W-1", vintage=2024, authorization_id=authorization_id
    )
    return pb.SerialBlock(namespace=namespace, start=start, end=end, attributes=attributes)


def inbound(transfer_id: str = "JP-T-1", *blocks: pb.SerialBlock, to: str = "TH-CO") -> pb.ProposeInboundTransfer:
    return pb.ProposeInboundTransfer(
        transfer_id=transfer_id,
        from_account="JP-100-7",
        to_account_id=to,
        blocks=list(blocks) or [block(1, 100), block(501, 600)],
    )


def test_units_from_another_registry_arrive_held_once_per_sender(registry: MemoryRegistry) -> None:
    [accepted] = registry.execute(inbound(), "JP")
    assert isinstance(accepted, pb.InboundTransferAccepted)
    assert (accepted.from_registry, accepted.quantity, accepted.jurisdiction) == ("JP", 200, "TH")
    assert units(registry, Status.HELD) == 1200
    assert refused(registry, inbound("JP-T-1", block(1001, 1100)), "JP") == "SEQUENCE_DUPLICATE_ID"
    # Another registry's transfer ids are its own.
    [other] = registry.execute(inbound("JP-T-1", block(1, 10, namespace="VCU-SG")), "SG")
    assert isinstance(other, pb.InboundTransferAccepted)


@pytest.mark.parametrize(
    ("command", "channel", "code"),
    [
        (inbound(), "", "COMMAND_NOT_ALLOWED_ON_CHANNEL"),  # not through the API
        (inbound("T", block(50, 60, namespace="JCM-TH")), "JP", "EXTERNAL_SERIALS_KNOWN"),  # issued here
        (inbound("T", block(1, 10), block(5, 20)), "JP", "SERIAL_RANGE_INVALID"),
        (inbound("T", block(10, 1)), "JP", "SERIAL_RANGE_INVALID"),
        (inbound("T", block(1, 10, authorization_id="LOA-NONE")), "JP", "AUTHORIZATION_UNKNOWN"),
        (inbound("T", pb.SerialBlock(namespace="X", start=1, end=2)), "JP", "UNITS_INVALID"),
        (inbound("T", *[block(n * 10 + 1, n * 10 + 10) for n in range(101)]), "JP", "TRANSFER_INVALID"),
        (inbound("T", to="TH-NOBODY"), "JP", "ACCOUNT_UNKNOWN"),
    ],
)
def test_an_inbound_transfer_is_refused_with_its_reason(
    registry: MemoryRegistry, command: Message, channel: str, code: str
) -> None:
    assert refused(registry, command, channel) == code


def test_exported_serials_come_back_only_from_where_they_went_as_they_left(registry: MemoryRegistry) -> None:
    screened(registry, propose())
    [completed] = registry.execute(answer(True), "JP")
    assert isinstance(completed, pb.ExternalTransferCompleted)
    [left] = completed.blocks  # JCM-TH 1-300, with the attributes it left with
    other = pb.SerialBlock(namespace=left.namespace, start=1, end=300, attributes=block(1, 1).attributes)
    assert refused(registry, inbound("JP-T-8", other), "JP") == "EXTERNAL_SERIALS_KNOWN"  # other attributes
    assert refused(registry, inbound("SG-T-1", left), "SG") == "EXTERNAL_SERIALS_KNOWN"  # went to JP, not SG
    wider = pb.SerialBlock(namespace=left.namespace, start=1, end=301, attributes=left.attributes)
    assert refused(registry, inbound("JP-T-8", wider), "JP") == "EXTERNAL_SERIALS_KNOWN"  # 301 is held here
    part = pb.SerialBlock(namespace=left.namespace, start=101, end=200, attributes=left.attributes)
    [back] = registry.execute(inbound("JP-T-9", part, to="TH-OTHER"), "JP")
    assert isinstance(back, pb.InboundTransferAccepted) and not back.blocks
    assert [(r.exported_by, r.block.start, r.block.end) for r in back.returning] == [("TH-CO", 101, 200)]
    assert sum(b.quantity for b in registry.index.holdings("TH-OTHER") if b.status == Status.HELD) == 100
    assert units(registry, Status.EXPORTED) == 200


def test_terminal_and_closed_accounts_take_no_inbound_units(registry: MemoryRegistry) -> None:
    registry.execute(open_account("TH-RET", "TH", pb.RETIREMENT))
    assert refused(registry, inbound(to="TH-RET"), "JP") == "ACCOUNT_TYPE_NOT_ALLOWED"
    registry.execute(open_account("TH-OLD", "TH"))
    registry.execute(pb.CloseAccount(account_id="TH-OLD", reason="left", by="op"))
    assert refused(registry, inbound(to="TH-OLD"), "JP") == "ACCOUNT_CLOSED"
