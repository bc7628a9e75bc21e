"""The registry's service layer: load the facts a decision needs, decide, record.

Streams: `account-<id>` (AccountOpened, every event that changes the account's
holdings (a transfer goes to the source account's stream), its mandates and its
controls), `authorization-<id>`, `project-<id>`, and one-event streams
`rejected-<command event id>` for refusals. A command from a national registry's
channel `registry.inbound.<JUR>` is bound to JUR (ledger.bind), one from the venue's
`registry.commands` to the venue's commands (ledger.bind_venue), before it is decided.
The block index is PostgreSQL (sql_index.py), folded by the projector in the recording
transaction. Scheduled transfers are completed by `Scheduler` when they come due.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
from google.protobuf.message import Message
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common import topics
from services.common.aggregate import Aggregate
from services.common.consumer import Handler
from services.common.envelope import Context
from services.common.errors import DomainError
from services.common.eventstore import ConcurrencyError
from services.common.inputs import is_party
from services.common.repository import Repository
from services.common.runtime import Kernel
from services.common.statehash import ServiceState
from services.common.unit_of_work import Destinations, UnitOfWork, UnitOfWorkFactory
from services.registry import manifests, policies, sql_index
from services.registry.domain import adjustments, fingerprint, screening
from services.registry.domain.accounts import Account, AccountRef, Authorization, Project
from services.registry.domain.blocks import Block, frozen_under
from services.registry.domain.codes import numeric
from services.registry.domain.controls import DISPUTE_BLOCKS_MAX, Controls, Policy
from services.registry.domain.external import ExternalTransfers, named, receive
from services.registry.domain.fingerprint import Prior
from services.registry.domain.issuance_rules import IssuancePolicies
from services.registry.domain.ledger import (
    BLOCKS_MAX,
    EVIDENCE_LIMIT,
    INT64_MAX,
    Held,
    Ledger,
    bind,
    bind_venue,
    check,
    command_id,
    picking,
)
from services.registry.domain.reconciliation import ROWS_MAX, Kind, Reconciliation, disputed
from services.registry.projector import PROJECTIONS, inline, project
from services.registry.sql_index import COLUMNS, SqlIndex, block_of
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as pb
from tonne.v1 import settlement_pb2 as spb
from tonne.v1.envelope_pb2 import CommandRejected, Envelope

# Blocks read per query while covering a reservation: the first page is small (most
# reservations take a block or two, and every row read is a random heap fetch), the
# next pages larger.
FIRST_PAGE = 8
PAGE = 100
# A command whose stream another writer moved is decided again, this many times.
ATTEMPTS = 5


def _moved(exc: BaseException) -> bool:
    """Whether a decision's facts moved under it: decide again (the consumer retries a
    ConcurrencyError after reloading; so does `decide`)."""
    return isinstance(exc, ConcurrencyError | asyncpg.UniqueViolationError | asyncpg.DeadlockDetectedError) or (
        sql_index.conflicted(exc)
    )


# Commands that name an account: bound to a channel once the account is loaded.
_NAMES_ACCOUNT = (
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


class ControlSettings(BaseSettings):
    """The registry's Union Registry controls (domain/controls.py Policy) and where its
    issuance rules are (services/registry/policies/issuance by default)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    issuance_rules: Path = Field(policies.HERE / "issuance", validation_alias="TONNE_ISSUANCE_RULES")

    trust_delay_seconds: int = Field(7 * 24 * 3600, ge=0, validation_alias="TONNE_TRUST_DELAY_SECONDS")
    untrusted_delay_seconds: int = Field(26 * 3600, ge=0, validation_alias="TONNE_UNTRUSTED_DELAY_SECONDS")
    untrusted_cap: int = Field(2_000_000, ge=1, le=INT64_MAX, validation_alias="TONNE_UNTRUSTED_CAP")
    # How often each party's registry is sent the digest of its accounts' holdings.
    reconcile_every_seconds: int = Field(3600, ge=1, validation_alias="TONNE_RECONCILE_EVERY_SECONDS")
    # Rows per part of a holdings digest: one Kafka message each (10,000 rows: about 1 MB).
    digest_part_rows: int = Field(ROWS_MAX, ge=1, le=ROWS_MAX, validation_alias="TONNE_DIGEST_PART_ROWS")
    # How long a proposal waits for the transaction log's answer before its units return.
    screening_window_seconds: int = Field(600, ge=1, validation_alias="TONNE_SCREENING_WINDOW_SECONDS")
    # How long the API waits for that answer before it answers 202 (the proposal goes on).
    screening_wait_seconds: float = Field(10.0, ge=0, le=60, validation_alias="TONNE_SCREENING_WAIT_SECONDS")
    # How long a proposed external transfer waits for the acquiring registry's answer.
    external_transfer_expiry_seconds: int = Field(
        24 * 3600, ge=1, validation_alias="TONNE_EXTERNAL_TRANSFER_EXPIRY_SECONDS"
    )

    def policy(self) -> Policy:
        return Policy(
            trust_delay=timedelta(seconds=self.trust_delay_seconds),
            untrusted_delay=timedelta(seconds=self.untrusted_delay_seconds),
            untrusted_cap=self.untrusted_cap,
            external_expiry=timedelta(seconds=self.external_transfer_expiry_seconds),
        )


