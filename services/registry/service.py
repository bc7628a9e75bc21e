"""The registry's service layer: load the facts a decision needs, decide, record.

Streams: `account-<id>` (AccountOpened and every event that changes the account's
holdings; a transfer goes to the source account's stream), `authorization-<id>`, and
one-event streams `rejected-<command event id>` for refusals. The block index is
PostgreSQL (sql_index.py), folded by the projector in the recording transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import asyncpg
from google.protobuf.message import Message

from services.common import topics
from services.common.aggregate import Aggregate
from services.common.consumer import Handler
from services.common.envelope import Context
from services.common.errors import DomainError
from services.common.eventstore import ConcurrencyError
from services.common.repository import Repository
from services.common.runtime import Kernel
from services.common.statehash import ServiceState
from services.common.unit_of_work import Destinations, UnitOfWork, UnitOfWorkFactory
from services.registry.domain.accounts import Account, Authorization
from services.registry.domain.blocks import Block, IndexConflict
from services.registry.domain.ledger import EVIDENCE_LIMIT, INT64_MAX, Ledger, check, command_id
from services.registry.projector import PROJECTIONS, project
from services.registry.sql_index import SqlIndex
from tonne.v1 import registry_pb2 as pb
from tonne.v1.envelope_pb2 import CommandRejected, Envelope

# Blocks read per query while covering a reservation.
PAGE = 100
# What a decision's facts moving under it looks like: decide again (the consumer retries
# a ConcurrencyError after reloading; so does the HTTP API).
_MOVED = (IndexConflict, asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError)


class Registry:
    def __init__(self, kernel: Kernel) -> None:
        settings = kernel.settings
        self.pool = kernel.pool
        self.accounts = Repository(
            Account, "account-", snapshot_every=settings.snapshot_every, cache_size=settings.aggregate_cache
        )
        self.authorizations = Repository(
            Authorization,
            "authorization-",
            snapshot_every=settings.snapshot_every,
            cache_size=settings.aggregate_cache,
        )
        self.ledger = Ledger()
        self.unit_of_work = UnitOfWorkFactory(kernel.pool, project)
        self.state = ServiceState([self.accounts, self.authorizations], project, PROJECTIONS)

    @property
    def handlers(self) -> Mapping[str, Handler]:
        inbound = {topics.registry_inbound(j): self.on_command for j in topics.JURISDICTIONS}
        return {topics.REGISTRY_COMMANDS: self.on_command, **inbound}

    async def on_command(self, uow: UnitOfWork, envelope: Envelope, command: Message) -> None:
        await self.execute(uow, command, Context.following(envelope, "registry"), envelope.event_id)

    async def execute(self, uow: UnitOfWork, command: Message, context: Context, cause: str = "") -> list[Message]:
        """Decide and record; a refused command is recorded as CommandRejected on a
        stream of its own (`cause`: the command's event id, if it came as one)."""
        try:
            try:
                aggregate, events = await self._decide(uow, command)
            except DomainError as error:
                rejected = rejection(command, error)
                await uow.append(f"rejected-{_uuid(cause)}", 0, [(rejected, destinations(rejected))], context)
                return [rejected]
            await uow.record(aggregate, [(e, destinations(e)) for e in events], context)
            return events
        except _MOVED as exc:
            raise ConcurrencyError(f"the registry's index moved under the decision: {exc!r}") from exc

    async def _decide(self, uow: UnitOfWork, command: Message) -> tuple[Aggregate, list[Message]]:
        check(command)  # before any id reaches a query
        index = SqlIndex(uow.conn)
        match command:
            case pb.OpenAccount():
                account = await self._account(uow, command.account_id)
                return account, self.ledger.open_account(command, _opened(account))
            case pb.RecordAuthorization():
                loa = await uow.load(self.authorizations, command.authorization_id)
                if loa.authorization is None:
                    self.authorizations.evict(loa.stream_id)
                return loa, self.ledger.record_authorization(command, loa.authorization)
            case pb.RecordIssuance():
                return await self._issue(uow, index, command)
            case pb.ReserveUnits():
                return await self._reserve(uow, index, command)
            case pb.ReleaseReservation():
                owner = await self._owner(uow, command.reservation_id)
                reserved = await index.reserved(command.reservation_id) if owner else []
                events = self.ledger.release(command, _opened(owner), reserved)
                assert owner is not None  # the ledger refuses an unknown reservation
                return owner, events
            case pb.TransferUnits():
                owner = await self._owner(uow, command.reservation_id)
                target = await self._peek(uow, command.to_account_id)
                reserved = await index.reserved(command.reservation_id) if owner else []
                events = self.ledger.transfer(command, _opened(owner), target, reserved)
                assert owner is not None  # the ledger refuses an unknown reservation
                return owner, events
        raise DomainError("COMMAND_UNSUPPORTED", f"registry does not take {type(command).__name__}")

    async def _issue(
        self, uow: UnitOfWork, index: SqlIndex, command: pb.RecordIssuance
    ) -> tuple[Aggregate, list[Message]]:
        block = command.block
        account = await self._account(uow, command.account_id)
        used = await uow.conn.fetchval("SELECT true FROM issuances WHERE issuance_id = $1", command.issuance_id)
        overlapping: list[Block] = []
        if block.namespace and 1 <= block.start <= block.end <= INT64_MAX:
            # Held to commit: a concurrent issuance into the namespace waits, then sees this one.
            await index.lock([block.namespace])
            overlapping = await index.overlapping(block.namespace, block.start, block.end, EVIDENCE_LIMIT)
        authorization = None
        if block.attributes.authorization_id:
            loa = await self.authorizations.get(
                uow.conn, self.authorizations.stream_id(block.attributes.authorization_id)
            )
            if loa.authorization is None:
                self.authorizations.evict(loa.stream_id)
            authorization = loa.authorization
        events = self.ledger.issue(
            command,
            _opened(account),
            issuance_used=bool(used),
            overlapping=overlapping,
            authorization=authorization,
        )
        return account, events

    async def _reserve(
        self, uow: UnitOfWork, index: SqlIndex, command: pb.ReserveUnits
    ) -> tuple[Aggregate, list[Message]]:
        account = await self._account(uow, command.account_id)
        used = await uow.conn.fetchval(
            "SELECT true FROM reservations WHERE reservation_id = $1", command.reservation_id
        )
        eligible: list[Block] = []
        available = 0
        if account.opened and 0 < command.quantity <= INT64_MAX:
            available = await index.available(account.account_id, command.selector)
            if available >= command.quantity:
                eligible = await self._cover(index, account.account_id, command)
            else:  # refused: the first few name the evidence
                eligible = await index.eligible(account.account_id, command.selector, None, EVIDENCE_LIMIT)
        events = self.ledger.reserve(
            command, _opened(account), reservation_used=bool(used), eligible=eligible, available=available
        )
        return account, events

    @staticmethod
    async def _cover(index: SqlIndex, account_id: str, command: pb.ReserveUnits) -> list[Block]:
        """Keyset pages of eligible blocks until the quantity is covered."""
        found: list[Block] = []
        covered = 0
        after: tuple[str, int] | None = None
        while covered < command.quantity:
            page = await index.eligible(account_id, command.selector, after, PAGE)
            found += page
            covered += sum(b.quantity for b in page)
            if len(page) < PAGE:
                break
            after = (page[-1].namespace, page[-1].start)
        return found

    async def _account(self, uow: UnitOfWork, account_id: str) -> Account:
        """The account, locked for this unit of work. One not opened is not kept in the
        cache: another instance may open it, and no write of ours would notice."""
        account = await uow.load(self.accounts, account_id)
        if not account.opened:
            self.accounts.evict(account.stream_id)
        return account

    async def _peek(self, uow: UnitOfWork, account_id: str) -> Account | None:
        """An account only read (a transfer's target): its identity never changes once
        opened, so no lock and no version check are needed."""
        if not account_id:
            return None
        account = await self.accounts.get(uow.conn, self.accounts.stream_id(account_id))
        if not account.opened:
            self.accounts.evict(account.stream_id)
            return None
        return account

    async def _owner(self, uow: UnitOfWork, reservation_id: str) -> Account | None:
        """The account holding the reservation, locked (None: no such reservation)."""
        account_id = await uow.conn.fetchval(
            "SELECT account_id FROM reservations WHERE reservation_id = $1", reservation_id
        )
        return await self._account(uow, account_id) if account_id else None


def _opened(account: Account | None) -> Account | None:
    return account if account is not None and account.opened else None


def _uuid(cause: str) -> str:
    try:
        return str(uuid.UUID(cause))
    except ValueError:
        return str(uuid.uuid4())


def rejection(command: Message, error: DomainError) -> CommandRejected:
    return CommandRejected(
        command_id=command_id(command),
        command_type=command.DESCRIPTOR.full_name,
        code=error.code,
        reason=error.reason,
        evidence=error.evidence,
    )


def destinations(event: Message) -> Destinations:
    match event:
        case pb.UnitsTransferred():
            result = [(topics.REGISTRY_EVENTS, event.from_account_id)]
            # National registries hear of units leaving or entering their books.
            for party in dict.fromkeys((event.from_jurisdiction, event.to_jurisdiction)):
                if party in topics.JURISDICTIONS and event.from_jurisdiction != event.to_jurisdiction:
                    result.append((topics.registry_outbound(party), event.transfer_id))
            return result
        case pb.AuthorizationRecorded():
            return [(topics.REGISTRY_EVENTS, event.authorization.host_party)]
        case CommandRejected():
            return [(topics.REGISTRY_EVENTS, event.command_id)]
        case _:
            return [(topics.REGISTRY_EVENTS, str(getattr(event, "account_id", "")))]
