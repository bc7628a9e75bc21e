from __future__ import annotations

import contextlib
import itertools

import pytest
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import DomainError
from services.registry.domain import screening
from services.registry.domain.blocks import Status
from services.registry.domain.memory import MemoryRegistry
from tests.unit.factories import issuance, loa, open_account, screened
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as pb


@pytest.fixture
def registry() -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.execute(open_account("TH-GOV", "TH", pb.GOVERNMENT))
    registry.execute(open_account("CH-BUYER", "CH"))
    registry.execute(loa())
    screened(registry, issuance("I-1", "TH-GOV", 1, 5000, authorization_id="LOA-TH-1"))
    return registry


def reserve(reservation_id: str, quantity: int, account: str = "TH-GOV") -> pb.ReserveUnits:
    return pb.ReserveUnits(
        reservation_id=reservation_id,
        account_id=account,
        quantity=quantity,
        selector=pb.UnitSelector(standard=pb.JCM, host_party="TH", vintage=2024, authorized_for=pb.NDC),
    )


def with_host(command: pb.RecordIssuance, host: str) -> pb.RecordIssuance:
    command.block.attributes.host_party = host
    return command


def holdings(registry: MemoryRegistry, account_id: str) -> list[tuple[str, int, int, str, Status]]:
    return [(b.namespace, b.start, b.end, b.account_id, b.status) for b in registry.index.holdings(account_id)]


def test_issuance_records_one_block(registry: MemoryRegistry) -> None:
    [block] = registry.index.holdings("TH-GOV")
    assert (block.namespace, block.start, block.end, block.status) == ("JCM-TH", 1, 5000, Status.HELD)


def test_overlapping_issuance_is_double_issuance(registry: MemoryRegistry) -> None:
    with pytest.raises(DomainError) as caught:
        registry.decide(issuance("I-2", "TH-GOV", 4000, 6000))
    assert caught.value.code == "DOUBLE_ISSUANCE_OVERLAP"
    assert caught.value.evidence == ["JCM-TH:1-5000"]


def test_overlap_evidence_names_every_block_the_range_touches(registry: MemoryRegistry) -> None:
    screened(registry, issuance("I-2", "TH-GOV", 6001, 7000))
    screened(registry, issuance("I-3", "TH-GOV", 8001, 9000))
    with pytest.raises(DomainError) as caught:
        registry.decide(issuance("I-4", "TH-GOV", 5000, 8001))
    assert caught.value.evidence == ["JCM-TH:1-5000", "JCM-TH:6001-7000", "JCM-TH:8001-9000"]
    # Adjacent, not overlapping: accepted.
    registry.decide(issuance("I-5", "TH-GOV", 5001, 6000))


