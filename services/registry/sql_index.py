"""The block index in PostgreSQL: the enforced index of the registry (production adapter).

Same queries and changes as the memory index (domain/index.py), each over btree indexes,
so O(log n) in the number of stored blocks, and each one round trip:

- an event's changes are applied by one server-side function (migrations/0002):
  `registry_units_issued` (re-checks no overlap, writes the block merged with equal
  neighbours) and `registry_units_moved` (finds each piece's container, splits it,
  writes the moved piece merged with equal neighbours); both keep `holdings` (units per
  account, status and selector attributes) and the issuance's or reservation's row;
- a decision's facts come in one query: `issuance_facts` (under the namespace's lock),
  `reserve_facts`, `reservation_facts`.

Every writer of a namespace's blocks holds `pg_advisory_xact_lock(hashtext(namespace))`:
concurrent issuances and moves (from other partitions or instances) serialise, and reads
under the lock see every earlier writer's commit.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.common.eventstore import Call
from services.registry.domain.accounts import AccountRef
from services.registry.domain.blocks import Block, Holding, IndexConflict, Move, Put, Status, Units
from services.registry.domain.fingerprint import Period, Prior, period_of
from tonne.v1 import registry_pb2 as pb

COLUMNS = (
    "namespace, serial_start, serial_end, account_id, status, reservation_id, "
    "standard, host_party, vintage, authorization_id, attributes, attributes_key"
)
B_COLUMNS = ", ".join(f"b.{c}" for c in COLUMNS.split(", "))
# The selector as SQL over the block columns ($2 standard, $3 host party, $4 vintage, $5 authorized).
_SELECTS = (
    "($2::int = 0 OR standard = $2) AND ($3::text = '' OR host_party = $3) "
    "AND ($4::int = 0 OR vintage = $4) AND (NOT $5::bool OR authorization_id <> '')"
)
# Every frozen project, read with a decision's facts: freezes are few, and this spares
# the decision a round trip of its own.
_FROZEN = "(SELECT coalesce(array_agg(project_id), '{}') FROM projects WHERE frozen) AS frozen"
INT64_MAX = 2**63 - 1
# The index's conflict (migrations/0002): what the event moves is not where it says.
INDEX_CONFLICT = "TN001"


def block_of(row: asyncpg.Record) -> Block:
    return Block(
        row["namespace"],
        row["serial_start"],
        row["serial_end"],
        Holding(row["account_id"], Status(row["status"]), row["reservation_id"]),
        Units(
            key=bytes(row["attributes_key"]),
            data=bytes(row["attributes"]),
            standard=row["standard"],
            host_party=row["host_party"],
            vintage=row["vintage"],
            authorization_id=row["authorization_id"],
        ),
    )


def row_of(block: Block) -> tuple[object, ...]:
    """A `blocks` row, columns in COLUMNS order (also what bench/registry.py COPYs)."""
    u = block.units
    return (
        block.namespace,
        block.start,
        block.end,
        block.account_id,
        block.status.value,
        block.reservation_id,
        u.standard,
        u.host_party,
        u.vintage,
        u.authorization_id,
        u.data,
        u.key,
    )


def selector_args(selector: pb.UnitSelector) -> tuple[int, str, int, bool]:
    return (
        selector.standard,
        selector.host_party,
        selector.vintage,
        selector.authorized_for != pb.AUTHORIZED_USE_UNSPECIFIED,
    )


def _blocks(rows: Sequence[asyncpg.Record]) -> list[Block]:
    """The blocks of a facts query's rows (a row without a block only carries the facts)."""
    return [block_of(r) for r in rows if r["namespace"] is not None]