class Registry:
    def __init__(self, kernel: Kernel, policy: Policy | None = None, issuance: IssuancePolicies | None = None) -> None:
        settings = kernel.settings
        controls = ControlSettings()
        # Read and validated here, at start-up: a rules file that does not validate stops it.
        self.issuance = issuance or policies.issuance_policies(controls.issuance_rules)
        self.pool = kernel.pool
        self.auth = kernel.auth
        self.accounts = Repository(
            Account, "account-", snapshot_every=settings.snapshot_every, cache_size=settings.aggregate_cache
        )
        self.authorizations = Repository(
            Authorization,
            "authorization-",
            snapshot_every=settings.snapshot_every,
            cache_size=settings.aggregate_cache,
        )
        self.projects = Repository(
            Project, "project-", snapshot_every=settings.snapshot_every, cache_size=settings.aggregate_cache
        )
        self.reconciliations = Repository(
            Reconciliation,
            "reconciliation-",
            snapshot_every=settings.snapshot_every,
            cache_size=len(topics.JURISDICTIONS),
        )
        self.reconcile_every = timedelta(seconds=controls.reconcile_every_seconds)
        self.digest_part_rows = controls.digest_part_rows
        self.screening_window = timedelta(seconds=controls.screening_window_seconds)
        self.screening_wait = controls.screening_wait_seconds
        self.ledger = Ledger()
        self.controls = Controls(policy or controls.policy(), self.ledger)
        self.external = ExternalTransfers(
            self.ledger, frozenset(topics.JURISDICTIONS), self.controls.policy.external_expiry
        )
        self.unit_of_work = UnitOfWorkFactory(kernel.pool, project, inline)
        repositories: list[Repository[Any]] = [self.accounts, self.authorizations, self.projects, self.reconciliations]
        self.state = ServiceState(repositories, project, PROJECTIONS)

    @property
    def handlers(self) -> Mapping[str, Handler]:
        # A national registry's channel is bound to its jurisdiction: the handler knows which.
        inbound = {topics.registry_inbound(j): partial(self.on_national, j) for j in topics.JURISDICTIONS}
        return {
            topics.REGISTRY_COMMANDS: self.on_command,
            topics.COMPLIANCE_DECISIONS: self.on_screened,
            topics.SETTLEMENT_EVENTS: self.on_settled,
            **inbound,
        }

    async def on_settled(self, uow: UnitOfWork, envelope: Envelope, event: Message) -> None:
        """settlement.events: a host party's corresponding adjustment, kept as a fact (the
        blocks' adjustment status reads it); the topic's other events are not the registry's."""
        if isinstance(event, spb.CorrespondingAdjustmentApplied) and adjustments.adjusted(event):
            await uow.append(f"fact-{envelope.event_id}", 0, [(event, [])], Context.following(envelope, "registry"))

    async def on_command(self, uow: UnitOfWork, envelope: Envelope, command: Message) -> None:
        """registry.commands: the venue's own services."""
        await self.execute(uow, command, Context.following(envelope, "registry"), envelope.event_id, channel=VENUE)

    async def on_screened(self, uow: UnitOfWork, envelope: Envelope, decision: Message) -> None:
        """compliance.decisions: the transaction log's answers to the registry's proposals
        (the topic's other decisions are settlement's)."""
        if isinstance(decision, cpb.ProposalScreened):
            context = Context.following(envelope, "compliance")
            await self.execute(uow, decision, context, envelope.event_id, channel=COMPLIANCE)

    async def on_national(self, jurisdiction: str, uow: UnitOfWork, envelope: Envelope, command: Message) -> None:
        """registry.inbound.<jurisdiction>: that jurisdiction's national registry."""
        actor = f"national-registry:{jurisdiction}"
        context = Context.following(envelope, actor)
        await self.execute(uow, signed(command, actor), context, envelope.event_id, channel=jurisdiction)

    async def decide(self, command: Message, actor: str, now: datetime | None = None) -> list[Message]:
        """Decide and record in a unit of work of its own (the API's and the scheduler's
        path), again when another writer moved the stream under the decision. The unit of
        work is deferred: a decision that writes one statement needs no transaction."""
        context = Context.new(actor=actor)
        for attempt in range(ATTEMPTS):
            try:
                async with self.unit_of_work(deferred=True) as uow:
                    return await self.execute(uow, command, context, now=now)
            except Exception as exc:
                if not _moved(exc) or attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def execute(
        self,
        uow: UnitOfWork,
        command: Message,
        context: Context,
        cause: str = "",
        channel: str = "",
        now: datetime | None = None,
    ) -> list[Message]:
        """Decide and record; a refused command is recorded as CommandRejected on a
        stream of its own (`cause`: the command's event id, if it came as one).
        `channel`: the jurisdiction of the national registry's channel it came from, or
        VENUE; "" for the API (which checks the caller's authority itself). `now`: the
        registry's clock by default (never a time a message claims)."""
        try:
            try:
                aggregate, events = await self._decide(uow, command, channel, now or datetime.now(UTC))
            except DomainError as error:
                rejected = rejection(command, error)
                answer = answered(destinations(rejected), channel, rejected)
                await uow.append(f"rejected-{_uuid(cause)}", 0, [(rejected, answer)], context)
                return [rejected]
            if events:
                await uow.record(aggregate, [(e, answered(destinations(e), channel, e)) for e in events], context)
                for event in events:
                    if isinstance(event, pb.ReconciliationMismatch):
                        await self._freeze_concerned(uow, event, context)
            return events
        except Exception as exc:
            if _moved(exc) and not isinstance(exc, ConcurrencyError):
                raise ConcurrencyError(f"the registry's index moved under the decision: {exc!r}") from exc
            raise

    async def _freeze_concerned(self, uow: UnitOfWork, mismatch: pb.ReconciliationMismatch, context: Context) -> None:
        """The units a reconciliation found in dispute are frozen with it, atomically."""
        for account_id, kinds in disputed(mismatch).items():
            account = await uow.load(self.accounts, account_id)
            if not account.opened:
                continue
            held, reserved = await disputed_units(uow.conn, account_id, kinds)
            if events := self.controls.freeze_disputed(account, mismatch.digest_id, held, reserved):
                await uow.record(account, [(e, destinations(e)) for e in events], context)

    async def _decide(
        self, uow: UnitOfWork, command: Message, channel: str, now: datetime
    ) -> tuple[Aggregate, list[Message]]:
        check(command)  # before any id reaches a query
        index = SqlIndex(uow.conn)
        if channel == VENUE:
            bind_venue(command)
            channel = ""
        if (channel == COMPLIANCE) != isinstance(command, cpb.ProposalScreened):
            raise DomainError(
                "COMMAND_NOT_ALLOWED_ON_CHANNEL", "only the transaction log answers proposals, and only that", [channel]
            )
        if channel == COMPLIANCE:
            channel = ""
        elif channel and not isinstance(command, _NAMES_ACCOUNT):
            bind(channel, command, None)  # before anything is looked up or locked
        if isinstance(command, CONTROLS):
            return await self._control(uow, index, command, channel, now)
        match command:
            case pb.OpenAccount():
                account = await self._account(uow, command.account_id, channel, command)
                return account, self.ledger.open_account(command, _opened(account))
            case pb.RecordAuthorization():
                loa = await uow.load(self.authorizations, command.authorization_id)
                if loa.authorization is None:
                    self.authorizations.evict(loa.stream_id)
                return loa, self.ledger.record_authorization(command, loa.authorization)
            case pb.ChangeAuthorization():
                loa = await uow.load(self.authorizations, command.authorization.authorization_id)
                return loa, self.ledger.change_authorization(command, loa)
            case pb.RevokeAuthorization():
                loa = await uow.load(self.authorizations, command.authorization_id)
                return loa, self.ledger.revoke_authorization(command, loa)
            case pb.RecordIssuance():
                # Decided now (what is wrong already is refused now), completed once the
                # transaction log approves (decided again then: screening.propose_issuance).
                account, _ = await self._issue(uow, index, command, channel)
                return account, screening.propose_issuance(command, account, now, self.screening_window)
            case pb.ReserveUnits():
                return await self._reserve(uow, index, command)
            case pb.RetireUnits() | pb.ExpireUnits():
                # Completed only once the transaction log approves (domain/screening.py).
                account, held = await self._held(uow, index, picking(command), channel, command)
                if isinstance(command, pb.RetireUnits):
                    decided = self.ledger.retire(command, _opened(account), held)
                else:
                    decided = self.ledger.expire(command, _opened(account), held)
                return account, screening.propose(decided, account.jurisdiction, now, self.screening_window)
            case cpb.ProposalScreened():
                return await self._screened(uow, index, command)
            case pb.ExpireProposal():
                account = await uow.load(self.accounts, command.account_id)
                if command.proposal_id not in account.screening:
                    return account, []
                return account, screening.expire(account, command.proposal_id, now)
            case pb.ReleaseReservation():
                owner, _, reserved, _, _ = await self._reservation(uow, index, command.reservation_id)
                events = self.ledger.release(command, _opened(owner), reserved)
                assert owner is not None  # the ledger refuses an unknown reservation
                return owner, events
            case pb.TransferUnits():
                owner, target, reserved, frozen, used = await self._reservation(
                    uow, index, command.reservation_id, command.to_account_id, command.transfer_id
                )
                events = self.ledger.transfer(command, _opened(owner), target, reserved, frozen, transfer_used=used)
                assert owner is not None  # the ledger refuses an unknown reservation
                return owner, events
            case pb.ProposeExternalTransfer():
                account, held = await self._held(uow, index, picking(command), transfer_id=command.transfer_id)
                decided = self.external.propose(command, _opened(account), held, now)
                return account, screening.propose(decided, account.jurisdiction, now, self.screening_window)
            case pb.ProposeInboundTransfer():
                return await self._receive(uow, index, command, channel)
            case pb.IssueHoldingsDigest():
                reconciliation = await uow.load(self.reconciliations, command.jurisdiction)
                if not reconciliation.due(now, self.reconcile_every):
                    return reconciliation, []  # read nothing: the scheduler asks every second
                rows = await holding_rows(uow.conn, command.jurisdiction)
                issued = reconciliation.issue(
                    command.jurisdiction, rows, now, self.reconcile_every, self.digest_part_rows
                )
                return reconciliation, issued
            case pb.AnswerHoldingsDigest():
                reconciliation = await uow.load(self.reconciliations, channel or "none")
                ours = await digest_rows(uow.conn, command.digest_id, command.theirs[:ROWS_MAX])
                return reconciliation, reconciliation.answer(command, channel, ours)
            case pb.AnswerExternalTransfer():
                owner, _, reserved, frozen, _ = await self._reservation(uow, index, command.transfer_id)
                account = named(_opened(owner), command.transfer_id)
                return account, self.external.answer(command, account, channel, reserved, frozen)
            case pb.ExpireExternalTransfer():
                owner, _, reserved, _, _ = await self._reservation(uow, index, command.transfer_id)
                account = named(_opened(owner), command.transfer_id)
                return account, self.external.expire(command, account, reserved, now)
            case pb.GrantMandate():
                account = await self._account(uow, command.account_id, channel, command)
                holder = await uow.conn.fetchval(
                    "SELECT account_id FROM mandates WHERE mandate_id = $1", command.mandate_id
                )
                return account, self.ledger.grant_mandate(command, _opened(account), holder or "")
            case pb.RevokeMandate():
                account = await self._account(uow, command.account_id, channel, command)
                return account, self.ledger.revoke_mandate(command, _opened(account))
        raise DomainError("COMMAND_UNSUPPORTED", f"registry does not take {type(command).__name__}")

    async def _control(
        self, uow: UnitOfWork, index: SqlIndex, command: Message, channel: str, now: datetime
    ) -> tuple[Aggregate, list[Message]]:
        """The Union Registry's controls (domain/controls.py)."""
        controls = self.controls
        if isinstance(command, pb.FreezeProject | pb.UnfreezeProject):
            project = await uow.load(self.projects, command.project_id)
            return project, controls.freeze_project(command, project)
        if isinstance(command, pb.RequestTransfer):
            target = await account_ref(uow.conn, command.to_account_id)
            account, held = await self._held(uow, index, picking(command), transfer_id=command.transfer_id)
            decided = controls.request_transfer(command, _opened(account), target, held, now)
            return account, screening.propose(decided, account.jurisdiction, now, self.screening_window)
        assert isinstance(command, ACCOUNT_CONTROLS)
        account = await self._account(uow, command.account_id, channel, command)
        opened = _opened(account)
        match command:
            case pb.FreezeAccount() | pb.UnfreezeAccount():
                return account, controls.freeze_account(command, opened)
            case pb.FreezeBlocks():
                span = pb.SerialBlock(namespace=command.namespace, start=command.start, end=command.end)
                covering = await index.overlapping([span], EVIDENCE_LIMIT)
                return account, controls.freeze_blocks(command, opened, covering)
            case pb.UnfreezeBlocks():
                under = await index.reserved(frozen_under(command.account_id, command.freeze_id).reservation_id)
                return account, controls.unfreeze_blocks(command, opened, under)
            case pb.CloseAccount():
                held = await uow.conn.fetchval(
                    "SELECT coalesce(sum(quantity), 0) FROM holdings WHERE account_id = $1 AND status = 'held'",
                    command.account_id,
                )
                return account, controls.close_account(command, opened, int(held))
            case pb.ProposeTrustedAccount():
                trusted = await account_ref(uow.conn, command.trusted_account_id)
                return account, controls.propose_trusted(command, opened, trusted)
            case pb.ApproveTrustedAccount():
                return account, controls.approve_trusted(command, opened, now)
            case pb.RemoveTrustedAccount():
                return account, controls.remove_trusted(command, opened)
            case pb.SetTransferLimit():
                return account, controls.set_transfer_limit(command, opened)
            case pb.ExecuteTransfer():
                scheduled = account.scheduled.get(command.transfer_id)
                target = await account_ref(uow.conn, scheduled.to_account_id) if scheduled else None
                reserved = await index.reserved(command.transfer_id) if scheduled else []
                frozen = await frozen_projects(uow.conn, reserved)
                return account, controls.execute_transfer(command, opened, target, reserved, frozen, now)
            case pb.CancelTransfer():
                reserved = await index.reserved(command.transfer_id) if command.transfer_id in account.scheduled else []
                return account, controls.cancel_transfer(command, opened, reserved)
        raise DomainError("COMMAND_UNSUPPORTED", f"registry does not take {type(command).__name__}")

    async def _issue(
        self, uow: UnitOfWork, index: SqlIndex, command: pb.RecordIssuance, channel: str = "", approved: bool = False
    ) -> tuple[Account, list[Message]]:
        """The issuance decided; `approved`: the transaction log approved its proposal, so
        its id is pending under that proposal rather than used by another."""
        block = command.block
        applied = self.issuance.applying(command)
        roles = {
            role: await account_ref(uow.conn, account_id) if account_id else None
            for role, account_id in applied.roles.items()
        }
        account = await self._account(uow, applied.landing, channel, command)
        # A valid range is looked up under its namespace's lock, held to commit: a
        # concurrent issuance into the namespace waits, then sees this one.
        valid = bool(block.namespace) and 1 <= block.start <= block.end <= INT64_MAX
        used, authorization, revoked, overlapping = await index.issuance_facts(
            command.issuance_id,
            block.attributes.authorization_id,
            block.namespace if valid else "",
            block.start if valid else 0,
            block.end if valid else 0,
            EVIDENCE_LIMIT,
        )
        if not approved:  # an id proposed (pending, or rejected) is not proposed again
            used = used or await uow.conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM proposals WHERE proposal_id = $1)", command.issuance_id
            )
        prior: list[Prior] = []
        if command.HasField("fingerprint"):
            fingerprint_key = fingerprint.key(command.fingerprint)
            prior = await index.prior_issuances(fingerprint_key, fingerprint.period_of(command.period), EVIDENCE_LIMIT)
        stored = await manifests.stored(uow.conn, command.manifest_id) if command.manifest_id else None
        events = self.ledger.issue(
            command,
            _opened(account),
            issuance_used=used,
            overlapping=overlapping,
            authorization=authorization,
            authorization_revoked=revoked,
            rules=applied.rules,
            roles=roles,
            prior=prior,
            stored=stored,
        )
        return account, events

    async def _receive(
        self, uow: UnitOfWork, index: SqlIndex, command: pb.ProposeInboundTransfer, channel: str
    ) -> tuple[Aggregate, list[Message]]:
        account = await self._account(uow, command.to_account_id)
        blocks = command.blocks[:BLOCKS_MAX]
        used = await uow.conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM inbound_transfers WHERE from_registry = $1 AND transfer_id = $2)",
            channel,
            command.transfer_id,
        )
        named = sorted({b.attributes.authorization_id for b in blocks} - {""})
        authorizations = {
            r["authorization_id"]: pb.RecordAuthorization(**dict(r))
            for r in await uow.conn.fetch(
                "SELECT authorization_id, host_party, quantity, use, first_transfer, vintage_from, vintage_to "
                "FROM authorizations WHERE authorization_id = ANY($1::text[])",
                named,
            )
        }
        events = receive(
            command,
            channel,
            _opened(account),
            self.external.registries,
            transfer_used=used,
            overlapping=await index.overlapping(blocks, EVIDENCE_LIMIT),
            authorizations=authorizations,
        )
        return account, events

    async def _reserve(
        self, uow: UnitOfWork, index: SqlIndex, command: pb.ReserveUnits
    ) -> tuple[Aggregate, list[Message]]:
        account, held = await self._held(uow, index, command)
        events = self.ledger.reserve(
            command,
            _opened(account),
            reservation_used=held.used,
            eligible=held.eligible,
            available=held.available,
            frozen_projects=held.frozen,
        )
        return account, events

    async def _held(
        self,
        uow: UnitOfWork,
        index: SqlIndex,
        reserve: pb.ReserveUnits,
        channel: str = "",
        command: Message | None = None,
        transfer_id: str = "",
    ) -> tuple[Account, Held]:
        """The account (locked) and the facts of the held units `reserve` would pick: read
        with the account stream's version first, so a cached account at that version needs
        no read of its own; read again if a writer of this process moved it in between."""
        held, version = await self._held_facts(index, reserve, transfer_id)
        account = await self._account(uow, reserve.account_id, channel, command, version=version)
        if account.version != version:
            held, _ = await self._held_facts(index, reserve, transfer_id)
        return account, held

    async def _held_facts(self, index: SqlIndex, command: pb.ReserveUnits, transfer_id: str = "") -> tuple[Held, int]:
        """The facts, and the account stream's version they were read at. `transfer_id`:
        the reservation's id is also a transfer's (a holder's transfer), unique among them."""
        stream_id = self.accounts.stream_id(command.account_id)
        used, available, eligible, frozen, version = await index.reserve_facts(
            command.reservation_id,
            command.account_id,
            command.selector,
            command.quantity,
            FIRST_PAGE,
            stream_id,
            transfer_id,
        )
        if available >= command.quantity and len(eligible) == FIRST_PAGE:
            eligible = await self._cover(index, command, eligible)
        return Held(used, available, eligible, frozen), version

    @staticmethod
    async def _cover(index: SqlIndex, command: pb.ReserveUnits, first: list[Block]) -> list[Block]:
        """Further keyset pages of eligible blocks until the quantity is covered."""
        found, page, size = list(first), first, FIRST_PAGE
        covered = sum(b.quantity for b in found)
        while covered < command.quantity and len(page) == size:
            size = PAGE
            after = (page[-1].namespace, page[-1].start)
            page = await index.eligible(command.account_id, command.selector, after, PAGE)
            found += page
            covered += sum(b.quantity for b in page)
        return found

    async def _screened(
        self, uow: UnitOfWork, index: SqlIndex, decision: cpb.ProposalScreened
    ) -> tuple[Aggregate, list[Message]]:
        """The transaction log's answer: a holder's transfer reads its facts again, an
        issuance is decided again."""
        account = await uow.load(self.accounts, decision.account_id)
        proposal = account.screening.get(decision.proposal_id)
        if proposal is None:
            return account, []  # answered already, or given up on at its time
        if proposal.HasField("issuance") and decision.verdict == cpb.APPROVED:
            try:
                return await self._issue(uow, index, proposal.issuance, approved=True)
            except DomainError as refusal:
                return account, screening.rejected(proposal, refusal.code, refusal.reason, [])
        delivery = None
        if proposal.HasField("internal_transfer"):
            to_account_id = proposal.internal_transfer.to_account_id
            _, target, reserved, frozen, _ = await self._reservation(uow, index, proposal.proposal_id, to_account_id)
            delivery = screening.Delivery(target, reserved, frozen)
        return account, screening.answer(decision, account, delivery)

    async def _reservation(
        self, uow: UnitOfWork, index: SqlIndex, reservation_id: str, target_id: str = "", transfer_id: str = ""
    ) -> tuple[Account | None, AccountRef | None, list[Block], frozenset[str], bool]:
        """The account holding the reservation (locked; None: no such reservation), the
        target account named (only read: its identity never changes once opened, and its
        closing is checked again where the units move) and the reservation's blocks as of
        the holder's version. Read in one query with the stream's version; the blocks are
        read again if the account we hold is at another version (a writer of this process
        committed in between). And the frozen projects, and whether `transfer_id` is used."""
        owner_id, version, target, reserved, frozen, used = await index.reservation_facts(
            reservation_id, self.accounts.prefix, target_id, transfer_id
        )
        if not owner_id:
            return None, target, [], frozen, used
        owner = await self._account(uow, owner_id, version=version)
        if owner.version != version:
            reserved = await index.reserved(reservation_id)
        return owner, target, reserved, frozen, used

    async def _account(
        self,
        uow: UnitOfWork,
        account_id: str,
        channel: str = "",
        command: Message | None = None,
        version: int | None = None,
    ) -> Account:
        """The account, locked for this unit of work (one not opened is not kept in the
        cache: another instance may open it, and no write of ours would notice). With a
        national registry's `channel`, `command` must be bound to its jurisdiction.
        `version`: the account stream's version as a facts query just read it."""
        account = await uow.load(self.accounts, account_id, version)
        if not account.opened:
            self.accounts.evict(account.stream_id)
        if channel and command is not None:
            bind(channel, command, _opened(account))
        return account