def with_entities(authorization: pb.RecordAuthorization, entities: list[str]) -> pb.RecordAuthorization:
    authorization.authorized_entities.extend(entities)
    return authorization


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (issuance("I-3", "TH-GOV", 10, 9), "SERIAL_RANGE_INVALID"),
        (issuance("I-3", "TH-GOV", 2**63 - 1, 2**63), "SERIAL_RANGE_INVALID"),
        (issuance("I-1", "TH-GOV", 9000, 9001), "SEQUENCE_DUPLICATE_ID"),
        (issuance("I-4", "NOBODY", 9000, 9001), "ACCOUNT_UNKNOWN"),
        (issuance("I-5", "TH-GOV", 9000, 9001, authorization_id="LOA-NONE"), "AUTHORIZATION_UNKNOWN"),
        (issuance("I-6", "CH-BUYER", 9000, 9001), "ACCOUNT_TYPE_NOT_ALLOWED"),
        (with_host(issuance("I-7", "TH-GOV", 9000, 9001), "T'"), "UNITS_INVALID"),
        (issuance("I-8", "TH-GOV", 9000, 9001, namespace="JCM TH"), "IDENTIFIER_INVALID"),
        (issuance("I" * 65, "TH-GOV", 9000, 9001), "IDENTIFIER_INVALID"),
        (open_account("CH-BUYER", "CH"), "ACCOUNT_EXISTS"),
        (open_account("X", "Thailand"), "ACCOUNT_INVALID"),
        (open_account("X", "A'"), "ACCOUNT_INVALID"),
        (open_account("X", "TH\n"), "ACCOUNT_INVALID"),
        (open_account("X" * 1_000_000, "TH"), "IDENTIFIER_INVALID"),
        (open_account("X\x00", "TH"), "IDENTIFIER_INVALID"),
        (pb.OpenAccount(account_id="X", holder="a\x00b", jurisdiction="TH", type=pb.HOLDING), "ACCOUNT_INVALID"),
        (reserve("R-1", 0), "QUANTITY_INVALID"),
        (reserve("R-1", 2**63), "QUANTITY_INVALID"),
        (reserve("R-1", 5001), "HOLDINGS_INSUFFICIENT"),
        (reserve("R-1", 1, account="NOBODY"), "ACCOUNT_UNKNOWN"),
        (
            pb.TransferUnits(transfer_id="T", reservation_id="R-none", to_account_id="CH-BUYER", quantity=1),
            "RESERVATION_UNKNOWN",
        ),
        (pb.ReleaseReservation(reservation_id="R-none", quantity=1), "RESERVATION_UNKNOWN"),
        (pb.RecordAuthorization(authorization_id="L", host_party="A'", quantity=1), "AUTHORIZATION_INVALID"),
        (loa(), "AUTHORIZATION_EXISTS"),
        (with_entities(loa("LOA-2"), ["Acme", "Acme"]), "AUTHORIZATION_INVALID"),  # twice
        (with_entities(loa("LOA-2"), ["Acme\x00"]), "AUTHORIZATION_INVALID"),
        (with_entities(loa("LOA-2"), [f"E{n}" for n in range(101)]), "AUTHORIZATION_INVALID"),
    ],
)
def test_bad_commands_are_refused_and_change_nothing(registry: MemoryRegistry, command: Message, code: str) -> None:
    before = holdings(registry, "TH-GOV")
    with pytest.raises(DomainError) as caught:
        registry.decide(command)
    assert caught.value.code == code
    # Evidence never echoes an oversize input.
    assert all(len(item) <= 100 for item in caught.value.evidence)
    assert len(caught.value.reason) <= 300
    assert holdings(registry, "TH-GOV") == before


def test_insufficient_holdings_name_the_eligible_blocks(registry: MemoryRegistry) -> None:
    with pytest.raises(DomainError) as caught:
        registry.decide(reserve("R-1", 5001))
    assert caught.value.evidence == ["JCM-TH:1-5000"]
    assert "holds 5000 eligible units" in caught.value.reason


def test_reserve_then_transfer_splits_blocks(registry: MemoryRegistry) -> None:
    [reserved] = registry.execute(reserve("R-1", 3000))
    assert isinstance(reserved, pb.UnitsReserved)
    assert [(b.start, b.end) for b in reserved.blocks] == [(1, 3000)]
    [moved] = registry.execute(
        pb.TransferUnits(transfer_id="T-1", reservation_id="R-1", to_account_id="CH-BUYER", quantity=1000)
    )
    assert isinstance(moved, pb.UnitsTransferred)
    assert (moved.from_jurisdiction, moved.to_jurisdiction) == ("TH", "CH")
    assert [(b.start, b.end) for b in moved.blocks] == [(1, 1000)]
    assert [(b.start, b.end, b.status) for b in registry.index.holdings("CH-BUYER")] == [(1, 1000, Status.HELD)]
    seller = sorted((b.start, b.end, b.status) for b in registry.index.holdings("TH-GOV"))
    assert seller == [(1001, 3000, Status.RESERVED), (3001, 5000, Status.HELD)]
    assert registry.accounts["TH-GOV"].reservations == {"R-1": 2000}


def test_released_units_merge_back_into_one_block(registry: MemoryRegistry) -> None:
    registry.execute(reserve("R-1", 3000))
    registry.execute(pb.ReleaseReservation(reservation_id="R-1", quantity=3000))
    assert holdings(registry, "TH-GOV") == [("JCM-TH", 1, 5000, "TH-GOV", Status.HELD)]
    assert registry.accounts["TH-GOV"].reservations == {}


def test_transfers_back_and_forth_leave_no_fragments(registry: MemoryRegistry) -> None:
    registry.execute(reserve("R-1", 100))
    registry.execute(pb.TransferUnits(transfer_id="T-1", reservation_id="R-1", to_account_id="CH-BUYER", quantity=60))
    registry.execute(pb.TransferUnits(transfer_id="T-2", reservation_id="R-1", to_account_id="CH-BUYER", quantity=40))
    assert holdings(registry, "CH-BUYER") == [("JCM-TH", 1, 100, "CH-BUYER", Status.HELD)]