class SqlIndex:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # --- a decision's facts, one query each ---

    async def issuance_facts(
        self, issuance_id: str, authorization_id: str, namespace: str, start: int, end: int, limit: int
    ) -> tuple[bool, pb.RecordAuthorization | None, bool, list[Block]]:
        """(is the issuance id used, the authorization named (its terms in force), is it
        revoked, the blocks sharing a serial with [start, end]), the namespace locked until
        commit. Pass namespace "" for a range not to look up."""
        rows = await self.conn.fetch(
            "SELECT f.*, a.authorization_id AS loa_id, a.host_party AS loa_host_party, a.quantity AS loa_quantity, "
            "a.use AS loa_use, a.first_transfer AS loa_first_transfer, a.vintage_from AS loa_vintage_from, "
            "a.vintage_to AS loa_vintage_to, coalesce(a.revoked, false) AS loa_revoked "
            "FROM registry_issuance_facts($1, $2, $3, $4, $5) f "
            "LEFT JOIN authorizations a ON a.authorization_id = $6",
            issuance_id,
            namespace,
            start,
            end,
            limit,
            authorization_id,
        )
        first = rows[0]
        authorization = None
        if first["loa_id"] is not None:
            authorization = pb.RecordAuthorization(
                authorization_id=first["loa_id"],
                host_party=first["loa_host_party"],
                quantity=first["loa_quantity"],
                use=first["loa_use"],
                first_transfer=first["loa_first_transfer"],
                vintage_from=first["loa_vintage_from"],
                vintage_to=first["loa_vintage_to"],
            )
        return bool(first["used"]), authorization, bool(first["loa_revoked"]), _blocks(rows)

    async def reserve_facts(
        self,
        reservation_id: str,
        account_id: str,
        selector: pb.UnitSelector,
        quantity: int,
        limit: int,
        stream_id: str,
        transfer_id: str = "",
    ) -> tuple[bool, int, list[Block], frozenset[str], int]:
        """(is the reservation id used, or `transfer_id` a transfer's id; the account's held
        units the selector takes, the first of those blocks in (namespace, start) order: of the first `limit`, those
        needed to cover `quantity`, so `limit` of them only when they do not; the frozen
        projects; the version of the account's stream `stream_id` when they were read)."""
        rows = await self.conn.fetch(
            "SELECT f.used, f.available, f.frozen, f.version, p.* FROM (SELECT "
            "(EXISTS (SELECT 1 FROM reservations WHERE reservation_id = $6) "
            f"OR EXISTS (SELECT 1 FROM transfers WHERE transfer_id = $10)) AS used, {_FROZEN}, "
            "(SELECT max(version) FROM events WHERE stream_id = $9) AS version, "
            "(SELECT coalesce(sum(quantity), 0) FROM holdings WHERE account_id = $1 AND status = 'held' "
            f"AND {_SELECTS}) AS available) f "
            f"LEFT JOIN LATERAL (SELECT * FROM (SELECT {COLUMNS}, sum(serial_end - serial_start + 1) OVER "
            "(ORDER BY namespace, serial_start ROWS UNBOUNDED PRECEDING) - (serial_end - serial_start + 1) "
            "AS before FROM blocks WHERE account_id = $1 AND status = 'held' "
            f"AND {_SELECTS} ORDER BY namespace, serial_start LIMIT $7) page WHERE page.before < $8) p ON true "
            "ORDER BY p.namespace, p.serial_start",
            account_id,
            *selector_args(selector),
            reservation_id,
            limit,
            min(quantity, INT64_MAX),
            stream_id,
            transfer_id,
        )
        first = rows[0]
        facts = bool(first["used"]), int(first["available"]), _blocks(rows), frozenset(first["frozen"])
        return *facts, first["version"] or 0

    async def reservation_facts(
        self, reservation_id: str, stream_prefix: str, target_id: str = "", transfer_id: str = ""
    ) -> tuple[str, int, AccountRef | None, list[Block], frozenset[str], bool]:
        """(the account holding the reservation, "" if none; the version of that account's
        stream when the blocks were read; the target account, if opened; the reservation's
        blocks; the frozen projects; whether a transfer with `transfer_id` was made)."""
        rows = await self.conn.fetch(
            f"SELECT r.account_id AS owner, {_FROZEN}, "
            "(SELECT max(version) FROM events WHERE stream_id = $2 || r.account_id) AS version, "
            "(EXISTS (SELECT 1 FROM transfers WHERE transfer_id = $4) "
            "OR EXISTS (SELECT 1 FROM external_transfers WHERE transfer_id = $4)) AS transfer_used, "
            "t.account_id AS target_id, t.jurisdiction AS target_jurisdiction, t.closed AS target_closed, p.* "
            "FROM (SELECT $1::text AS reservation_id) q "
            "LEFT JOIN reservations r ON r.reservation_id = q.reservation_id "
            "LEFT JOIN accounts t ON t.account_id = $3 "
            # By the parameter, not through `r`: the planner must look the partial index up,
            # never scan it (its size is every open reservation's blocks).
            f"LEFT JOIN LATERAL (SELECT {B_COLUMNS} FROM blocks b WHERE b.reservation_id = $1 "
            "AND b.reservation_id <> '') p ON true ORDER BY p.namespace, p.serial_start",
            reservation_id,
            stream_prefix,
            target_id,
            transfer_id,
        )
        first = rows[0]
        target = (
            AccountRef(first["target_id"], first["target_jurisdiction"], first["target_closed"])
            if first["target_id"]
            else None
        )
        owner, version, blocks = first["owner"] or "", first["version"] or 0, _blocks(rows)
        return owner, version, target, blocks, frozenset(first["frozen"]), first["transfer_used"]

    # --- further pages ---

    async def eligible(
        self, account_id: str, selector: pb.UnitSelector, after: tuple[str, int] | None, limit: int
    ) -> list[Block]:
        """A page of the account's held blocks the selector takes, in (namespace, start) order."""
        namespace, start = after or ("", 0)
        rows = await self.conn.fetch(
            f"SELECT {COLUMNS} FROM blocks WHERE account_id = $1 AND status = 'held' AND "
            f"(account_id, status, namespace, serial_start) > ($1, 'held', $6, $7) AND {_SELECTS} "
            "ORDER BY namespace, serial_start LIMIT $8",
            account_id,
            *selector_args(selector),
            namespace,
            start,
            limit,
        )
        return [block_of(r) for r in rows]

    async def overlapping(self, blocks: Sequence[pb.SerialBlock], limit: int) -> list[Block]:
        """Blocks here that share a serial with any of `blocks` (valid ranges only), each
        namespace locked until commit: a concurrent writer of it waits, then sees ours."""
        found: list[Block] = []
        for b in sorted(blocks, key=lambda b: (b.namespace, b.start)):  # one lock order
            if b.namespace and 1 <= b.start <= b.end <= INT64_MAX and len(found) < limit:
                _, _, _, overlaps = await self.issuance_facts("", "", b.namespace, b.start, b.end, limit)
                found += overlaps
        return found[:limit]

    async def prior_issuances(self, key: bytes, period: Period, limit: int) -> list[Prior]:
        """Issuances recorded under fingerprint `key` whose period shares a day with `period`."""
        rows = await self.conn.fetch(
            "SELECT issuance_id, standard, period_start, period_end FROM issuance_fingerprints "
            "WHERE fingerprint_key = $1 AND period_start <= $3 AND period_end >= $2 ORDER BY issuance_id LIMIT $4",
            key,
            period.start,
            period.end,
            limit,
        )
        return [Prior(r["issuance_id"], r["standard"], Period(r["period_start"], r["period_end"])) for r in rows]

    async def reserved(self, reservation_id: str) -> list[Block]:
        # `<> ''` lets the planner use the partial index whatever the parameter.
        rows = await self.conn.fetch(
            f"SELECT {COLUMNS} FROM blocks WHERE reservation_id = $1 AND reservation_id <> '' "
            "ORDER BY namespace, serial_start",
            reservation_id,
        )
        return [block_of(r) for r in rows]


