"""The registry's service layer: load the facts a decision needs, decide, record.

Streams: `account-<id>` (AccountOpened, every event that changes the account's
holdings (a transfer goes to the source account's stream) and its mandates),
`authorization-<id>`, and one-event streams `rejected-<command event id>` for refusals.
A command from a national registry's channel `registry.inbound.<JUR>` is bound to JUR
(ledger.bind) before it is decided. The block index is
PostgreSQL (sql_index.py), folded by the projector in the recording transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from functools import partial

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
from services.registry.domain.accounts import Account, AccountRef, Authorization
from services.registry.domain.blocks import Block, IndexConflict
from services.registry.domain.ledger import EVIDENCE_LIMIT, INT64_MAX, Ledger, bind, check, command_id
from services.registry.projector import PROJECTIONS, project
from services.registry.sql_index import SqlIndex
from tonne.v1 import registry_pb2 as pb
from tonne.v1.envelope_pb2 import CommandRejected, Envelope

# Blocks read per query while covering a reservation.
PAGE = 100
# What a decision's facts moving under it looks like: decide again (the consumer retries
# a ConcurrencyError after reloading; so does the HTTP API).
_MOVED = (IndexConflict, asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError)
# Commands that name an account: bound to a channel once the account is loaded.
_NAMES_ACCOUNT = (pb.OpenAccount, pb.RecordIssuance, pb.GrantMandate, pb.RevokeMandate)


class Registry:
    def __init__(self, kernel: Kernel) -> None:
        settings = kernel.settings
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
        self.ledger = Ledger()
        self.unit_of_work = UnitOfWorkFactory(kernel.pool, project)
        self.state = ServiceState([self.accounts, self.authorizations], project, PROJECTIONS)

    @property
    def handlers(self) -> Mapping[str, Handler]:
        # A national registry's channel is bound to its jurisdiction: the handler knows which.
        inbound = {topics.registry_inbound(j): partial(self.on_national, j) for j in topics.JURISDICTIONS}
        return {topics.REGISTRY_COMMANDS: self.on_command, **inbound}

    async def on_command(self, uow: UnitOfWork, envelope: Envelope, command: Message) -> None:
        """registry.commands: the venue's own services."""
        await self.execute(uow, command, Context.following(envelope, "registry"), envelope.event_id)

    async def on_national(self, jurisdiction: str, uow: UnitOfWork, envelope: Envelope, command: Message) -> None:
        """registry.inbound.<jurisdiction>: that jurisdiction's national registry."""
        context = Context.following(envelope, f"national-registry:{jurisdiction}")
        await self.execute(uow, command, context, envelope.event_id, channel=jurisdiction)

    async def execute(
        self, uow: UnitOfWork, command: Message, context: Context, cause: str = "", channel: str = ""
    ) -> list[Message]:
        """Decide and record; a refused command is recorded as CommandRejected on a
        stream of its own (`cause`: the command's event id, if it came as one).
        `channel`: the jurisdiction of the national registry's channel it came from."""
        try:
            try:
                aggregate, events = await self._decide(uow, command, channel)
            except DomainError as error:
                rejected = rejection(command, error)
                await uow.append(f"rejected-{_uuid(cause)}", 0, [(rejected, destinations(rejected))], context)
                return [rejected]
            await uow.record(aggregate, [(e, destinations(e)) for e in events], context)
            return events
        except _MOVED as exc:
            raise ConcurrencyError(f"the registry's index moved under the decision: {exc!r}") from exc

    async def _decide(self, uow: UnitOfWork, command: Message, channel: str) -> tuple[Aggregate, list[Message]]:
        check(command)  # before any id reaches a query
        index = SqlIndex(uow.conn)
        if channel and not isinstance(command, _NAMES_ACCOUNT):
            bind(channel, command, None)  # before anything is looked up or locked
        match command:
            case pb.OpenAccount():
                account = await self._account(uow, command.account_id, channel, command)
                return account, self.ledger.open_account(command, _opened(account))
            case pb.RecordAuthorization():
                loa = await uow.load(self.authorizations, command.authorization_id)
                if loa.authorization is None:
                    self.authorizations.evict(loa.stream_id)
                return loa, self.ledger.record_authorization(command, loa.authorization)
            case pb.RecordIssuance():
                return await self._issue(uow, index, command, channel)
            case pb.ReserveUnits():
                return await self._reserve(uow, index, command)
            case pb.ReleaseReservation():
                owner, _, reserved = await self._reservation(uow, index, command.reservation_id)
                events = self.ledger.release(command, _opened(owner), reserved)
                assert owner is not None  # the ledger refuses an unknown reservation
                return owner, events
            case pb.TransferUnits():
                owner, target, reserved = await self._reservation(
                    uow, index, command.reservation_id, command.to_account_id
                )
                events = self.ledger.transfer(command, _opened(owner), target, reserved)
                assert owner is not None  # the ledger refuses an unknown reservation
                return owner, events
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

    async def _issue(
        self, uow: UnitOfWork, index: SqlIndex, command: pb.RecordIssuance, channel: str
    ) -> tuple[Aggregate, list[Message]]:
        block = command.block
        account = await self._account(uow, command.account_id, channel, command)
        # A valid range is looked up under its namespace's lock, held to commit: a
        # concurrent issuance into the namespace waits, then sees this one.
        valid = bool(block.namespace) and 1 <= block.start <= block.end <= INT64_MAX
        used, authorization, overlapping = await index.issuance_facts(
            command.issuance_id,
            block.attributes.authorization_id,
            block.namespace if valid else "",
            block.start if valid else 0,
            block.end if valid else 0,
            EVIDENCE_LIMIT,
        )
        events = self.ledger.issue(
            command,
            _opened(account),
            issuance_used=used,
            overlapping=overlapping,
            authorization=authorization,
        )
        return account, events

    async def _reserve(
        self, uow: UnitOfWork, index: SqlIndex, command: pb.ReserveUnits
    ) -> tuple[Aggregate, list[Message]]:
        # The account first (locked, its version fixed), then the facts its stream guards.
        account = await self._account(uow, command.account_id)
        used, available, eligible = await index.reserve_facts(
            command.reservation_id, command.account_id, command.selector, command.quantity, PAGE
        )
        if available >= command.quantity and len(eligible) == PAGE:
            eligible = await self._cover(index, command, eligible)
        events = self.ledger.reserve(
            command, _opened(account), reservation_used=used, eligible=eligible, available=available
        )
        return account, events

    @staticmethod
    async def _cover(index: SqlIndex, command: pb.ReserveUnits, first: list[Block]) -> list[Block]:
        """Further keyset pages of eligible blocks until the quantity is covered."""
        found, page = list(first), first
        covered = sum(b.quantity for b in found)
        while covered < command.quantity and len(page) == PAGE:
            after = (page[-1].namespace, page[-1].start)
            page = await index.eligible(command.account_id, command.selector, after, PAGE)
            found += page
            covered += sum(b.quantity for b in page)
        return found

    async def _reservation(
        self, uow: UnitOfWork, index: SqlIndex, reservation_id: str, target_id: str = ""
    ) -> tuple[Account | None, AccountRef | None, list[Block]]:
        """The account holding the reservation (locked; None: no such reservation), the
        target account named (only read: its identity never changes once opened) and the
        reservation's blocks as of the holder's version. Read in one query with the
        stream's version; the blocks are read again if the account we hold is at another
        version (a writer of this process committed in between)."""
        owner_id, version, target, reserved = await index.reservation_facts(
            reservation_id, self.accounts.prefix, target_id
        )
        if not owner_id:
            return None, target, []
        owner = await self._account(uow, owner_id)
        if owner.version != version:
            reserved = await index.reserved(reservation_id)
        return owner, target, reserved

    async def _account(
        self, uow: UnitOfWork, account_id: str, channel: str = "", command: Message | None = None
    ) -> Account:
        """The account, locked for this unit of work (one not opened is not kept in the
        cache: another instance may open it, and no write of ours would notice). With a
        national registry's `channel`, `command` must be bound to its jurisdiction."""
        account = await uow.load(self.accounts, account_id)
        if not account.opened:
            self.accounts.evict(account.stream_id)
        if channel and command is not None:
            bind(channel, command, _opened(account))
        return account


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