def test_transfer_cannot_exceed_reservation(registry: MemoryRegistry) -> None:
    registry.execute(reserve("R-1", 100))
    with pytest.raises(DomainError) as caught:
        registry.decide(pb.TransferUnits(transfer_id="T", reservation_id="R-1", to_account_id="CH-BUYER", quantity=101))
    assert caught.value.code == "RESERVATION_INSUFFICIENT"
    assert caught.value.evidence == ["R-1"]


def test_release_returns_the_highest_reserved_serials(registry: MemoryRegistry) -> None:
    registry.execute(reserve("R-1", 100))
    [released] = registry.execute(pb.ReleaseReservation(reservation_id="R-1", quantity=40))
    assert isinstance(released, pb.ReservationReleased)
    assert [(b.start, b.end) for b in released.blocks] == [(61, 100)]
    assert sum(b.quantity for b in registry.index.reserved("R-1")) == 60


def test_reserved_units_cannot_be_reserved_again(registry: MemoryRegistry) -> None:
    registry.execute(reserve("R-1", 5000))
    with pytest.raises(DomainError) as caught:
        registry.decide(reserve("R-2", 1))
    assert caught.value.code == "HOLDINGS_INSUFFICIENT"
    with pytest.raises(DomainError) as caught:
        registry.decide(reserve("R-1", 1))
    assert caught.value.code == "SEQUENCE_DUPLICATE_ID"


def test_a_decision_changes_nothing(registry: MemoryRegistry) -> None:
    registry.decide(reserve("R-1", 100))
    assert registry.index.reserved("R-1") == []
    assert registry.accounts["TH-GOV"].reservations == {}


@given(st.lists(st.tuples(st.sampled_from(["reserve", "transfer", "release"]), st.integers(1, 700)), max_size=30))
def test_units_are_conserved_and_never_overlap(steps: list[tuple[str, int]]) -> None:
    registry = MemoryRegistry()
    for setup in (
        open_account("TH-GOV", "TH", pb.GOVERNMENT),
        open_account("CH-BUYER", "CH"),
        loa(),
    ):
        registry.execute(setup)
    screened(registry, issuance("I-1", "TH-GOV", 1, 2000, authorization_id="LOA-TH-1"))
    for n, (action, quantity) in enumerate(steps):
        command: Message
        if action == "reserve":
            command = reserve(f"R-{n}", quantity)
        else:
            open_reservations = sorted(registry.accounts["TH-GOV"].reservations)
            if not open_reservations:
                continue
            rid = open_reservations[0]
            command = (
                pb.TransferUnits(transfer_id=f"T-{n}", reservation_id=rid, to_account_id="CH-BUYER", quantity=quantity)
                if action == "transfer"
                else pb.ReleaseReservation(reservation_id=rid, quantity=quantity)
            )
        with contextlib.suppress(DomainError):
            registry.execute(command)
        blocks = registry.index.blocks("JCM-TH")
        assert sum(b.quantity for b in blocks) == 2000
        assert all(a.end < b.start for a, b in itertools.pairwise(blocks))
        assert not any(a.end + 1 == b.start and a.mergeable(b) for a, b in itertools.pairwise(blocks))


def grant(mandate_id: str, account_id: str = "TH-GOV", broker_id: str = "BROKER-1") -> pb.GrantMandate:
    return pb.GrantMandate(mandate_id=mandate_id, account_id=account_id, broker_id=broker_id)


def test_a_mandate_is_granted_once_and_revoked_with_the_broker_it_names(registry: MemoryRegistry) -> None:
    [granted] = registry.execute(grant("M-1"))
    assert granted == pb.MandateGranted(mandate_id="M-1", account_id="TH-GOV", broker_id="BROKER-1", jurisdiction="TH")
    assert registry.execute(grant("M-1")) == []  # idempotent on the mandate id
    assert registry.accounts["TH-GOV"].mandates == {"M-1": "BROKER-1"}
    [revoked] = registry.execute(pb.RevokeMandate(mandate_id="M-1", account_id="TH-GOV"))
    assert revoked == pb.MandateRevoked(mandate_id="M-1", account_id="TH-GOV", broker_id="BROKER-1", jurisdiction="TH")
    assert registry.accounts["TH-GOV"].mandates == {}