# The channel of the venue's own services (registry.commands).
VENUE = "venue"
# The channel of the transaction log's answers (compliance.decisions).
COMPLIANCE = "compliance"
# The Union Registry's controls: decided by `Registry._control`.
ACCOUNT_CONTROLS = (
    pb.CloseAccount,
    pb.FreezeAccount,
    pb.FreezeBlocks,
    pb.UnfreezeBlocks,
    pb.UnfreezeAccount,
    pb.ProposeTrustedAccount,
    pb.ApproveTrustedAccount,
    pb.RemoveTrustedAccount,
    pb.SetTransferLimit,
    pb.RequestTransfer,
    pb.ExecuteTransfer,
    pb.CancelTransfer,
)
CONTROLS = (*ACCOUNT_CONTROLS, pb.FreezeProject, pb.UnfreezeProject)


def signed(command: Message, by: str) -> Message:
    """The command with `by` set to who sent it, for the commands that record it."""
    if "by" not in command.DESCRIPTOR.fields_by_name:
        return command
    copy = type(command)()
    copy.CopyFrom(command)
    copy.by = by  # type: ignore[attr-defined]
    return copy


async def disputed_units(conn: asyncpg.Connection, account_id: str, kinds: Sequence[Kind]) -> tuple[list[Block], int]:
    """The account's held blocks of `kinds` (one past DISPUTE_BLOCKS_MAX at most), and
    how many of its units of those kinds are reserved."""
    standards, parties, vintages, authorizations = (list(column) for column in zip(*kinds, strict=True))
    kind = (
        "(standard, host_party, vintage, authorization_id) IN "
        "(SELECT * FROM unnest($2::int[], $3::text[], $4::int[], $5::text[]))"
    )
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM blocks WHERE account_id = $1 AND status = 'held' AND {kind} "
        "ORDER BY namespace, serial_start LIMIT $6",
        account_id,
        standards,
        parties,
        vintages,
        authorizations,
        DISPUTE_BLOCKS_MAX + 1,
    )
    reserved = await conn.fetchval(
        f"SELECT coalesce(sum(quantity), 0) FROM holdings WHERE account_id = $1 AND status = 'reserved' AND {kind}",
        account_id,
        standards,
        parties,
        vintages,
        authorizations,
    )
    return [block_of(r) for r in rows], int(reserved)


