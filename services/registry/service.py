"""The registry's service layer: commands in, ledger events out."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg
from google.protobuf.message import Message

from services.common import topics
from services.common.application import Application, Destinations
from services.common.consumer import Handler
from services.common.envelope import Context
from services.common.errors import DomainError
from services.registry.domain.ledger import Ledger
from tonne.v1 import registry_pb2 as pb
from tonne.v1.envelope_pb2 import CommandRejected, Envelope

STREAM = "ledger"


class Registry(Application):
    ledger: Ledger

    def reset(self) -> None:
        self.ledger = Ledger()

    def apply(self, event: Message) -> None:
        self.ledger.apply(event)

    @property
    def handlers(self) -> Mapping[str, Handler]:
        inbound = {topics.registry_inbound(j): self.on_command for j in topics.JURISDICTIONS}
        return {topics.REGISTRY_COMMANDS: self.on_command, **inbound}

    async def on_command(self, conn: asyncpg.Connection, envelope: Envelope, command: Message) -> None:
        await self.execute(conn, command, Context.following(envelope, "registry"))

    async def execute(self, conn: asyncpg.Connection, command: Message, context: Context) -> list[Message]:
        """Decide and record; a refused command is recorded as CommandRejected."""
        async with self.lock:
            try:
                events = self.ledger.decide(command)
            except DomainError as error:
                events = [rejection(command, error)]
            await self.record(conn, STREAM, [(e, destinations(e)) for e in events], context)
        return events


def rejection(command: Message, error: DomainError) -> CommandRejected:
    # Every command carries its own id as field 1.
    id_field = command.DESCRIPTOR.fields_by_number[1].name
    return CommandRejected(
        command_id=getattr(command, id_field),
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
