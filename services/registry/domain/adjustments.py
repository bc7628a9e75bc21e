"""A block's corresponding-adjustment status (DOMAIN.md §3: an attribute every block
carries), from the adjustments settlement applied: the registry keeps the serials whose
host party adjusted (settlement.events, first-transferring side) and reads a block's
status from its overlap with them, so a block need not split when an adjustment lands.
Pure."""

from __future__ import annotations

from enum import StrEnum

from services.common.errors import DomainError
from services.common.inputs import INT64_MAX, is_identifier
from tonne.v1 import registry_pb2 as pb
from tonne.v1 import settlement_pb2 as spb


class AdjustmentStatus(StrEnum):
    NOT_AUTHORIZED = "NOT_AUTHORIZED"  # no authorization: no adjustment is owed
    PENDING = "PENDING"  # authorized, not yet first-transferred: the host has not adjusted
    PARTIAL = "PARTIAL"  # some of the block's serials adjusted
    APPLIED = "APPLIED"  # every serial adjusted by its host party


def adjusted(event: spb.CorrespondingAdjustmentApplied) -> list[pb.SerialBlock]:
    """The serials a host party's adjustment covers (none for the acquiring side's, or
    for one made at authorization, which names no serials). Malformed: FACT_INVALID."""
    if event.side != spb.FIRST_TRANSFERRING:
        return []
    problems = [] if is_identifier(event.adjustment_id) else ["adjustment_id is not an identifier"]
    for n, serial in enumerate(event.serials):
        if not is_identifier(serial.namespace) or not 1 <= serial.start <= serial.end <= INT64_MAX:
            problems.append(f"serials[{n}] is not a namespace and 1 <= start <= end <= 2^63-1")
    if problems:
        raise DomainError("FACT_INVALID", "a corresponding adjustment's serials are malformed", problems[:20])
    return list(event.serials)


def status(authorized: bool, first_transfer: int, quantity: int, adjusted_units: int) -> AdjustmentStatus:
    """`first_transfer`: the authorization's first-transfer event; `adjusted_units`: how
    many of the block's `quantity` serials were adjusted."""
    if not authorized:
        return AdjustmentStatus.NOT_AUTHORIZED
    if first_transfer == pb.AT_AUTHORIZATION or adjusted_units >= quantity:
        return AdjustmentStatus.APPLIED  # adjusted for the whole quantity when it was authorized
    return AdjustmentStatus.PARTIAL if adjusted_units else AdjustmentStatus.PENDING