async def holding_rows(conn: asyncpg.Connection, jurisdiction: str) -> list[pb.HoldingRow]:
    """The party's accounts' non-zero holdings by kind of unit; held and reserved together."""
    rows = await conn.fetch(
        "SELECT h.account_id, CASE WHEN h.status IN ('held', 'reserved') THEN 'holding' ELSE h.status END AS status, "
        "h.standard, h.host_party, h.vintage, h.authorization_id, sum(h.quantity)::bigint AS quantity "
        "FROM holdings h JOIN accounts a ON a.account_id = h.account_id WHERE a.jurisdiction = $1 "
        "GROUP BY 1, 2, 3, 4, 5, 6 HAVING sum(h.quantity) <> 0",
        jurisdiction,
    )
    return [pb.HoldingRow(**dict(r)) for r in rows]


async def digest_rows(conn: asyncpg.Connection, digest_id: str, keys: Sequence[pb.HoldingRow]) -> list[pb.HoldingRow]:
    """The digest's rows under the keys of `keys` (a registry's answer names them)."""
    if not keys:
        return []
    rows = await conn.fetch(
        "SELECT d.account_id, d.status, d.standard, d.host_party, d.vintage, d.authorization_id, d.quantity "
        "FROM unnest($2::text[], $3::text[], $4::smallint[], $5::text[], $6::integer[], $7::text[]) "
        "AS k(account_id, status, standard, host_party, vintage, authorization_id) "
        "JOIN digest_rows d USING (account_id, status, standard, host_party, vintage, authorization_id) "
        "WHERE d.digest_id = $1",
        digest_id,
        [k.account_id for k in keys],
        [k.status for k in keys],
        [k.standard for k in keys],
        [k.host_party for k in keys],
        [k.vintage for k in keys],
        [k.authorization_id for k in keys],
    )
    return [pb.HoldingRow(**dict(r)) for r in rows]


