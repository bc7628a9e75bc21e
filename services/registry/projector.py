"""The registry's projector: folds each recorded event into its tables, in the recording
transaction (and in replay, into a fresh schema). SQL only, parameterised."""

from __future__ import annotations

import asyncpg
from google.protobuf.message import Message

from services.common.statehash import Projection
from services.registry.domain.blocks import Move, Put
from services.registry.domain.ledger import changes
from services.registry.sql_index import SqlIndex
from tonne.v1 import registry_pb2 as pb
from tonne.v1.envelope_pb2 import Envelope

PROJECTIONS = (
    Projection("accounts", ("account_id", "holder", "jurisdiction", "type"), ("account_id",)),
    Projection(
        "authorizations",
        ("authorization_id", "host_party", "quantity", "use", "first_transfer", "vintage_from", "vintage_to"),
        ("authorization_id",),
    ),
    Projection("mandates", ("mandate_id", "account_id", "broker_id", "jurisdiction"), ("mandate_id",)),
    Projection("issuances", ("issuance_id", "account_id", "namespace", "serial_start", "serial_end"), ("issuance_id",)),
    Projection(
        "reservations", ("reservation_id", "account_id", "quantity", "released", "transferred"), ("reservation_id",)
    ),
    Projection(
        "blocks",
        ("namespace", "serial_start", "serial_end", "account_id", "status", "reservation_id", "attributes"),
        ("namespace", "serial_start"),
    ),
    Projection(
        "holdings",
        # numeric has no canonical form in the hash: its text has.
        ("account_id", "status", "standard", "host_party", "vintage", "authorization_id", "quantity::text"),
        ("account_id", "status", "standard", "host_party", "vintage", "authorization_id"),
    ),
)


async def project(conn: asyncpg.Connection, envelope: Envelope, event: Message) -> None:
    """One statement per event: the index's changes and the rows beside them go in one
    call to a server-side function (migrations/0002)."""
    index = SqlIndex(conn)
    match event:
        case pb.AccountOpened():
            await conn.execute(
                "INSERT INTO accounts (account_id, holder, jurisdiction, type) VALUES ($1, $2, $3, $4)",
                event.account_id,
                event.holder,
                event.jurisdiction,
                event.type,
            )
        case pb.AuthorizationRecorded():
            a = event.authorization
            await conn.execute(
                "INSERT INTO authorizations (authorization_id, host_party, quantity, use, first_transfer, "
                "vintage_from, vintage_to) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                a.authorization_id,
                a.host_party,
                a.quantity,
                a.use,
                a.first_transfer,
                a.vintage_from,
                a.vintage_to,
            )
        case pb.MandateGranted():
            await conn.execute(
                "INSERT INTO mandates (mandate_id, account_id, broker_id, jurisdiction) VALUES ($1, $2, $3, $4)",
                event.mandate_id,
                event.account_id,
                event.broker_id,
                event.jurisdiction,
            )
        case pb.MandateRevoked():
            await conn.execute("DELETE FROM mandates WHERE mandate_id = $1", event.mandate_id)
        case pb.UnitsIssued():
            [put] = changes(event)
            assert isinstance(put, Put)
            await index.issued(event.issuance_id, put)
        case pb.UnitsReserved():
            await index.moved("reserved", event.reservation_id, event.account_id, event.quantity, _moves(event))
        case pb.ReservationReleased():
            await index.moved("released", event.reservation_id, event.account_id, event.quantity, _moves(event))
        case pb.UnitsTransferred():
            await index.moved("transferred", event.reservation_id, event.from_account_id, event.quantity, _moves(event))


def _moves(event: Message) -> list[Move]:
    return [c for c in changes(event) if isinstance(c, Move)]