@pytest.mark.parametrize(
    ("setup", "command", "code"),
    [
        ([], grant("M-1", account_id="NOBODY"), "ACCOUNT_UNKNOWN"),
        ([], grant("M-1", broker_id=""), "MANDATE_INVALID"),
        ([], grant("M-1", broker_id="B" * 65), "IDENTIFIER_INVALID"),
        ([], grant("M 1"), "IDENTIFIER_INVALID"),
        ([grant("M-1")], grant("M-1", broker_id="BROKER-2"), "MANDATE_EXISTS"),
        ([grant("M-1")], grant("M-1", account_id="CH-BUYER"), "MANDATE_EXISTS"),
        ([], pb.RevokeMandate(mandate_id="M-1", account_id="TH-GOV"), "MANDATE_UNKNOWN"),
        ([grant("M-1")], pb.RevokeMandate(mandate_id="M-1", account_id="CH-BUYER"), "MANDATE_UNKNOWN"),
        ([], pb.RevokeMandate(mandate_id="M-1", account_id="NOBODY"), "ACCOUNT_UNKNOWN"),
        (
            [grant("M-1")],
            pb.RevokeMandate(mandate_id="M-1", account_id="TH-GOV", broker_id="BROKER-2"),
            "MANDATE_BROKER_MISMATCH",
        ),
    ],
)
def test_bad_mandate_commands_are_refused(
    registry: MemoryRegistry, setup: list[Message], command: Message, code: str
) -> None:
    for step in setup:
        registry.execute(step)
    mandates = {k: dict(a.mandates) for k, a in registry.accounts.items()}
    with pytest.raises(DomainError) as caught:
        registry.decide(command)
    assert caught.value.code == code
    assert all(len(item) <= 100 for item in caught.value.evidence)
    assert mandates == {k: dict(a.mandates) for k, a in registry.accounts.items()}


MISMATCH, NOT_ON_CHANNEL = "CHANNEL_JURISDICTION_MISMATCH", "COMMAND_NOT_ALLOWED_ON_CHANNEL"


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (open_account("TH-NEW", "TH"), None),
        (open_account("CN-NEW", "CN"), MISMATCH),
        (loa("LOA-TH-2"), None),
        (pb.RecordAuthorization(authorization_id="LOA-CN", host_party="CN", quantity=1, use=pb.NDC), MISMATCH),
        (issuance("I-2", "TH-GOV", 9000, 9001), None),
        (issuance("I-2", "TH-GOV", 9000, 9001, host="CN"), MISMATCH),
        (issuance("I-2", "CH-BUYER", 9000, 9001, host="TH"), MISMATCH),
        (grant("M-1"), None),
        (grant("M-1", account_id="CH-BUYER"), MISMATCH),
        (pb.RevokeMandate(mandate_id="M-1", account_id="CH-BUYER"), MISMATCH),
        (reserve("R-1", 1), NOT_ON_CHANNEL),
        (pb.ReleaseReservation(reservation_id="R-1", quantity=1), NOT_ON_CHANNEL),
        (pb.TransferUnits(transfer_id="T", reservation_id="R-1", to_account_id="TH-GOV", quantity=1), NOT_ON_CHANNEL),
    ],
)
def test_a_national_channel_acts_only_for_its_jurisdiction(
    registry: MemoryRegistry, command: Message, code: str | None
) -> None:
    if code is None:
        assert registry.decide(command, "TH")
        return
    with pytest.raises(DomainError) as caught:
        registry.decide(command, "TH")
    assert (caught.value.code, caught.value.evidence) == (code, ["TH"])
    # The same command from the venue's own topic is not bound to a jurisdiction.
    try:
        registry.decide(command)
    except DomainError as error:
        assert error.code not in (MISMATCH, NOT_ON_CHANNEL)


def retire(retirement_id: str, quantity: int, *, cancel: bool = False, beneficiary: str = "Acme") -> pb.RetireUnits:
    return pb.RetireUnits(
        retirement_id=retirement_id,
        account_id="TH-GOV",
        quantity=quantity,
        beneficiary=beneficiary,
        purpose="NDC use" if not cancel else "voluntary cancellation",
        cancel=cancel,
        use=pb.CLAIM_NDC,
        claim_year=2025,
    )


