"""The block index in memory: the same queries and changes as the PostgreSQL index
(services/registry/sql_index.py), for unit tests and state machines.

Blocks of a namespace are disjoint and sorted by start; every change is O(log n):
bisect to the containing block, split it, and merge the moved piece with its
neighbours when they are mergeable (same holder, status, reservation, attributes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from sortedcontainers import SortedKeyList

from services.registry.domain.blocks import Block, Change, IndexConflict, Move, Put
from services.registry.domain.ledger import selects
from tonne.v1 import registry_pb2 as pb


def _by_start(block: Block) -> int:
    return block.start


def _by_place(block: Block) -> tuple[str, int]:
    return (block.namespace, block.start)


class MemoryIndex:
    def __init__(self) -> None:
        self._namespaces: dict[str, SortedKeyList] = {}
        self._accounts: dict[str, SortedKeyList] = {}
        self._reservations: dict[str, SortedKeyList] = {}

    # --- queries (the service layer's facts) ---

    def overlapping(self, namespace: str, start: int, end: int, limit: int) -> list[Block]:
        """Blocks sharing a serial with [start, end]: the predecessor of `start` if it
        reaches it, then the blocks starting inside the range."""
        blocks = self._namespaces.get(namespace)
        if not blocks:
            return []
        found: list[Block] = []
        i = blocks.bisect_key_right(start)
        if i > 0 and blocks[i - 1].end >= start:
            found.append(blocks[i - 1])
        for block in blocks.islice(i):
            if block.start > end or len(found) >= limit:
                break
            found.append(block)
        return found

    def eligible(
        self, account_id: str, selector: pb.UnitSelector, after: tuple[str, int] | None, limit: int
    ) -> list[Block]:
        """A page of the account's held blocks the selector takes, in (namespace, start) order."""
        blocks = self._accounts.get(account_id)
        if not blocks:
            return []
        start = blocks.bisect_key_right(after) if after is not None else 0
        page: list[Block] = []
        for block in blocks.islice(start):
            if len(page) >= limit:
                break
            if block.status == "held" and selects(selector, block.units):
                page.append(block)
        return page

    def available(self, account_id: str, selector: pb.UnitSelector) -> int:
        return sum(
            b.quantity for b in self._accounts.get(account_id, ()) if b.status == "held" and selects(selector, b.units)
        )

    def reserved(self, reservation_id: str) -> list[Block]:
        return list(self._reservations.get(reservation_id, ()))

    def holdings(self, account_id: str) -> list[Block]:
        return list(self._accounts.get(account_id, ()))

    def blocks(self, namespace: str) -> list[Block]:
        return list(self._namespaces.get(namespace, ()))

    def namespaces(self) -> Iterator[str]:
        return iter(sorted(self._namespaces))

    # --- changes ---

    def apply(self, change: Change) -> None:
        match change:
            case Put(block):
                if self.overlapping(block.namespace, block.start, block.end, 1):
                    raise IndexConflict(f"{block.label()} overlaps the index")
                self._put(block)
            case Move():
                self._move(change)

    def _move(self, move: Move) -> None:
        blocks = self._namespaces.get(move.namespace)
        i = blocks.bisect_key_right(move.start) - 1 if blocks else -1
        if blocks is None or i < 0 or not blocks[i].contains(move.start, move.end) or blocks[i].holding != move.source:
            raise IndexConflict(f"{move.namespace}:{move.start}-{move.end} is not held as {move.source}")
        container: Block = blocks[i]
        self._remove(container)
        if container.start < move.start:
            self._add(replace(container, end=move.start - 1))
        if move.end < container.end:
            self._add(replace(container, start=move.end + 1))
        self._put(replace(container, start=move.start, end=move.end, holding=move.target))

    def _put(self, block: Block) -> None:
        """Add `block`, merged with an adjacent mergeable neighbour on either side."""
        blocks = self._namespaces.get(block.namespace)
        if blocks:
            i = blocks.bisect_key_left(block.start)
            if i > 0 and blocks[i - 1].end == block.start - 1 and blocks[i - 1].mergeable(block):
                left = blocks[i - 1]
                self._remove(left)
                block = replace(block, start=left.start)
                i -= 1
            if i < len(blocks) and blocks[i].start == block.end + 1 and blocks[i].mergeable(block):
                right = blocks[i]
                self._remove(right)
                block = replace(block, end=right.end)
        self._add(block)

    def _add(self, block: Block) -> None:
        self._namespaces.setdefault(block.namespace, SortedKeyList(key=_by_start)).add(block)
        self._accounts.setdefault(block.account_id, SortedKeyList(key=_by_place)).add(block)
        if block.reservation_id:
            self._reservations.setdefault(block.reservation_id, SortedKeyList(key=_by_place)).add(block)

    def _remove(self, block: Block) -> None:
        self._namespaces[block.namespace].remove(block)
        self._accounts[block.account_id].remove(block)
        if block.reservation_id:
            reserved = self._reservations[block.reservation_id]
            reserved.remove(block)
            if not reserved:  # a closed reservation leaves nothing behind
                del self._reservations[block.reservation_id]
