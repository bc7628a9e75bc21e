"""Serial blocks: units held as [start, end] ranges in a namespace, split on movement."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from tonne.v1.registry_pb2 import SerialBlock, UnitAttributes


class Status(StrEnum):
    HELD = "held"
    RESERVED = "reserved"
    RETIRED = "retired"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FROZEN = "frozen"


@dataclass(frozen=True)
class Block:
    namespace: str
    start: int
    end: int
    account_id: str
    attributes: UnitAttributes
    status: Status = Status.HELD
    reservation_id: str = ""

    @property
    def quantity(self) -> int:
        return self.end - self.start + 1

    def overlaps(self, start: int, end: int) -> bool:
        return self.start <= end and start <= self.end

    def contains(self, start: int, end: int) -> bool:
        return self.start <= start and end <= self.end

    def split(self, start: int, end: int) -> tuple[list[Block], Block]:
        """Carve [start, end] out of this block: (the pieces left, the piece carved)."""
        left = [replace(self, end=start - 1)] if start > self.start else []
        right = [replace(self, start=end + 1)] if end < self.end else []
        return left + right, replace(self, start=start, end=end)

    def first(self, quantity: int) -> Block:
        """The lowest `quantity` serials of this block."""
        return replace(self, end=self.start + quantity - 1)

    def last(self, quantity: int) -> Block:
        """The highest `quantity` serials of this block."""
        return replace(self, start=self.end - quantity + 1)

    def to_message(self) -> SerialBlock:
        return SerialBlock(namespace=self.namespace, start=self.start, end=self.end, attributes=self.attributes)