# --- changes: one call per event ---


def issued(issuance_id: str, put: Put) -> Call:
    """An issuance's row, its block and the holder's holdings."""
    return Call("registry_units_issued", (issuance_id, *_put_args(put)))


def put(change: Put) -> Call:
    """A block new to the index (an inbound transfer's) and the holder's holdings."""
    return Call("registry_units_put", _put_args(change))


def _put_args(change: Put) -> tuple[object, ...]:
    block, u = change.block, change.block.units
    return (
        block.account_id,
        block.namespace,
        block.start,
        block.end,
        u.standard,
        u.host_party,
        u.vintage,
        u.authorization_id,
        u.data,
        u.key,
    )


def moved(
    kind: str, reservation_id: str, account_id: str, quantity: int, moves: list[Move], transfer_id: str = ""
) -> Call:
    """A reservation's row changed as `kind` says (reserved: created; released or
    transferred: that total grows by `quantity`; unreserved: none), and its serials moved.
    `transfer_id`: a transfer between accounts, recorded once, to an open account."""
    source = moves[0].source if moves else Holding("")
    target = moves[0].target if moves else Holding("")
    if any((m.source, m.target) != (source, target) for m in moves):
        raise ValueError("one event moves serials from one holding to one other")
    return Call(
        "registry_units_moved",
        (
            kind,
            reservation_id,
            transfer_id,
            account_id,
            quantity,
            source.account_id,
            source.status.value,
            source.reservation_id,
            target.account_id,
            target.status.value,
            target.reservation_id,
            [m.namespace for m in moves],
            [m.start for m in moves],
            [m.end for m in moves],
        ),
    )


def unreserved(moves: list[Move]) -> list[Call]:
    """Moves that touch no reservation (an issuance's allocation, exported units coming
    back): one call per pair of holdings."""
    pairs: dict[tuple[Holding, Holding], list[Move]] = {}
    for move in moves:
        pairs.setdefault((move.source, move.target), []).append(move)
    return [
        moved("unreserved", "", source.account_id, sum(m.end - m.start + 1 for m in group), group)
        for (source, _), group in pairs.items()
    ]


def fingerprinted(issued: pb.UnitsIssued) -> Call:
    """The issuance's fingerprint row (re-checked under the fingerprint's lock)."""
    period = period_of(issued.period)
    standard = issued.block.attributes.standard
    return Call(
        "registry_fingerprint_recorded",
        (issued.issuance_id, issued.fingerprint_key, standard, period.start, period.end),
    )


def manifest_issued(issued: pb.UnitsIssued) -> Call:
    """The manifest issued by this issuance (re-checked: by no other)."""
    return Call("registry_manifest_issued", (issued.manifest_id, issued.issuance_id))


def closed(account_id: str) -> Call:
    """The account closed, if it still holds nothing."""
    return Call("registry_account_closed", (account_id,))


def conflicted(exc: BaseException) -> bool:
    """Whether the index refused a change: what it moves is not where the event says."""
    return isinstance(exc, IndexConflict) or getattr(exc, "sqlstate", None) == INDEX_CONFLICT


async def run(conn: asyncpg.Connection, call: Call) -> None:
    try:
        await conn.execute(f"SELECT {call.sql(1)}", *call.args)
    except asyncpg.PostgresError as exc:
        if conflicted(exc):
            raise IndexConflict(str(exc)) from exc
        raise
