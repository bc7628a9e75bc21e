"""The registry's projector: folds each recorded event into its tables, in the recording
transaction (and in replay, into a fresh schema). SQL only, parameterised."""

from __future__ import annotations

import asyncpg
from google.protobuf.message import Message

from services.common.statehash import Projection
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
        case pb.UnitsIssued():
            await conn.execute(
                "INSERT INTO issuances (issuance_id, account_id, namespace, serial_start, serial_end) "
                "VALUES ($1, $2, $3, $4, $5)",
                event.issuance_id,
                event.account_id,
                event.block.namespace,
                event.block.start,
                event.block.end,
            )
        case pb.UnitsReserved():
            await conn.execute(
                "INSERT INTO reservations (reservation_id, account_id, quantity) VALUES ($1, $2, $3)",
                event.reservation_id,
                event.account_id,
                event.quantity,
            )
        case pb.ReservationReleased():
            await conn.execute(
                "UPDATE reservations SET released = released + $2 WHERE reservation_id = $1",
                event.reservation_id,
                event.quantity,
            )
        case pb.UnitsTransferred():
            await conn.execute(
                "UPDATE reservations SET transferred = transferred + $2 WHERE reservation_id = $1",
                event.reservation_id,
                event.quantity,
            )
    await SqlIndex(conn).apply(changes(event))