async def account_ref(conn: asyncpg.Connection, account_id: str) -> AccountRef | None:
    """An account a decision only names: its identity never changes once opened (a closing
    is checked again where units move)."""
    row = await conn.fetchrow(
        "SELECT account_id, jurisdiction, closed, type FROM accounts WHERE account_id = $1", account_id
    )
    return AccountRef(row["account_id"], row["jurisdiction"], row["closed"], row["type"]) if row else None


async def frozen_projects(conn: asyncpg.Connection, blocks: Sequence[Block]) -> frozenset[str]:
    """Which of the blocks' projects are frozen now."""
    projects = sorted({b.units.project_id for b in blocks})
    if not projects:
        return frozenset()
    rows = await conn.fetch("SELECT project_id FROM projects WHERE frozen AND project_id = ANY($1::text[])", projects)
    return frozenset(r["project_id"] for r in rows)


def _opened(account: Account | None) -> Account | None:
    return account if account is not None and account.opened else None


def _uuid(cause: str) -> str:
    try:
        return str(uuid.UUID(cause))
    except ValueError:
        return str(uuid.uuid4())


def rejection(command: Message, error: DomainError) -> CommandRejected:
    """The refusal as recorded: the stable code and its transaction-log number
    (services/registry/domain/codes.py; 0 for a code not in the table), and the party
    whose regulator sees it (scenario 2: a recycled unit offered for sale)."""
    return CommandRejected(
        command_id=command_id(command),
        command_type=command.DESCRIPTOR.full_name,
        code=error.code,
        numeric_code=numeric(error.code),
        reason=error.reason,
        evidence=error.evidence,
        jurisdiction=party_of(command),
    )


