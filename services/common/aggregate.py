"""Aggregates: state with an identity, folded from its own stream and snapshotted.

A pure core's aggregate decides without changing itself; the events it returns are
folded in (`mutate`) when the unit of work records them, under the aggregate's lock, and
dropped with the aggregate if the transaction does not commit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import ClassVar, Self

from google.protobuf.message import Message


class Aggregate(ABC):
    # Bump when the snapshot's bytes change meaning; older snapshots are then ignored.
    SNAPSHOT_SCHEMA: ClassVar[int] = 1

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.version = 0
        self.snapshot_version = 0  # version of the newest stored snapshot

    @abstractmethod
    def apply(self, event: Message) -> None:
        """Fold one recorded event into the state."""

    @abstractmethod
    def snapshot(self) -> bytes:
        """The whole state as canonical, deterministic bytes (also what the state hash covers)."""

    @classmethod
    @abstractmethod
    def restore(cls, stream_id: str, state: bytes) -> Self:
        """The aggregate a `snapshot()` was taken of (its version is set by the caller)."""

    def mutate(self, events: Iterable[Message]) -> None:
        for event in events:
            self.apply(event)
            self.version += 1