def test_retired_and_cancelled_units_stay_and_never_move(registry: MemoryRegistry) -> None:
    [reserved, retired] = screened(registry, retire("RT-1", 100))
    assert isinstance(reserved, pb.UnitsReserved) and isinstance(retired, pb.UnitsRetired)
    assert (retired.quantity, retired.jurisdiction, retired.cancelled) == (100, "TH", False)
    screened(registry, retire("RT-2", 50, cancel=True, beneficiary=""))
    assert holdings(registry, "TH-GOV") == [
        ("JCM-TH", 1, 100, "TH-GOV", Status.RETIRED),
        ("JCM-TH", 101, 150, "TH-GOV", Status.CANCELLED),
        ("JCM-TH", 151, 5000, "TH-GOV", Status.HELD),
    ]
    assert registry.accounts["TH-GOV"].reservations == {}
    # Only held units reserve: what is left, not the retired ones.
    with pytest.raises(DomainError) as caught:
        registry.decide(reserve("R-1", 4851))
    assert caught.value.code == "HOLDINGS_INSUFFICIENT"
    spent = pb.TransferUnits(transfer_id="T-1", reservation_id="RT-1", to_account_id="CH-BUYER", quantity=1)
    with pytest.raises(DomainError) as caught:
        registry.decide(spent)
    assert caught.value.code == "RESERVATION_INSUFFICIENT"  # spent whole by the retirement


def retire_for(use: pb.ClaimUse.ValueType, claim_year: int) -> pb.RetireUnits:
    command = retire("RT-1", 1)
    command.use, command.claim_year = use, claim_year
    return command


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (retire("RT-1", 1, beneficiary=""), "RETIREMENT_INVALID"),
        (retire("RT-1", 5001), "HOLDINGS_INSUFFICIENT"),
        (retire("RT-1", 0), "QUANTITY_INVALID"),
        (
            pb.RetireUnits(retirement_id="RT-1", account_id="TH-GOV", quantity=1, beneficiary="a", purpose="\x00"),
            "RETIREMENT_INVALID",
        ),
        (retire_for(pb.CLAIM_USE_UNSPECIFIED, 2025), "RETIREMENT_INVALID"),  # no use
        (retire_for(pb.CLAIM_NDC, 0), "RETIREMENT_INVALID"),  # no claim year
        (retire_for(pb.CLAIM_NDC, 1990), "RETIREMENT_INVALID"),
        (retire_for(99, 2025), "RETIREMENT_INVALID"),  # type: ignore[arg-type]  # not a use at all
    ],
)
def test_a_retirement_is_refused_with_its_reason(registry: MemoryRegistry, command: pb.RetireUnits, code: str) -> None:
    with pytest.raises(DomainError) as caught:
        registry.decide(command)
    assert caught.value.code == code


def cancel(retirement_id: str, quantity: int, kind: pb.CancellationKind.ValueType) -> pb.RetireUnits:
    command = retire(retirement_id, quantity, cancel=True, beneficiary="")
    command.cancellation = kind
    return command


def test_cancellations_record_their_kind_and_only_the_registrys_own_pass_a_frozen_account(
    registry: MemoryRegistry,
) -> None:
    [_, voluntary] = screened(registry, retire("C-1", 10, cancel=True, beneficiary=""))
    assert isinstance(voluntary, pb.UnitsRetired) and voluntary.cancellation == pb.CANCELLATION_VOLUNTARY
    registry.execute(pb.FreezeAccount(account_id="TH-GOV", reason="reversal under review", by="regulator"))
    with pytest.raises(DomainError) as caught:
        registry.decide(cancel("C-2", 10, pb.CANCELLATION_VOLUNTARY))
    assert caught.value.code == "ACCOUNT_FROZEN"
    [_, mandatory] = screened(registry, cancel("C-3", 10, pb.CANCELLATION_MANDATORY))
    assert isinstance(mandatory, pb.UnitsRetired)
    assert (mandatory.cancelled, mandatory.cancellation) == (True, pb.CANCELLATION_MANDATORY)
    assert holdings(registry, "TH-GOV")[:2] == [
        ("JCM-TH", 1, 20, "TH-GOV", Status.CANCELLED),
        ("JCM-TH", 21, 5000, "TH-GOV", Status.HELD),
    ]


@pytest.mark.parametrize("kind", [pb.CANCELLATION_MANDATORY, 7])
def test_a_cancellation_kind_needs_a_cancellation(registry: MemoryRegistry, kind: int) -> None:
    command = retire("RT-1", 1)
    command.cancellation = kind  # type: ignore[assignment]
    with pytest.raises(DomainError) as caught:
        registry.decide(command)
    assert caught.value.code == "RETIREMENT_INVALID"


def expire(expiry_id: str, quantity: int, reason: str = "temporary credit: its period ended") -> pb.ExpireUnits:
    return pb.ExpireUnits(expiry_id=expiry_id, account_id="TH-GOV", quantity=quantity, reason=reason, by="op")