def party_of(command: Message) -> str:
    """The party of the account the command names ("TH-…"), or the party it names."""
    for name in ("account_id", "to_account_id"):
        value = getattr(command, name, "")
        if isinstance(value, str) and value[2:3] == "-" and is_party(value[:2]):
            return value[:2]
    for name in ("jurisdiction", "host_party"):
        value = getattr(command, name, "")
        if isinstance(value, str) and is_party(value):
            return value
    return ""


def _heard(key: str, notice_key: str, *parties: str) -> Destinations:
    """registry.events keyed by `key`, and each party's outbound channel (once each)."""
    outbound = [p for p in dict.fromkeys(parties) if p in topics.JURISDICTIONS]
    return [(topics.REGISTRY_EVENTS, key)] + [(topics.registry_outbound(p), notice_key) for p in outbound]


def answered(found: Destinations, channel: str, event: Message) -> Destinations:
    """A national registry hears the outcome of each of its messages on its own outbound
    channel: the events it caused, or its refusal (the envelope's causation id names the
    message answered)."""
    if channel not in topics.JURISDICTIONS:
        return found
    topic = topics.registry_outbound(channel)
    if any(t == topic for t, _ in found):
        return found
    return [*found, (topic, found[0][1] if found else str(getattr(event, "account_id", "")))]


