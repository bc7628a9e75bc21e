"""Serial blocks: units held as [start, end] ranges in a namespace, split on movement and
merged again with equal neighbours, so fragments do not accumulate."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property

from tonne.v1.registry_pb2 import SerialBlock, UnitAttributes


class Status(StrEnum):
    HELD = "held"
    RESERVED = "reserved"
    RETIRED = "retired"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FROZEN = "frozen"
    EXPORTED = "exported"  # accepted by another registry (an external transfer): never moves here again


@dataclass(frozen=True)
class Units:
    """A block's UnitAttributes as canonical bytes, compared by a digest of those bytes
    (never by comparing protobufs); the selector's attributes are kept decoded."""

    key: bytes
    data: bytes = field(compare=False)
    standard: int = field(compare=False)
    host_party: str = field(compare=False)
    vintage: int = field(compare=False)
    authorization_id: str = field(compare=False)

    @classmethod
    def of(cls, attributes: UnitAttributes) -> Units:
        data = attributes.SerializeToString(deterministic=True)
        return cls(
            key=digest(data),
            data=data,
            standard=attributes.standard,
            host_party=attributes.host_party,
            vintage=attributes.vintage,
            authorization_id=attributes.authorization_id,
        )

    def message(self) -> UnitAttributes:
        return UnitAttributes.FromString(self.data)

    @cached_property
    def project_id(self) -> str:
        # Decoded on demand: only freezes ask for it.
        return self.message().project_id


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:16]


@dataclass(frozen=True)
class Holding:
    """Who has a piece of serials and how: the part of a block a movement changes."""

    account_id: str
    status: Status = Status.HELD
    reservation_id: str = ""


@dataclass(frozen=True)
class Block:
    namespace: str
    start: int
    end: int
    holding: Holding
    units: Units

    @property
    def account_id(self) -> str:
        return self.holding.account_id

    @property
    def status(self) -> Status:
        return self.holding.status

    @property
    def reservation_id(self) -> str:
        return self.holding.reservation_id

    @property
    def quantity(self) -> int:
        return self.end - self.start + 1

    def contains(self, start: int, end: int) -> bool:
        return self.start <= start and end <= self.end

    def mergeable(self, other: Block) -> bool:
        """Same namespace, holder, status, reservation and attributes: one block if adjacent."""
        return (self.namespace, self.holding, self.units) == (other.namespace, other.holding, other.units)

    def first(self, quantity: int) -> Block:
        """The lowest `quantity` serials of this block."""
        return replace(self, end=self.start + quantity - 1)

    def last(self, quantity: int) -> Block:
        """The highest `quantity` serials of this block."""
        return replace(self, start=self.end - quantity + 1)

    def label(self) -> str:
        return f"{self.namespace}:{self.start}-{self.end}"

    @classmethod
    def reserved(cls, block: SerialBlock, account_id: str, reservation_id: str) -> Block:
        """A block a UnitsReserved event names, as the index holds it after that event."""
        return cls(
            block.namespace,
            block.start,
            block.end,
            Holding(account_id, Status.RESERVED, reservation_id),
            Units.of(block.attributes),
        )

    def to_message(self) -> SerialBlock:
        return SerialBlock(namespace=self.namespace, start=self.start, end=self.end, attributes=self.units.message())


# --- what an event does to the index: both index adapters apply exactly these ---


def frozen_under(account_id: str, freeze_id: str) -> Holding:
    """Where frozen serials stay: in their account, marked with the freeze ("!" starts no
    reservation id, and the account makes a freeze id its own)."""
    return Holding(account_id, Status.FROZEN, f"!{account_id}:{freeze_id}")


@dataclass(frozen=True)
class Put:
    """New serials (an issuance)."""

    block: Block


@dataclass(frozen=True)
class Move:
    """Serials [start, end] of `namespace` held as `source` change to `target`."""

    namespace: str
    start: int
    end: int
    source: Holding
    target: Holding


Change = Put | Move


class IndexConflict(Exception):
    """The index does not hold what a recorded event moves: the decision's facts moved
    under it (or the event stream is corrupt). The transaction must not commit."""
