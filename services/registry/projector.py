"""The registry's projector: folds each recorded event into its tables, in the recording
transaction (and in replay, into a fresh schema). SQL only, parameterised."""

from __future__ import annotations

from datetime import UTC

import asyncpg
from google.protobuf.message import Message

from services.common.eventstore import Call
from services.common.statehash import Projection
from services.registry import sql_index
from services.registry.domain import adjustments, reconciliation, transactions
from services.registry.domain.blocks import Move, Put
from services.registry.domain.ledger import changes
from tonne.v1 import registry_pb2 as pb
from tonne.v1 import settlement_pb2 as spb
from tonne.v1.envelope_pb2 import Envelope

# Instants as integer microseconds: the hash has no canonical form for timestamps.
_MICROS = "(extract(epoch FROM {0}) * 1000000)::bigint"

DIGEST_COLUMNS = (
    "digest_id",
    "jurisdiction",
    "account_id",
    "status",
    "standard",
    "host_party",
    "vintage",
    "authorization_id",
    "quantity",
)
PROJECTIONS = (
    Projection(
        "accounts",
        ("account_id", "holder", "jurisdiction", "type", "frozen", "closed", "transfer_limit"),
        ("account_id",),
    ),
    Projection(
        "transfers", ("transfer_id", "reservation_id", "from_account_id", "to_account_id", "quantity"), ("transfer_id",)
    ),
    Projection(
        "external_transfers",
        (
            "transfer_id",
            "account_id",
            "to_registry",
            "to_account",
            "quantity",
            _MICROS.format("expires_at"),
            "state",
            "code",
            "reason",
        ),
        ("transfer_id",),
    ),
    Projection(
        "inbound_transfers",
        ("from_registry", "transfer_id", "from_account", "to_account_id", "quantity"),
        ("from_registry", "transfer_id"),
    ),
    Projection(
        "issuance_fingerprints",
        ("issuance_id", "fingerprint_key", "standard", "period_start::text", "period_end::text"),
        ("issuance_id",),
    ),
    Projection("manifest_issuances", ("manifest_id", "issuance_id"), ("manifest_id",)),
    Projection(
        "adjusted_serials", ("namespace", "serial_start", "serial_end", "adjustment_id"), ("namespace", "serial_start")
    ),
    Projection(
        "transactions",
        # Not the position: a replay numbers the rows afresh; their order is the events'.
        ("transaction_id", "transaction_type", "account_id", "direction", "quantity", "counterparty", "blocks"),
        ("account_id", "transaction_id", "transaction_type", "direction", "counterparty", "quantity", "blocks"),
    ),
    Projection("digest_rows", DIGEST_COLUMNS, DIGEST_COLUMNS[:-1]),
    Projection("projects", ("project_id", "host_party", "frozen", "reason"), ("project_id",)),
    Projection(
        "proposals",
        (
            "proposal_id",
            "account_id",
            "transaction_type",
            "quantity",
            "state",
            _MICROS.format("expires_at"),
            "code",
            "reason",
        ),
        ("proposal_id",),
    ),
    Projection(
        "retirements",
        (
            "retirement_id",
            "account_id",
            "quantity",
            "cancelled",
            "beneficiary",
            "purpose",
            "use",
            "claim_year",
            "requested_by",
            "cancellation",
        ),
        ("retirement_id",),
    ),
    Projection(
        "trusted_accounts",
        ("account_id", "trusted_account_id", "proposed_by", "approved_by", _MICROS.format("effective_at")),
        ("account_id", "trusted_account_id"),
    ),
    Projection(
        "scheduled_transfers",
        ("transfer_id", "account_id", "to_account_id", "quantity", _MICROS.format("execute_at"), "requested_by"),
        ("transfer_id",),
    ),
    Projection(
        "authorizations",
        (
            "authorization_id",
            "host_party",
            "quantity",
            "use",
            "first_transfer",
            "vintage_from",
            "vintage_to",
            "version",
            "revoked",
            "cooperative_approach",
            "authorized_entities::text",
        ),
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


def index_call(event: Message) -> Call | None:
    """The index function that applies an event's serials (migrations/0002, 0006), if it
    has any, or closes an account."""
    match event:
        case pb.UnitsIssued():
            [put] = changes(event)
            assert isinstance(put, Put)
            return sql_index.issued(event.issuance_id, put)
        case pb.UnitsReserved():
            return sql_index.moved("reserved", event.reservation_id, event.account_id, event.quantity, _moves(event))
        case pb.ReservationReleased():
            return sql_index.moved("released", event.reservation_id, event.account_id, event.quantity, _moves(event))
        case pb.UnitsTransferred():
            source, quantity = event.from_account_id, event.quantity
            return sql_index.moved(
                "transferred", event.reservation_id, source, quantity, _moves(event), event.transfer_id
            )
        case pb.AccountClosed():
            return sql_index.closed(event.account_id)
        case pb.BlocksFrozen() | pb.BlocksUnfrozen():
            return sql_index.moved("unreserved", "", event.account_id, 0, _moves(event))
        case pb.ExternalTransferCompleted():
            return sql_index.moved("transferred", event.transfer_id, event.account_id, event.quantity, _moves(event))
        case pb.ExternalTransferReturned():
            return sql_index.moved("released", event.transfer_id, event.account_id, event.quantity, _moves(event))
        case pb.UnitsRetired() | pb.UnitsExpired():
            # The reservation that picked the serials is spent whole ("transferred").
            own_id = event.retirement_id if isinstance(event, pb.UnitsRetired) else event.expiry_id
            return sql_index.moved("transferred", own_id, event.account_id, event.quantity, _moves(event))
    return None


def inline(envelope: Envelope, event: Message) -> list[Call] | None:
    """The event's whole projection when that is its index call (and its transaction-log
    entries) alone: the unit of work makes them inside the append's statement (a reserve
    or a venue's delivery is one round trip)."""
    if isinstance(
        event,
        pb.UnitsIssued | pb.UnitsRetired | pb.UnitsExpired | pb.ExternalTransferCompleted | pb.ExternalTransferReturned,
    ):
        return None
    if _holders_transfer(event):
        return None
    if (call := index_call(event)) is None:
        return None
    return [call, *logged(envelope, event)]


def logged(envelope: Envelope, event: Message) -> list[Call]:
    """The call that records the event's entries in the transaction history, if it has any."""
    found = transactions.entries(event)
    if not found:
        return []
    columns = ("transaction_id", "transaction_type", "account_id", "direction", "quantity", "counterparty", "blocks")
    args = tuple([getattr(e, c) for e in found] for c in columns)
    return [Call("registry_transactions_logged", (*args, envelope.occurred_at.ToDatetime(tzinfo=UTC)))]


async def project(conn: asyncpg.Connection, envelope: Envelope, event: Message) -> None:
    """The index's changes in one call to a server-side function (migrations/0002), the
    transaction history's entries, and the rows beside them."""
    calls = logged(envelope, event)
    if (call := index_call(event)) is not None:
        calls.insert(0, call)
    for call in calls:
        await sql_index.run(conn, call)
    match event:
        case pb.UnitsIssued():
            await conn.execute("UPDATE proposals SET state = 'completed' WHERE proposal_id = $1", event.issuance_id)
            if event.fingerprint_key:
                await sql_index.run(conn, sql_index.fingerprinted(event))
            if event.manifest_id:
                await sql_index.run(conn, sql_index.manifest_issued(event))
        case pb.UnitsAllocated():
            for call in sql_index.unreserved(_moves(event)):
                await sql_index.run(conn, call)
        case pb.InboundTransferAccepted():
            for change in changes(event):
                if isinstance(change, Put):
                    await sql_index.run(conn, sql_index.put(change))
            for call in sql_index.unreserved(_moves(event)):
                await sql_index.run(conn, call)
            await conn.execute(
                "INSERT INTO inbound_transfers (from_registry, transfer_id, from_account, to_account_id, quantity) "
                "VALUES ($1, $2, $3, $4, $5)",
                event.from_registry,
                event.transfer_id,
                event.from_account,
                event.to_account_id,
                event.quantity,
            )
        case pb.ExternalTransferProposed():
            await conn.execute("UPDATE proposals SET state = 'completed' WHERE proposal_id = $1", event.transfer_id)
            await conn.execute(
                "INSERT INTO external_transfers (transfer_id, account_id, to_registry, to_account, quantity, "
                "expires_at, state) VALUES ($1, $2, $3, $4, $5, $6, 'proposed')",
                event.transfer_id,
                event.account_id,
                event.to_registry,
                event.to_account,
                event.quantity,
                event.expires_at.ToDatetime(tzinfo=UTC),
            )
        case pb.ExternalTransferCompleted():
            await conn.execute(
                "UPDATE external_transfers SET state = 'completed' WHERE transfer_id = $1", event.transfer_id
            )
        case pb.ExternalTransferReturned():
            await conn.execute(
                "UPDATE external_transfers SET state = 'returned', code = $2, reason = $3 WHERE transfer_id = $1",
                event.transfer_id,
                event.code,
                event.reason,
            )
        case spb.CorrespondingAdjustmentApplied():
            await conn.executemany(
                "INSERT INTO adjusted_serials (namespace, serial_start, serial_end, adjustment_id) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                [(b.namespace, b.start, b.end, event.adjustment_id) for b in adjustments.adjusted(event)],
            )
        case pb.HoldingsDigestIssued():
            if event.part <= 1:  # a new digest of the party: the last one's rows are done with
                await conn.execute(
                    "DELETE FROM digest_rows WHERE jurisdiction = $1 AND digest_id <> $2",
                    event.jurisdiction,
                    event.digest_id,
                )
            await conn.copy_records_to_table(
                "digest_rows",
                columns=DIGEST_COLUMNS,
                records=[(event.digest_id, event.jurisdiction, *reconciliation.key(r), r.quantity) for r in event.rows],
            )
        case pb.AccountOpened():
            await conn.execute(
                "INSERT INTO accounts (account_id, holder, jurisdiction, type) VALUES ($1, $2, $3, $4)",
                event.account_id,
                event.holder,
                event.jurisdiction,
                event.type,
            )
        case pb.AuthorizationRevoked():
            await conn.execute(
                "UPDATE authorizations SET revoked = true WHERE authorization_id = $1", event.authorization_id
            )
        case pb.AuthorizationRecorded() | pb.AuthorizationChanged():
            a = event.authorization
            await conn.execute(
                "INSERT INTO authorizations (authorization_id, host_party, quantity, use, first_transfer, "
                "vintage_from, vintage_to, cooperative_approach, authorized_entities, version) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (authorization_id) DO UPDATE SET "
                "quantity = $3, vintage_from = $6, vintage_to = $7, authorized_entities = $9, version = $10",
                a.authorization_id,
                a.host_party,
                a.quantity,
                a.use,
                a.first_transfer,
                a.vintage_from,
                a.vintage_to,
                a.cooperative_approach,
                list(a.authorized_entities),
                event.version if isinstance(event, pb.AuthorizationChanged) else 1,
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
        case pb.UnitsTransferred() if _holders_transfer(event):
            await conn.execute("DELETE FROM scheduled_transfers WHERE transfer_id = $1", event.transfer_id)
            await conn.execute("UPDATE proposals SET state = 'completed' WHERE proposal_id = $1", event.transfer_id)
        case pb.ScreenProposal():
            await conn.execute(
                "INSERT INTO proposals (proposal_id, account_id, transaction_type, quantity, state, expires_at) "
                "VALUES ($1, $2, $3, $4, 'screening', $5)",
                event.proposal_id,
                event.account_id,
                event.transaction_type,
                event.quantity,
                event.expires_at.ToDatetime(tzinfo=UTC),
            )
        case pb.ProposalRejected():
            await conn.execute(
                "UPDATE proposals SET state = 'rejected', code = $2, reason = $3 WHERE proposal_id = $1",
                event.proposal_id,
                event.code,
                event.reason,
            )
        case pb.UnitsExpired():
            await conn.execute("UPDATE proposals SET state = 'completed' WHERE proposal_id = $1", event.expiry_id)
        case pb.UnitsRetired():
            await conn.execute("UPDATE proposals SET state = 'completed' WHERE proposal_id = $1", event.retirement_id)
            await conn.execute(
                "INSERT INTO retirements (retirement_id, account_id, quantity, cancelled, beneficiary, purpose, "
                "use, claim_year, requested_by, cancellation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                event.retirement_id,
                event.account_id,
                event.quantity,
                event.cancelled,
                event.beneficiary,
                event.purpose,
                event.use,
                event.claim_year,
                event.by,
                event.cancellation,
            )
        case _:
            await _project_control(conn, event)


def _holders_transfer(event: Message) -> bool:
    """A transfer its holder asked for (domain/controls.py), scheduled or not."""
    return isinstance(event, pb.UnitsTransferred) and event.transfer_id == event.reservation_id


async def _project_control(conn: asyncpg.Connection, event: Message) -> None:
    """The Union Registry's controls (domain/controls.py)."""
    match event:
        case pb.AccountFrozen() | pb.AccountUnfrozen():
            frozen = isinstance(event, pb.AccountFrozen)
            await conn.execute("UPDATE accounts SET frozen = $2 WHERE account_id = $1", event.account_id, frozen)
        case pb.TransferLimitSet():
            await conn.execute(
                "UPDATE accounts SET transfer_limit = $2 WHERE account_id = $1", event.account_id, event.per_transfer
            )
        case pb.ProjectFrozen() | pb.ProjectUnfrozen():
            await conn.execute(
                "INSERT INTO projects (project_id, host_party, frozen, reason) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (project_id) DO UPDATE SET frozen = excluded.frozen, reason = excluded.reason",
                event.project_id,
                event.host_party,
                isinstance(event, pb.ProjectFrozen),
                event.reason,
            )
        case pb.TrustedAccountProposed():
            await conn.execute(
                "INSERT INTO trusted_accounts (account_id, trusted_account_id, proposed_by) VALUES ($1, $2, $3)",
                event.account_id,
                event.trusted_account_id,
                event.by,
            )
        case pb.TrustedAccountApproved():
            await conn.execute(
                "UPDATE trusted_accounts SET approved_by = $3, effective_at = $4 "
                "WHERE account_id = $1 AND trusted_account_id = $2",
                event.account_id,
                event.trusted_account_id,
                event.by,
                event.effective_at.ToDatetime(tzinfo=UTC),
            )
        case pb.TrustedAccountRemoved():
            await conn.execute(
                "DELETE FROM trusted_accounts WHERE account_id = $1 AND trusted_account_id = $2",
                event.account_id,
                event.trusted_account_id,
            )
        case pb.TransferScheduled():
            await conn.execute("UPDATE proposals SET state = 'completed' WHERE proposal_id = $1", event.transfer_id)
            await conn.execute(
                "INSERT INTO scheduled_transfers (transfer_id, account_id, to_account_id, quantity, execute_at, "
                "requested_by) VALUES ($1, $2, $3, $4, $5, $6)",
                event.transfer_id,
                event.account_id,
                event.to_account_id,
                event.quantity,
                event.execute_at.ToDatetime(tzinfo=UTC),
                event.by,
            )
        case pb.TransferCancelled():
            await conn.execute("DELETE FROM scheduled_transfers WHERE transfer_id = $1", event.transfer_id)


def _moves(event: Message) -> list[Move]:
    return [c for c in changes(event) if isinstance(c, Move)]
