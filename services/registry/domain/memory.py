"""The whole registry in memory: aggregates, the facts the projections keep and the
memory block index, gathered and applied exactly as the service layer does against
PostgreSQL. For unit tests, state machines and the memory-vs-SQL agreement test."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from google.protobuf.message import Message

from services.common.errors import DomainError
from services.common.topics import JURISDICTIONS
from services.registry.domain import fingerprint, screening
from services.registry.domain.accounts import Account, AccountRef, Authorization, Project
from services.registry.domain.blocks import Block, frozen_under
from services.registry.domain.controls import Controls, Policy
from services.registry.domain.external import ExternalTransfers, named, receive
from services.registry.domain.fingerprint import Prior
from services.registry.domain.index import MemoryIndex
from services.registry.domain.issuance_rules import IssuancePolicies
from services.registry.domain.ledger import (
    BLOCKS_MAX,
    EVIDENCE_LIMIT,
    Held,
    Ledger,
    Picking,
    bind,
    changes,
    check,
    picking,
)
from services.registry.domain.manifest import Stored
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as pb

PAGE = 100


def stream_of(event: Message) -> str:
    """The stream the service records `event` on."""
    match event:
        case pb.AuthorizationRecorded() | pb.AuthorizationChanged():
            return f"authorization-{event.authorization.authorization_id}"
        case pb.AuthorizationRevoked():
            return f"authorization-{event.authorization_id}"
        case pb.UnitsTransferred():
            return f"account-{event.from_account_id}"
        case pb.UnitsAllocated():
            return f"account-{event.from_account_id}"
        case pb.ProjectFrozen() | pb.ProjectUnfrozen():
            return f"project-{event.project_id}"
        case _:
            return f"account-{getattr(event, 'account_id', '')}"


class MemoryRegistry:
    def __init__(self, policy: Policy | None = None, issuance: IssuancePolicies | None = None) -> None:
        self.issuance = issuance or IssuancePolicies()
        self.ledger = Ledger()
        self.controls = Controls(policy or Policy(), self.ledger)
        self.external = ExternalTransfers(self.ledger, frozenset(JURISDICTIONS), self.controls.policy.external_expiry)
        self.projects: dict[str, Project] = {}
        self.now = datetime(2026, 1, 1, tzinfo=UTC)  # the registry's clock: tests move it
        self.index = MemoryIndex()
        self.accounts: dict[str, Account] = {}
        self.authorizations: dict[str, Authorization] = {}
        self.issuances: set[str] = set()
        self.proposed: set[str] = set()  # ids of every proposal recorded, answered or not
        self.transfers: set[str] = set()
        self.inbound: set[tuple[str, str]] = set()  # (sending registry, transfer id)
        self.fingerprints: dict[bytes, list[Prior]] = {}  # fingerprint key -> its issuances
        self.manifests: dict[str, Stored] = {}  # uploaded (tests add them), with who issued them
        self.reservations: dict[str, str] = {}  # reservation id -> account id
        self.mandates: dict[str, str] = {}  # mandate id -> account id (granted, not revoked)

    def _ref(self, account_id: str) -> AccountRef | None:
        account = self.account(account_id)
        return account.ref if account else None

    def _issue(self, command: pb.RecordIssuance, approved: bool = False) -> list[Message]:
        block, authorization_id = command.block, command.block.attributes.authorization_id
        loa = self.authorizations.get(authorization_id)
        applied = self.issuance.applying(command)
        prior = []
        if command.HasField("fingerprint"):
            period = fingerprint.period_of(command.period)
            same = self.fingerprints.get(fingerprint.key(command.fingerprint), [])
            prior = [p for p in same if p.period.overlaps(period)]
        used = command.issuance_id in self.issuances or (not approved and command.issuance_id in self.proposed)
        return self.ledger.issue(
            command,
            self.account(applied.landing),
            issuance_used=used,
            overlapping=self.index.overlapping(block.namespace, block.start, block.end, EVIDENCE_LIMIT),
            authorization=loa.authorization if loa else None,
            authorization_revoked=loa.revoked if loa else False,
            rules=applied.rules,
            roles={role: self._ref(account_id) for role, account_id in applied.roles.items()},
            prior=prior,
            stored=self.manifests.get(command.manifest_id),
        )

    def _authorization(self, authorization_id: str) -> Authorization:
        return self.authorizations.get(authorization_id) or Authorization(f"authorization-{authorization_id}")

    def account(self, account_id: str) -> Account | None:
        account = self.accounts.get(account_id)
        return account if account is not None and account.opened else None

    def frozen(self, blocks: Sequence[Block]) -> frozenset[str]:
        return frozenset(b.units.project_id for b in blocks if self._project(b.units.project_id).frozen)

    def _project(self, project_id: str) -> Project:
        return self.projects.get(project_id) or Project(f"project-{project_id}")

    def decide(self, command: Message, channel: str = "") -> list[Message]:
        """The events `command` causes (raises DomainError when refused); changes nothing.
        `channel`: the jurisdiction of the national registry's channel it came from."""
        if channel:
            check(command)
            bind(channel, command, self._named(command))
        controlled = self._control(command)
        if controlled is not None:
            return controlled
        match command:
            case pb.OpenAccount():
                return self.ledger.open_account(command, self.account(command.account_id))
            case pb.RecordAuthorization():
                existing = self.authorizations.get(command.authorization_id)
                return self.ledger.record_authorization(command, existing.authorization if existing else None)
            case pb.ChangeAuthorization():
                loa_id = command.authorization.authorization_id
                return self.ledger.change_authorization(command, self._authorization(loa_id))
            case pb.RevokeAuthorization():
                return self.ledger.revoke_authorization(command, self._authorization(command.authorization_id))
            case pb.RecordIssuance():
                landing = self.account(self.issuance.applying(command).landing)
                self._issue(command)
                assert landing is not None  # issue refuses an issuance into no account
                return screening.propose_issuance(command, landing, self.now, screening.WINDOW)
            case pb.ReserveUnits():
                available = self.index.available(command.account_id, command.selector)
                if available >= command.quantity:
                    eligible = self._eligible(command)
                else:  # refused: the first few name the evidence
                    eligible = self.index.eligible(command.account_id, command.selector, None, EVIDENCE_LIMIT)
                return self.ledger.reserve(
                    command,
                    self.account(command.account_id),
                    reservation_used=command.reservation_id in self.reservations,
                    eligible=eligible,
                    available=available,
                    frozen_projects=self.frozen(eligible),
                )
            case pb.RetireUnits():
                held = self._held(command, command.retirement_id in self.reservations)
                decided = self.ledger.retire(command, self.account(command.account_id), held)
                return self._propose(decided)
            case pb.ExpireUnits():
                held = self._held(command, command.expiry_id in self.reservations)
                decided = self.ledger.expire(command, self.account(command.account_id), held)
                return self._propose(decided)
            case cpb.ProposalScreened():
                account = self.account(command.account_id)
                proposal = account.screening.get(command.proposal_id) if account else None
                if proposal is None:
                    return []
                if proposal.HasField("issuance") and command.verdict == cpb.APPROVED:
                    try:
                        return self._issue(proposal.issuance, approved=True)
                    except DomainError as refusal:
                        return screening.rejected(proposal, refusal.code, refusal.reason, [])
                delivery = None
                if proposal.HasField("internal_transfer"):
                    target = self.account(proposal.internal_transfer.to_account_id)
                    reserved = self.index.reserved(proposal.proposal_id)
                    delivery = screening.Delivery(target.ref if target else None, reserved, self.frozen(reserved))
                return screening.answer(command, account, delivery)
            case pb.ExpireProposal():
                account = self.account(command.account_id)
                answered = account is None or command.proposal_id not in account.screening
                return [] if answered else screening.expire(account, command.proposal_id, self.now)
            case pb.ReleaseReservation():
                owner = self.account(self.reservations.get(command.reservation_id, ""))
                return self.ledger.release(command, owner, self.index.reserved(command.reservation_id))
            case pb.TransferUnits():
                owner = self.account(self.reservations.get(command.reservation_id, ""))
                target = self.account(command.to_account_id)
                reserved = self.index.reserved(command.reservation_id)
                return self.ledger.transfer(
                    command,
                    owner,
                    target.ref if target else None,
                    reserved,
                    self.frozen(reserved),
                    transfer_used=command.transfer_id in self.transfers,
                )
            case pb.ProposeExternalTransfer():
                held = self._held(command, self._transfer_used(command.transfer_id))
                decided = self.external.propose(command, self.account(command.account_id), held, self.now)
                return self._propose(decided)
            case pb.ProposeInboundTransfer():
                overlapping = [
                    o
                    for b in command.blocks[:BLOCKS_MAX]
                    if b.namespace and 1 <= b.start <= b.end
                    for o in self.index.overlapping(b.namespace, b.start, b.end, EVIDENCE_LIMIT)
                ]
                return receive(
                    command,
                    channel,
                    self.account(command.to_account_id),
                    self.external.registries,
                    transfer_used=(channel, command.transfer_id) in self.inbound,
                    overlapping=overlapping,
                    authorizations={k: a.authorization for k, a in self.authorizations.items() if a.authorization},
                )
            case pb.AnswerExternalTransfer():
                owner = self.account(self.reservations.get(command.transfer_id, ""))
                reserved = self.index.reserved(command.transfer_id)
                return self.external.answer(command, owner, channel, reserved, self.frozen(reserved))
            case pb.ExpireExternalTransfer():
                owner = named(self.account(self.reservations.get(command.transfer_id, "")), command.transfer_id)
                return self.external.expire(command, owner, self.index.reserved(command.transfer_id), self.now)
            case pb.GrantMandate():
                account = self.account(command.account_id)
                holder = self.mandates.get(command.mandate_id, "")
                return self.ledger.grant_mandate(command, account, holder)
            case pb.RevokeMandate():
                return self.ledger.revoke_mandate(command, self.account(command.account_id))
        raise DomainError("COMMAND_UNSUPPORTED", f"registry does not take {type(command).__name__}")

    def _control(self, command: Message) -> list[Message] | None:
        """The events of a Union Registry control; None for other commands."""
        controls = self.controls
        match command:
            case pb.FreezeProject() | pb.UnfreezeProject():
                return controls.freeze_project(command, self._project(command.project_id))
            case pb.FreezeAccount() | pb.UnfreezeAccount():
                return controls.freeze_account(command, self.account(command.account_id))
            case pb.FreezeBlocks():
                valid = command.namespace and 1 <= command.start <= command.end
                covering = (
                    self.index.overlapping(command.namespace, command.start, command.end, EVIDENCE_LIMIT)
                    if valid
                    else []
                )
                return controls.freeze_blocks(command, self.account(command.account_id), covering)
            case pb.UnfreezeBlocks():
                frozen = self.index.reserved(frozen_under(command.account_id, command.freeze_id).reservation_id)
                return controls.unfreeze_blocks(command, self.account(command.account_id), frozen)
            case pb.CloseAccount():
                units = self.index.available(command.account_id, pb.UnitSelector())
                return controls.close_account(command, self.account(command.account_id), units)
            case pb.ProposeTrustedAccount():
                trusted = self.account(command.trusted_account_id)
                return controls.propose_trusted(
                    command, self.account(command.account_id), trusted.ref if trusted else None
                )
            case pb.ApproveTrustedAccount():
                return controls.approve_trusted(command, self.account(command.account_id), self.now)
            case pb.RemoveTrustedAccount():
                return controls.remove_trusted(command, self.account(command.account_id))
            case pb.SetTransferLimit():
                return controls.set_transfer_limit(command, self.account(command.account_id))
            case pb.RequestTransfer():
                target = self.account(command.to_account_id)
                held = self._held(command, self._transfer_used(command.transfer_id))
                decided = controls.request_transfer(
                    command, self.account(command.account_id), target.ref if target else None, held, self.now
                )
                return self._propose(decided)
            case pb.ExecuteTransfer():
                account = self.account(command.account_id)
                scheduled = account.scheduled.get(command.transfer_id) if account else None
                target = self.account(scheduled.to_account_id) if scheduled else None
                reserved = self.index.reserved(command.transfer_id) if scheduled else []
                return controls.execute_transfer(
                    command, account, target.ref if target else None, reserved, self.frozen(reserved), self.now
                )
            case pb.CancelTransfer():
                account = self.account(command.account_id)
                pending = account is not None and command.transfer_id in account.scheduled
                reserved = self.index.reserved(command.transfer_id) if pending else []
                return controls.cancel_transfer(command, account, reserved)
        return None

    def _named(self, command: Message) -> Account | None:
        """The existing account a channel's command names (the service loads the same)."""
        named = (
            pb.OpenAccount,
            pb.RecordIssuance,
            pb.GrantMandate,
            pb.RevokeMandate,
            pb.FreezeAccount,
            pb.UnfreezeAccount,
            pb.FreezeBlocks,
            pb.UnfreezeBlocks,
            pb.RetireUnits,
            pb.ExpireUnits,
        )
        if isinstance(command, named):
            return self.account(command.account_id)
        return None

    def _propose(self, decided: list[Message]) -> list[Message]:
        """As the service: the decided operation as a proposal for the transaction log."""
        reserved = decided[0]
        assert isinstance(reserved, pb.UnitsReserved)
        account = self.accounts[reserved.account_id]
        return screening.propose(decided, account.jurisdiction, self.now, screening.WINDOW)

    def _transfer_used(self, transfer_id: str) -> bool:
        """A holder's transfer's id is also a reservation's: unique among both."""
        return transfer_id in self.reservations or transfer_id in self.transfers

    def _held(self, command: Picking, used: bool) -> Held:
        eligible = self._eligible(picking(command))
        available = self.index.available(command.account_id, command.selector)
        return Held(used, available, eligible, self.frozen(eligible))

    def _eligible(self, command: pb.ReserveUnits) -> list[Block]:
        """Pages of eligible blocks until the quantity is covered (or none are left)."""
        found: list[Block] = []
        covered = 0
        after: tuple[str, int] | None = None
        while covered < command.quantity:
            page = self.index.eligible(command.account_id, command.selector, after, PAGE)
            found += page
            covered += sum(b.quantity for b in page)
            if len(page) < PAGE:
                break
            after = (page[-1].namespace, page[-1].start)
        return found

    def apply(self, event: Message) -> None:
        """Fold a recorded event: its aggregate, the projected facts and the index."""
        stream_id = stream_of(event)
        if stream_id.startswith("authorization-"):
            key = stream_id.removeprefix("authorization-")
            self.authorizations.setdefault(key, Authorization(stream_id)).mutate([event])
        elif isinstance(event, pb.ProjectFrozen | pb.ProjectUnfrozen):
            self.projects.setdefault(event.project_id, Project(stream_id)).mutate([event])
        else:
            key = stream_id.removeprefix("account-")
            self.accounts.setdefault(key, Account(stream_id)).mutate([event])
        match event:
            case pb.UnitsIssued():
                self.issuances.add(event.issuance_id)
                if event.fingerprint_key:
                    standard, period = event.block.attributes.standard, fingerprint.period_of(event.period)
                    prior = Prior(event.issuance_id, standard, period)
                    self.fingerprints.setdefault(event.fingerprint_key, []).append(prior)
                if event.manifest_id:
                    issued = replace(self.manifests[event.manifest_id], issued_by=event.issuance_id)
                    self.manifests[event.manifest_id] = issued
            case pb.ScreenProposal():
                self.proposed.add(event.proposal_id)
            case pb.UnitsReserved():
                self.reservations[event.reservation_id] = event.account_id
            case pb.UnitsTransferred():
                self.transfers.add(event.transfer_id)
            case pb.InboundTransferAccepted():
                self.inbound.add((event.from_registry, event.transfer_id))
            case pb.MandateGranted():
                self.mandates[event.mandate_id] = event.account_id
            case pb.MandateRevoked():
                del self.mandates[event.mandate_id]
        for change in changes(event):
            self.index.apply(change)

    def execute(self, command: Message, channel: str = "") -> list[Message]:
        events = self.decide(command, channel)
        for event in events:
            self.apply(event)
        return events