def test_expired_units_stay_expired_and_never_move(registry: MemoryRegistry) -> None:
    registry.execute(pb.FreezeAccount(account_id="TH-GOV", reason="supervisory hold", by="regulator"))
    [reserved, expired] = screened(registry, expire("X-1", 100))
    assert isinstance(reserved, pb.UnitsReserved) and isinstance(expired, pb.UnitsExpired)
    assert (expired.quantity, expired.jurisdiction, expired.by) == (100, "TH", "op")
    assert holdings(registry, "TH-GOV")[0] == ("JCM-TH", 1, 100, "TH-GOV", Status.EXPIRED)
    assert registry.accounts["TH-GOV"].reservations == {}
    registry.execute(pb.UnfreezeAccount(account_id="TH-GOV", reason="cleared", by="regulator"))
    with pytest.raises(DomainError) as caught:
        registry.decide(reserve("R-1", 4901))
    assert caught.value.code == "HOLDINGS_INSUFFICIENT"  # the expired serials are not held


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (expire("X-1", 1, reason=""), "EXPIRY_INVALID"),
        (expire("X-1", 5001), "HOLDINGS_INSUFFICIENT"),
        (expire("X 1", 1), "IDENTIFIER_INVALID"),
    ],
)
def test_an_expiry_is_refused_with_its_reason(registry: MemoryRegistry, command: pb.ExpireUnits, code: str) -> None:
    with pytest.raises(DomainError) as caught:
        registry.decide(command)
    assert caught.value.code == code


def test_a_rejected_or_unanswered_proposal_gives_its_units_back(registry: MemoryRegistry) -> None:
    [_, rejected, released] = screened(registry, retire("RT-1", 100), cpb.REJECTED)
    assert isinstance(rejected, pb.ProposalRejected) and isinstance(released, pb.ReservationReleased)
    assert (rejected.code, list(rejected.rules)) == ("SCREENING_REJECTED", ["DOUBLE_USE"])
    assert "JCM-TH:1-1 used" in rejected.reason
    assert holdings(registry, "TH-GOV") == [("JCM-TH", 1, 5000, "TH-GOV", Status.HELD)]
    assert registry.accounts["TH-GOV"].screening == {} and registry.accounts["TH-GOV"].reservations == {}

    [_, proposal] = registry.execute(expire("X-1", 10))
    assert isinstance(proposal, pb.ScreenProposal) and proposal.transaction_type == "20-00"
    # The venue cannot take a screened proposal's units for an order's delivery or release.
    with pytest.raises(DomainError) as caught:
        registry.decide(pb.ReleaseReservation(reservation_id="X-1", quantity=10))
    assert caught.value.code == "RESERVATION_HELD_FOR_TRANSFER"
    overdue = pb.ExpireProposal(proposal_id="X-1", account_id="TH-GOV")
    assert registry.decide(overdue) == []  # not yet due
    registry.now += screening.WINDOW
    [timed_out, _] = registry.execute(overdue)
    assert isinstance(timed_out, pb.ProposalRejected) and timed_out.code == "SCREENING_TIMEOUT"
    late = cpb.ProposalScreened(proposal_id="X-1", account_id="TH-GOV", verdict=cpb.APPROVED)
    assert registry.decide(late) == []  # answered after its time: nothing happens
    assert holdings(registry, "TH-GOV") == [("JCM-TH", 1, 5000, "TH-GOV", Status.HELD)]


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        (retire("R", 1), "05-00"),
        (cancel("C", 1, pb.CANCELLATION_KIND_UNSPECIFIED), "04-01"),
        (cancel("C", 1, pb.CANCELLATION_MANDATORY), "04-02"),
        (cancel("C", 1, pb.CANCELLATION_OMGE), "04-03"),
        (expire("E", 1), "20-00"),
    ],
)
def test_a_proposal_names_its_transaction_type(registry: MemoryRegistry, command: Message, kind: str) -> None:
    [_, proposal] = registry.decide(command)
    assert isinstance(proposal, pb.ScreenProposal)
    assert (proposal.transaction_type, proposal.jurisdiction, proposal.quantity) == (kind, "TH", 1)


def test_a_retirement_id_is_used_once(registry: MemoryRegistry) -> None:
    registry.execute(retire("RT-1", 1))
    with pytest.raises(DomainError) as caught:
        registry.decide(retire("RT-1", 1))
    assert caught.value.code == "SEQUENCE_DUPLICATE_ID"
