"""The block index in PostgreSQL: the enforced index of the registry (production adapter).

Same queries and changes as the memory index (domain/index.py), each a bounded number
of statements over btree indexes, so O(log n) in the number of stored blocks:

- no overlap: under `pg_advisory_xact_lock(hashtext(namespace))` the block with the
  greatest start <= a range's end is the only candidate (blocks are disjoint);
- a move reads the containing block and its two neighbours in one statement, replaces
  them by the split pieces, the moved piece merged with a mergeable neighbour;
- `holdings` keeps units per account, status and selector attributes, so totals and
  availability never sum blocks.

Every writer of a namespace's blocks holds its advisory lock: concurrent issuances and
moves (from other partitions or instances) serialise, and reads under the lock see every
earlier writer's commit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import asyncpg

from services.registry.domain.blocks import Block, Change, Holding, IndexConflict, Move, Put, Status, Units
from tonne.v1 import registry_pb2 as pb

COLUMNS = (
    "namespace, serial_start, serial_end, account_id, status, reservation_id, "
    "standard, host_party, vintage, authorization_id, attributes, attributes_key"
)
# The selector as SQL over the block columns ($2 standard, $3 host party, $4 vintage, $5 authorized).
_SELECTS = (
    "($2::int = 0 OR standard = $2) AND ($3::text = '' OR host_party = $3) "
    "AND ($4::int = 0 OR vintage = $4) AND (NOT $5::bool OR authorization_id <> '')"
)
# Under the namespace's lock: the block starting at or before $2 and the one before it,
# and the block after $2. For a move that is the container and its neighbours.
_AROUND = (
    f"(SELECT {COLUMNS} FROM blocks WHERE namespace = $1 AND serial_start <= $2 ORDER BY serial_start DESC LIMIT 2) "
    f"UNION ALL (SELECT {COLUMNS} FROM blocks WHERE namespace = $1 AND serial_start > $2 ORDER BY serial_start LIMIT 1)"
)

HoldingKey = tuple[str, str, int, str, int, str]


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


class SqlIndex:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def lock(self, namespaces: Iterable[str]) -> None:
        """Take the namespaces' advisory locks, in one order everywhere (no deadlock)."""
        for namespace in sorted(set(namespaces)):
            await self.conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", namespace)

    # --- queries ---

    async def overlapping(self, namespace: str, start: int, end: int, limit: int) -> list[Block]:
        """The predecessor of `start` if it reaches it, then the blocks starting inside."""
        rows = await self.conn.fetch(
            f"(SELECT {COLUMNS} FROM blocks WHERE namespace = $1 AND serial_start <= $2 "
            "ORDER BY serial_start DESC LIMIT 1) UNION ALL "
            f"(SELECT {COLUMNS} FROM blocks WHERE namespace = $1 AND serial_start > $2 AND serial_start <= $3 "
            "ORDER BY serial_start LIMIT $4)",
            namespace,
            start,
            end,
            limit,
        )
        blocks = sorted((block_of(r) for r in rows), key=lambda b: b.start)
        return [b for b in blocks if b.end >= start][:limit]

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

    async def available(self, account_id: str, selector: pb.UnitSelector) -> int:
        total = await self.conn.fetchval(
            f"SELECT coalesce(sum(quantity), 0) FROM holdings WHERE account_id = $1 AND status = 'held' AND {_SELECTS}",
            account_id,
            *selector_args(selector),
        )
        return int(total)

    async def reserved(self, reservation_id: str) -> list[Block]:
        # `<> ''` lets the planner use the partial index whatever the parameter.
        rows = await self.conn.fetch(
            f"SELECT {COLUMNS} FROM blocks WHERE reservation_id = $1 AND reservation_id <> '' "
            "ORDER BY namespace, serial_start",
            reservation_id,
        )
        return [block_of(r) for r in rows]

    # --- changes ---

    async def apply(self, changes: Sequence[Change]) -> None:
        """Apply one event's changes under its namespaces' locks."""
        if not changes:
            return
        await self.lock(c.block.namespace if isinstance(c, Put) else c.namespace for c in changes)
        deltas: Counter[HoldingKey] = Counter()
        for change in changes:
            match change:
                case Put(block):
                    await self._put(block)
                    deltas[_key(block.holding, block.units)] += block.quantity
                case Move():
                    units = await self._move(change)
                    deltas[_key(change.source, units)] -= change.end - change.start + 1
                    deltas[_key(change.target, units)] += change.end - change.start + 1
        await self._holdings(deltas)

    async def _around(self, namespace: str, serial: int) -> tuple[Block | None, Block | None, Block | None]:
        """(the block before the one at or before `serial`, that one, the next after `serial`)."""
        blocks = [block_of(r) for r in await self.conn.fetch(_AROUND, namespace, serial)]
        at = [b for b in blocks if b.start <= serial]
        at.sort(key=lambda b: b.start)
        after = next((b for b in blocks if b.start > serial), None)
        current = at[-1] if at else None
        before = at[-2] if len(at) > 1 else None
        return before, current, after

    async def _put(self, block: Block) -> None:
        _, previous, following = await self._around(block.namespace, block.start)
        if (previous and previous.end >= block.start) or (following and following.start <= block.end):
            raise IndexConflict(f"{block.label()} overlaps the index")
        await self._replace(block.namespace, [], *_merged(previous, block, following))

    async def _move(self, move: Move) -> Units:
        before, container, following = await self._around(move.namespace, move.start)
        if container is None or not container.contains(move.start, move.end) or container.holding != move.source:
            raise IndexConflict(f"{move.namespace}:{move.start}-{move.end} is not held as {move.source}")
        pieces: list[Block] = []
        left = right = None
        if container.start < move.start:
            left = Block(container.namespace, container.start, move.start - 1, container.holding, container.units)
        if move.end < container.end:
            right = Block(container.namespace, move.end + 1, container.end, container.holding, container.units)
        moved = Block(move.namespace, move.start, move.end, move.target, container.units)
        gone, kept = _merged(left or before, moved, right or following)
        pieces = [p for p in (left, right) if p is not None and p.start not in gone]
        await self._replace(move.namespace, [container.start], gone, [*pieces, *kept])
        return container.units

    async def _replace(self, namespace: str, removed: list[int], merged_away: list[int], added: list[Block]) -> None:
        starts = removed + merged_away
        if starts:
            await self.conn.execute(
                "DELETE FROM blocks WHERE namespace = $1 AND serial_start = ANY($2::bigint[])", namespace, starts
            )
        if added:
            await self.conn.executemany(
                f"INSERT INTO blocks ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                [row_of(b) for b in added],
            )

    async def _holdings(self, deltas: Counter[HoldingKey]) -> None:
        # Rows that reach zero stay (one per account, status and attributes ever held,
        # not per event): deleting them would cost a statement on every move.
        changed = [(*key, delta) for key, delta in sorted(deltas.items()) if delta]
        if not changed:
            return
        await self.conn.executemany(
            "INSERT INTO holdings (account_id, status, standard, host_party, vintage, authorization_id, quantity) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (account_id, status, standard, host_party, vintage, "
            "authorization_id) DO UPDATE SET quantity = holdings.quantity + EXCLUDED.quantity",
            changed,
        )


def _key(holding: Holding, units: Units) -> HoldingKey:
    return (
        holding.account_id,
        holding.status.value,
        units.standard,
        units.host_party,
        units.vintage,
        units.authorization_id,
    )


def _merged(previous: Block | None, block: Block, following: Block | None) -> tuple[list[int], list[Block]]:
    """`block` merged with its adjacent mergeable neighbours: (starts of the rows that
    merge away, the rows to write)."""
    gone: list[int] = []
    start, end = block.start, block.end
    if previous is not None and previous.end + 1 == block.start and previous.mergeable(block):
        gone.append(previous.start)
        start = previous.start
    if following is not None and following.start == block.end + 1 and following.mergeable(block):
        gone.append(following.start)
        end = following.end
    return gone, [Block(block.namespace, start, end, block.holding, block.units)]
