"""The registry's pure core and memory index under long random runs of commands,
snapshots and restarts: units conserved (issued or transferred in = held + reserved +
retired + cancelled + expired + exported), no serial in two places, no unmerged
neighbours, mandate ids unique across accounts, foreign channels refused, retired,
cancelled, expired and exported units never moving again, A6.4 levies never below their
share, no unit leaving a frozen account (but by the registry's own authority), no frozen
project's units moving, every scheduled transfer, pending external transfer and proposal
under screening holding exactly its units, aggregates from snapshot + tail identical to a
fold from zero."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from datetime import timedelta

from google.protobuf.message import Message
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services.common.errors import DomainError
from services.registry.domain import screening
from services.registry.domain.accounts import Account, Authorization, Project
from services.registry.domain.blocks import Holding, Move, Status
from services.registry.domain.memory import MemoryRegistry, stream_of
from services.registry.policies import issuance_policies
from tests.unit.factories import issuance, loa, open_account
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as pb

ACCOUNTS = ("TH-GOV", "TH-CO", "CH-BUYER", "JP-BUYER")
NAMESPACES = ("JCM-TH", "VCU-TH", "A64-TH", "VCU-JP")  # the last: only ever transferred in
PROJECTS = ("TH-FSOLAR-1", "TH-WIND-2")
MANDATES = ("M-1", "M-2", "M-3")
BROKERS = ("B-1", "B-2")


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.registry = MemoryRegistry(issuance=issuance_policies())
        self.streams: dict[str, list[Message]] = defaultdict(list)
        self.snapshots: dict[str, tuple[int, bytes]] = {}  # stream id -> (version, bytes)
        self.issued: Counter[str] = Counter()
        self.terminal: list[tuple[str, int, int, str, Status]] = []  # retired or cancelled serials
        self.frozen_blocks: dict[str, list[tuple[str, int, int, str]]] = {}  # freeze id -> its serials
        self.n = 0
        for command in (
            open_account("TH-GOV", "TH", pb.GOVERNMENT),
            open_account("TH-CO", "TH"),
            open_account("CH-BUYER", "CH"),
            open_account("JP-BUYER", "JP"),
            open_account("SG-SPARE", "SG"),
            open_account("UN-A64-PENDING", "UN", pb.PENDING),
            open_account("UN-A64-SOP-AF", "UN", pb.SHARE_OF_PROCEEDS),
            open_account("UN-A64-OMGE", "UN", pb.OMGE_CANCELLATION),
            loa(),
        ):
            self.run(command)

    def run(self, command: Message, channel: str = "") -> list[Message]:
        self.n += 1
        try:
            events = self.registry.decide(command, channel)
        except DomainError:
            return []
        by_authority = isinstance(command, pb.ExpireUnits) or (
            isinstance(command, pb.RetireUnits) and command.cancellation == pb.CANCELLATION_MANDATORY
        )
        for event in events:
            if not by_authority:
                self.moves_nothing_frozen(event)
            self.registry.apply(event)
            self.streams[stream_of(event)].append(event)
            match event:
                case pb.UnitsIssued():
                    self.issued[event.block.namespace] += event.block.end - event.block.start + 1
                case pb.InboundTransferAccepted():
                    for b in event.blocks:
                        self.issued[b.namespace] += b.end - b.start + 1
                    for r in event.returning:  # exported serials back: they may move again
                        self.terminal = unexported(self.terminal, r.block.namespace, r.block.start, r.block.end)
                case pb.UnitsAllocated():
                    self.levies_at_least_their_share(event)
                case pb.ExternalTransferCompleted():
                    exported = [(b.namespace, b.start, b.end, event.account_id, Status.EXPORTED) for b in event.blocks]
                    self.terminal += exported
        return events

    def levies_at_least_their_share(self, allocated: pb.UnitsAllocated) -> None:
        sizes = {a.role: a.block.end - a.block.start + 1 for a in allocated.allocations}
        total = sum(sizes.values())
        if allocated.policy.startswith("a6.4"):
            assert sizes.get("share_of_proceeds", 0) * 100 >= 5 * total
            assert sizes.get("omge", 0) * 100 >= 2 * total
            omge = next(a for a in allocated.allocations if a.role == "omge")
            b = omge.block
            self.terminal.append((b.namespace, b.start, b.end, omge.account_id, Status.CANCELLED))

    def open_reservations(self) -> list[str]:
        return sorted(r for a in self.registry.accounts.values() for r in a.reservations)

    @rule(
        account=st.sampled_from(ACCOUNTS[:2]),
        namespace=st.sampled_from(NAMESPACES),
        start=st.integers(1, 400),
        length=st.integers(1, 80),
        vintage=st.sampled_from([2023, 2024]),
        authorized=st.booleans(),
        project=st.sampled_from(PROJECTS),
    )
    def issue(
        self, account: str, namespace: str, start: int, length: int, vintage: int, authorized: bool, project: str
    ) -> None:
        command = issuance(
            f"I-{self.n}",
            account,
            start,
            start + length - 1,
            namespace=namespace,
            vintage=vintage,
            authorization_id="LOA-TH-1" if authorized else "",
            project_id=project,
        )
        if namespace == "A64-TH":  # through the pending account, levies taken
            command.block.attributes.standard = pb.A6_4ER
        elif namespace == "JCM-TH" and length % 3 == 0:  # split with the host's government
            command.accounts["host_government"] = "TH-GOV"
        self.run(command)

    @rule(
        account=st.sampled_from(("TH-GOV", "TH-GOV", "TH-CO", *ACCOUNTS[2:])),
        quantity=st.integers(1, 60),
        vintage=st.sampled_from([0, 0, 2023, 2024]),
        authorized=st.booleans(),
    )
    def reserve(self, account: str, quantity: int, vintage: int, authorized: bool) -> None:
        selector = pb.UnitSelector(
            host_party="TH", vintage=vintage, authorized_for=pb.NDC if authorized else pb.AUTHORIZED_USE_UNSPECIFIED
        )
        self.run(
            pb.ReserveUnits(reservation_id=f"R-{self.n}", account_id=account, selector=selector, quantity=quantity)
        )

    @precondition(lambda self: bool(self.open_reservations()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        rid, quantity = self.draw_reservation(data)
        self.run(pb.ReleaseReservation(reservation_id=rid, quantity=quantity))

    @precondition(lambda self: bool(self.open_reservations()))
    @rule(data=st.data(), to=st.sampled_from(ACCOUNTS))
    def transfer(self, data: st.DataObject, to: str) -> None:
        rid, quantity = self.draw_reservation(data)
        self.run(pb.TransferUnits(transfer_id=f"T-{self.n}", reservation_id=rid, to_account_id=to, quantity=quantity))

    @rule(
        account=st.sampled_from((*ACCOUNTS, "NOBODY")),
        mandate=st.sampled_from(MANDATES),
        broker=st.sampled_from(BROKERS),
    )
    def grant(self, account: str, mandate: str, broker: str) -> None:
        self.run(pb.GrantMandate(mandate_id=mandate, account_id=account, broker_id=broker))

    @rule(account=st.sampled_from(ACCOUNTS), mandate=st.sampled_from(MANDATES))
    def revoke(self, account: str, mandate: str) -> None:
        self.run(pb.RevokeMandate(mandate_id=mandate, account_id=account))

    @rule(channel=st.sampled_from(("TH", "CH")), kind=st.integers(0, 4))
    def from_a_foreign_channel(self, channel: str, kind: int) -> None:
        """A national registry acting outside its jurisdiction (or moving units) is refused."""
        other, own_account, other_account = (
            ("CH", "TH-CO", "CH-BUYER") if channel == "TH" else ("TH", "CH-BUYER", "TH-CO")
        )
        command = [
            open_account(f"{other}-NEW", other),
            issuance(f"I-{self.n}", other_account, 900, 901, host=other),
            issuance(f"I-{self.n}", own_account, 900, 901, host=other),
            pb.GrantMandate(mandate_id=f"M-{self.n}", account_id=other_account, broker_id="B-1"),
            pb.ReserveUnits(reservation_id=f"R-{self.n}", account_id=own_account, quantity=1),
        ][kind]
        before = {k: (a.version, a.snapshot()) for k, a in self.registry.accounts.items()}
        try:
            self.registry.decide(command, channel)
        except DomainError as error:
            assert error.code in ("CHANNEL_JURISDICTION_MISMATCH", "COMMAND_NOT_ALLOWED_ON_CHANNEL"), error
        else:
            raise AssertionError(f"{channel} channel took {command}")
        assert before == {k: (a.version, a.snapshot()) for k, a in self.registry.accounts.items()}

    @rule(
        account=st.sampled_from(ACCOUNTS),
        quantity=st.integers(1, 60),
        cancel=st.booleans(),
        vintage=st.sampled_from([0, 2023, 2024]),
    )
    def retire(self, account: str, quantity: int, cancel: bool, vintage: int) -> None:
        selector = pb.UnitSelector(host_party="TH", vintage=vintage)
        kind = pb.CANCELLATION_MANDATORY if cancel and quantity % 2 else pb.CANCELLATION_KIND_UNSPECIFIED
        retirement = pb.RetireUnits(
            retirement_id=f"RT-{self.n}",
            account_id=account,
            selector=selector,
            quantity=quantity,
            beneficiary="" if cancel else "Acme Airlines 2025 CORSIA claim",
            purpose="voluntary cancellation" if cancel else "CORSIA offsetting",
            cancel=cancel,
            use=pb.CLAIM_USE_UNSPECIFIED if cancel else pb.CLAIM_OIMP,
            claim_year=0 if cancel else 2025,
            cancellation=kind,
        )
        self.run(retirement)

    @rule(account=st.sampled_from(ACCOUNTS), quantity=st.integers(1, 60), vintage=st.sampled_from([0, 2023]))
    def expire(self, account: str, quantity: int, vintage: int) -> None:
        selector = pb.UnitSelector(vintage=vintage)
        expiry = pb.ExpireUnits(
            expiry_id=f"EX-{self.n}", account_id=account, selector=selector, quantity=quantity, reason="period ended"
        )
        self.run(expiry)

    @precondition(lambda self: any(a.screening for a in self.registry.accounts.values()))
    @rule(data=st.data(), answer=st.sampled_from(["approve", "reject", "time out"]))
    def screen(self, data: st.DataObject, answer: str) -> None:
        """The transaction log answers a proposal, or leaves it to time out."""
        pending = sorted((p, a.account_id) for a in self.registry.accounts.values() for p in a.screening)
        proposal_id, account = data.draw(st.sampled_from(pending))
        self.answer(proposal_id, account, answer)

    def answer(self, proposal_id: str, account: str, answer: str) -> None:
        if answer == "time out":
            self.registry.now += screening.WINDOW
            events = self.run(pb.ExpireProposal(proposal_id=proposal_id, account_id=account))
        else:
            verdict = cpb.APPROVED if answer == "approve" else cpb.REJECTED
            events = self.run(cpb.ProposalScreened(proposal_id=proposal_id, account_id=account, verdict=verdict))
        for event in events:
            match event:
                case pb.UnitsRetired():
                    status = Status.CANCELLED if event.cancelled else Status.RETIRED
                    self.terminal += [(b.namespace, b.start, b.end, account, status) for b in event.blocks]
                case pb.UnitsExpired():
                    self.terminal += [(b.namespace, b.start, b.end, account, Status.EXPIRED) for b in event.blocks]
        assert account not in {a.account_id for a in self.registry.accounts.values() if proposal_id in a.screening}

    # --- the Union Registry's controls ---

    @rule(account=st.sampled_from(ACCOUNTS), freeze=st.booleans())
    def freeze_account(self, account: str, freeze: bool) -> None:
        kind = pb.FreezeAccount if freeze else pb.UnfreezeAccount
        self.run(kind(account_id=account, reason="supervisory hold", by="regulator"))

    @rule(account=st.sampled_from(ACCOUNTS[:2]), start=st.integers(1, 400), length=st.integers(1, 60))
    def freeze_blocks(self, account: str, start: int, length: int) -> None:
        end = start + length - 1
        command = pb.FreezeBlocks(
            freeze_id=f"F-{self.n}", account_id=account, namespace="JCM-TH", start=start, end=end, reason="r"
        )
        for event in self.run(command):
            assert isinstance(event, pb.BlocksFrozen)
            self.frozen_blocks[event.freeze_id] = [(b.namespace, b.start, b.end, account) for b in event.blocks]

    @precondition(lambda self: bool(self.frozen_blocks))
    @rule(data=st.data())
    def unfreeze_blocks(self, data: st.DataObject) -> None:
        freeze_id = data.draw(st.sampled_from(sorted(self.frozen_blocks)))
        account = self.frozen_blocks[freeze_id][0][3]
        [thawed] = self.run(pb.UnfreezeBlocks(freeze_id=freeze_id, account_id=account, reason="cleared"))
        assert isinstance(thawed, pb.BlocksUnfrozen)
        assert [(b.namespace, b.start, b.end, account) for b in thawed.blocks] == self.frozen_blocks.pop(freeze_id)

    @rule(project=st.sampled_from(PROJECTS), freeze=st.booleans())
    def freeze_project(self, project: str, freeze: bool) -> None:
        kind = pb.FreezeProject if freeze else pb.UnfreezeProject
        self.run(kind(project_id=project, host_party="TH", reason="verification under review", by="regulator"))

    @rule(
        account=st.sampled_from(ACCOUNTS), trusted=st.sampled_from(ACCOUNTS), second=st.sampled_from(("alice", "bob"))
    )
    def trust(self, account: str, trusted: str, second: str) -> None:
        """Alice proposes; the approval holds only when someone else gives it."""
        self.run(pb.ProposeTrustedAccount(account_id=account, trusted_account_id=trusted, by="alice"))
        entry = self.registry.accounts[account].trusted.get(trusted)
        events = self.run(pb.ApproveTrustedAccount(account_id=account, trusted_account_id=trusted, by=second))
        assert bool(events) == (entry is not None and entry.effective_at is None and second != "alice")

    @rule(account=st.sampled_from(ACCOUNTS[:2]), to=st.sampled_from(ACCOUNTS), quantity=st.integers(1, 60))
    def request_transfer(self, account: str, to: str, quantity: int) -> None:
        self.run(pb.RequestTransfer(transfer_id=f"X-{self.n}", account_id=account, to_account_id=to, quantity=quantity))

    # --- external transfers, closing ---

    @rule(
        account=st.sampled_from(ACCOUNTS[:2]),
        to=st.sampled_from(("JP", "JP", "CH", "TH", "XX")),
        quantity=st.integers(1, 20),
    )
    def propose_external(self, account: str, to: str, quantity: int) -> None:
        self.run(
            pb.ProposeExternalTransfer(
                transfer_id=f"E-{self.n}", account_id=account, to_registry=to, to_account="ACC-1", quantity=quantity
            )
        )

    @precondition(lambda self: any(a.external for a in self.registry.accounts.values()))
    @rule(data=st.data(), accepted=st.booleans(), right_channel=st.sampled_from((True, True, True, False)))
    def answer_external(self, data: st.DataObject, accepted: bool, right_channel: bool) -> None:
        pending = sorted((t, e.to_registry) for a in self.registry.accounts.values() for t, e in a.external.items())
        transfer_id, registry = data.draw(st.sampled_from(pending))
        answer = pb.AnswerExternalTransfer(transfer_id=transfer_id, accepted=accepted, reason="" if accepted else "no")
        events = self.run(answer, registry if right_channel else "SG")
        assert bool(events) == right_channel or (accepted and self.frozen_owner(transfer_id))

    def frozen_owner(self, transfer_id: str) -> bool:
        owner = next(a for a in self.registry.accounts.values() if transfer_id in a.reservations)
        frozen = {p for p, project in self.registry.projects.items() if project.frozen}
        blocks = self.registry.index.reserved(transfer_id)
        return owner.frozen or bool({b.units.project_id for b in blocks} & frozen)

    @precondition(lambda self: any(status == Status.EXPORTED for *_, status in self.terminal))
    @rule(data=st.data(), to=st.sampled_from(ACCOUNTS), channel=st.sampled_from(("JP", "JP", "CH")))
    def transfer_back(self, data: st.DataObject, to: str, channel: str) -> None:
        """Exported serials sent back: taken only from the registry they went to."""
        exported = [t for t in self.terminal if t[4] == Status.EXPORTED]
        namespace, start, end, _, _ = data.draw(st.sampled_from(exported))
        first = data.draw(st.integers(start, end))
        last = data.draw(st.integers(first, end))
        [block] = [b for b in self.registry.index.blocks(namespace) if b.start <= first <= b.end]
        piece = pb.SerialBlock(namespace=namespace, start=first, end=last, attributes=block.units.message())
        command = pb.ProposeInboundTransfer(transfer_id=f"BACK-{self.n}", from_account="JP-1", to_account_id=to)
        command.blocks.append(piece)
        went_to = block.holding.reservation_id.removeprefix("@")
        assert bool(self.run(command, channel)) == (channel == went_to) or self.registry.accounts[to].closed

    @rule(start=st.integers(1, 400), length=st.integers(1, 40), to=st.sampled_from((*ACCOUNTS, "SG-SPARE")))
    def transfer_in(self, start: int, length: int, to: str) -> None:
        block = pb.SerialBlock(
            namespace="VCU-JP",
            start=start,
            end=start + length - 1,
            attributes=pb.UnitAttributes(standard=pb.VCU, host_party="JP", project_id="JP-W-1", vintage=2024),
        )
        command = pb.ProposeInboundTransfer(transfer_id=f"IN-{self.n}", from_account="JP-1", to_account_id=to)
        command.blocks.append(block)
        self.run(command, "JP")

    @rule(account=st.sampled_from(("SG-SPARE", "JP-BUYER")))
    def close(self, account: str) -> None:
        """The spare account closes while empty (units sent to it are refused after); the
        others would close while empty too and end the run's interest, so only JP-BUYER,
        which mostly holds units, is tried."""
        self.run(pb.CloseAccount(account_id=account, reason="holder left", by="operator"))

    @rule(hours=st.integers(1, 200))
    def time_passes(self, hours: int) -> None:
        self.registry.now += timedelta(hours=hours)

    @rule()
    def scheduler(self) -> None:
        for account in list(self.registry.accounts.values()):
            for transfer_id in sorted(account.scheduled):
                self.run(pb.ExecuteTransfer(transfer_id=transfer_id, account_id=account.account_id))
            for transfer_id in sorted(account.external):
                self.run(pb.ExpireExternalTransfer(transfer_id=transfer_id, account_id=account.account_id))

    @precondition(lambda self: any(a.scheduled for a in self.registry.accounts.values()))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        scheduled = sorted((t, a.account_id) for a in self.registry.accounts.values() for t in a.scheduled)
        transfer_id, account = data.draw(st.sampled_from(scheduled))
        [cancelled, released] = self.run(
            pb.CancelTransfer(transfer_id=transfer_id, account_id=account, reason="holder's request")
        )
        assert isinstance(cancelled, pb.TransferCancelled) and isinstance(released, pb.ReservationReleased)

    def moves_nothing_frozen(self, event: Message) -> None:
        """Units leave no frozen account (a release or cancellation gives them back), and
        a frozen project's units neither reserve nor transfer; the registry's own mandatory
        cancellations and expiries alone pass a frozen account."""
        if isinstance(event, pb.UnitsReserved | pb.UnitsTransferred):
            source = event.account_id if isinstance(event, pb.UnitsReserved) else event.from_account_id
            assert not self.registry.accounts[source].frozen, event
            frozen = {b.attributes.project_id for b in event.blocks} & {
                p for p, project in self.registry.projects.items() if project.frozen
            }
            assert not frozen, event

    def draw_reservation(self, data: st.DataObject) -> tuple[str, int]:
        """An open reservation and a quantity, now and then more than it holds."""
        rid = data.draw(st.sampled_from(self.open_reservations()))
        balance = next(a.reservations[rid] for a in self.registry.accounts.values() if rid in a.reservations)
        return rid, data.draw(st.integers(1, balance + 2))

    @rule(account=st.sampled_from(ACCOUNTS))
    def snapshot(self, account: str) -> None:
        aggregate = self.registry.accounts[account]
        self.snapshots[aggregate.stream_id] = (aggregate.version, aggregate.snapshot())

    @rule()
    def restart(self) -> None:
        """Every aggregate from its latest snapshot plus the tail of its stream."""
        for key, account in list(self.registry.accounts.items()):
            self.registry.accounts[key] = self.load(account.stream_id)

    def load(self, stream_id: str) -> Account:
        version, state = self.snapshots.get(stream_id, (0, b""))
        account = Account.restore(stream_id, state) if version else Account(stream_id)
        account.version = version
        account.mutate(self.streams[stream_id][version:])
        return account

    # --- invariants ---

    @invariant()
    def units_are_conserved_per_namespace(self) -> None:
        for namespace in NAMESPACES:
            blocks = self.registry.index.blocks(namespace)
            assert sum(b.quantity for b in blocks) == self.issued[namespace]

    @invariant()
    def no_serial_in_two_places_and_neighbours_merged(self) -> None:
        for namespace in NAMESPACES:
            for a, b in itertools.pairwise(self.registry.index.blocks(namespace)):
                assert a.end < b.start, (a, b)
                assert not (a.end + 1 == b.start and a.mergeable(b)), (a, b)

    @invariant()
    def accounts_know_their_reservations(self) -> None:
        for account in self.registry.accounts.values():
            for rid, quantity in account.reservations.items():
                blocks = self.registry.index.reserved(rid)
                assert sum(b.quantity for b in blocks) == quantity
                assert {b.account_id for b in blocks} == {account.account_id}
            reserved = sum(
                b.quantity for b in self.registry.index.holdings(account.account_id) if b.status == "reserved"
            )
            assert reserved == account.reserved

    @invariant()
    def terminal_units_never_move(self) -> None:
        """Retired, cancelled and exported serials stay where they ended, as they ended."""
        for namespace, start, end, account, status in self.terminal:
            covering = [b for b in self.registry.index.blocks(namespace) if b.start <= end and start <= b.end]
            assert sum(min(b.end, end) - max(b.start, start) + 1 for b in covering) == end - start + 1
            assert all((b.account_id, b.status) == (account, status) for b in covering), covering

    @invariant()
    def a_scheduled_or_proposed_transfer_holds_its_units(self) -> None:
        for account in self.registry.accounts.values():
            for transfer_id, scheduled in account.scheduled.items():
                assert account.reservations[transfer_id] == scheduled.quantity
            for transfer_id, proposed in account.external.items():
                assert account.reservations[transfer_id] == proposed.quantity
            for proposal_id, screened in account.screening.items():
                if screened.HasField("issuance"):  # nothing issued yet, nothing held
                    assert proposal_id not in account.reservations
                    continue
                assert account.reservations[proposal_id] == screened.quantity
                assert proposal_id not in account.external

    @invariant()
    def frozen_serials_stay_frozen(self) -> None:
        for pieces in self.frozen_blocks.values():
            for namespace, start, end, account in pieces:
                covering = [b for b in self.registry.index.blocks(namespace) if b.start <= end and start <= b.end]
                assert sum(min(b.end, end) - max(b.start, start) + 1 for b in covering) == end - start + 1
                assert all((b.account_id, b.status) == (account, Status.FROZEN) for b in covering), covering

    @invariant()
    def closed_accounts_hold_nothing(self) -> None:
        for account in self.registry.accounts.values():
            if account.closed:
                assert not self.registry.index.holdings(account.account_id), account.account_id

    @invariant()
    def a_mandate_id_is_held_by_one_account(self) -> None:
        held = [(m, a.account_id) for a in self.registry.accounts.values() for m in a.mandates]
        assert len(held) == len(dict(held))
        assert dict(held) == self.registry.mandates

    @invariant()
    def snapshot_and_tail_equal_a_fold_from_zero(self) -> None:
        for stream_id, events in self.streams.items():
            if stream_id.startswith("account-"):
                live = self.registry.accounts[stream_id.removeprefix("account-")]
                zero = Account(stream_id)
                zero.mutate(events)
                assert (zero.version, zero.snapshot()) == (live.version, live.snapshot())
                restored = self.load(stream_id)
                assert (restored.version, restored.snapshot()) == (live.version, live.snapshot())
            else:
                kind = Project if stream_id.startswith("project-") else Authorization
                zero_other = kind(stream_id)
                zero_other.mutate(events)
                again = kind.restore(stream_id, zero_other.snapshot())
                assert again.snapshot() == zero_other.snapshot()
                if isinstance(zero_other, Project):
                    assert zero_other.frozen == self.registry.projects[zero_other.project_id].frozen


def unexported(
    terminal: list[tuple[str, int, int, str, Status]], namespace: str, start: int, end: int
) -> list[tuple[str, int, int, str, Status]]:
    """The terminal ranges without [start, end] of `namespace`'s exported ones."""
    kept: list[tuple[str, int, int, str, Status]] = []
    for ns, s, e, account, status in terminal:
        if ns != namespace or status != Status.EXPORTED or e < start or end < s:
            kept.append((ns, s, e, account, status))
            continue
        if s < start:
            kept.append((ns, s, start - 1, account, status))
        if end < e:
            kept.append((ns, end + 1, e, account, status))
    return kept


RegistryMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)
TestRegistryMachine = RegistryMachine.TestCase


def test_the_machine_can_fail() -> None:
    """A snapshot that drops the reservations is caught by the fold comparison."""
    machine = RegistryMachine()
    machine.issue("TH-GOV", "JCM-TH", 1, 50, 2024, True, PROJECTS[0])
    machine.answer(f"I-{machine.n - 1}", "TH-GOV", "approve")
    machine.reserve("TH-GOV", 10, 0, False)
    account = machine.registry.accounts["TH-GOV"]
    broken = Account.restore(account.stream_id, account.snapshot())
    broken.reservations.clear()
    machine.registry.accounts["TH-GOV"] = broken
    broken.version = account.version
    try:
        machine.snapshot_and_tail_equal_a_fold_from_zero()
    except AssertionError:
        return
    raise AssertionError("a wrong aggregate went unnoticed")


def test_a_moved_retired_unit_is_caught() -> None:
    machine = RegistryMachine()
    machine.issue("TH-GOV", "JCM-TH", 1, 50, 2024, False, PROJECTS[0])
    machine.answer(f"I-{machine.n - 1}", "TH-GOV", "approve")
    machine.retire("TH-GOV", 10, False, 0)
    machine.answer(f"RT-{machine.n - 1}", "TH-GOV", "approve")
    assert machine.terminal
    machine.terminal_units_never_move()
    retired = Holding("TH-GOV", Status.RETIRED)
    machine.registry.index.apply(Move("JCM-TH", 1, 10, retired, Holding("CH-BUYER")))
    try:
        machine.terminal_units_never_move()
    except AssertionError:
        return
    raise AssertionError("a retired unit moved unnoticed")