def destinations(event: Message) -> Destinations:
    """registry.events, and the outbound channel of every party whose registry keeps books
    the event changes (its accounts' holdings: a registry reconciles against them), or
    that takes part in it (the other side of an external transfer)."""
    match event:
        case pb.UnitsIssued():
            # Account ids begin with their party ("TH-…": OpenAccount refuses others).
            return _heard(event.account_id, event.issuance_id, event.account_id[:2])
        case pb.UnitsRetired():
            return _heard(event.account_id, event.retirement_id, event.jurisdiction)
        case pb.UnitsExpired():
            return _heard(event.account_id, event.expiry_id, event.jurisdiction)
        case pb.ScreenProposal():
            return [(topics.COMPLIANCE_REQUESTS, event.account_id)]
        case pb.ProposalRejected():
            return _heard(event.account_id, event.proposal_id, event.jurisdiction)
        case pb.BlocksFrozen() | pb.BlocksUnfrozen():
            return _heard(event.account_id, event.freeze_id, event.jurisdiction)
        case pb.UnitsTransferred():
            return _heard(event.from_account_id, event.transfer_id, event.from_jurisdiction, event.to_jurisdiction)
        case pb.UnitsAllocated():
            return _heard(event.from_account_id, event.issuance_id, *(a.jurisdiction for a in event.allocations))
        case pb.InboundTransferAccepted():
            return _heard(event.to_account_id, event.transfer_id, event.from_registry, event.jurisdiction)
        case pb.ExternalTransferProposed() | pb.ExternalTransferCompleted() | pb.ExternalTransferReturned():
            return _heard(event.account_id, event.transfer_id, event.to_registry, event.jurisdiction)
        case pb.HoldingsDigestIssued():
            return [(topics.registry_outbound(event.jurisdiction), event.digest_id)]  # the rows are the registry's
        case pb.HoldingsReconciled() | pb.ReconciliationMismatch():
            # The party's regulator reads it on its audit stream (compliance audits registry.events).
            return _heard(event.jurisdiction, event.digest_id, event.jurisdiction)
        case pb.AuthorizationRecorded() | pb.AuthorizationChanged():
            return [(topics.REGISTRY_EVENTS, event.authorization.host_party)]
        case pb.AuthorizationRevoked():
            return [(topics.REGISTRY_EVENTS, event.host_party)]
        case CommandRejected():
            return [(topics.REGISTRY_EVENTS, event.command_id)]
        case _:
            return [(topics.REGISTRY_EVENTS, str(getattr(event, "account_id", "")))]
