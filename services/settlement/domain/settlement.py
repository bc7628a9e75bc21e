"""Delivery versus payment, one trade at a time (stream `settlement-<trade_id>`):

    started --screen--> screening --approved--> transferring --units moved--> settled
       \\                          \\-rejected--> failed            \\-refused--> failed
        \\-cash amount beyond int64 or not available--> failed

Pure: each step returns the events it causes without changing the aggregate; `apply`
folds them once they are committed. The buyer's cash moves with it (domain/dvp.py).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from google.protobuf.message import Message

from services.common.aggregate import Aggregate
from services.common.errors import DomainError
from services.common.inputs import INT64_MAX
from services.settlement.domain.checks import check_trade
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb
from tonne.v1.envelope_pb2 import CommandRejected


class Phase(StrEnum):
    SCREENING = "screening"
    TRANSFERRING = "transferring"
    SETTLED = "settled"
    FAILED = "failed"


_PHASE_TO_PB = {
    Phase.SCREENING: spb.SETTLEMENT_PHASE_SCREENING,
    Phase.TRANSFERRING: spb.SETTLEMENT_PHASE_TRANSFERRING,
    Phase.SETTLED: spb.SETTLEMENT_PHASE_SETTLED,
    Phase.FAILED: spb.SETTLEMENT_PHASE_FAILED,
}
_PHASE_FROM_PB = {value: phase for phase, value in _PHASE_TO_PB.items()}


class TradeSettlement(Aggregate):
    """One trade's settlement: its terms, where it stands and why it failed."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.started: spb.SettlementStarted | None = None
        self.phase: Phase | None = None  # None until started
        self.failure = ""

    # --- decisions ---

    def start(self, trade: mpb.TradeExecuted) -> list[Message]:
        check_trade(trade)
        if self.started is not None:
            return []
        started = spb.SettlementStarted(
            trade_id=trade.trade_id,
            instrument_id=trade.instrument_id,
            seller_account_id=trade.seller_account_id,
            buyer_account_id=trade.buyer_account_id,
            reservation_id=trade.sell_order_id,
            quantity=trade.quantity,
            price=trade.price,
            currency=trade.currency,
            buyer_broker_id=trade.buyer_broker_id,
            seller_broker_id=trade.seller_broker_id,
        )
        if trade.price * trade.quantity > INT64_MAX:
            # The cash leg cannot be booked: fail now, before any unit moves.
            overflow = spb.SettlementFailed(
                trade_id=trade.trade_id,
                code="CASH_AMOUNT_OVERFLOW",
                reason=f"price {trade.price} x quantity {trade.quantity} exceeds 2^63-1 minor units",
            )
            return [started, overflow]
        return [started]

    def screened(self, decision: cpb.ScreeningDecision) -> list[Message]:
        s = self.started
        if s is None or self.phase is not Phase.SCREENING:
            return []
        if decision.verdict == cpb.APPROVED:
            return [spb.TransferInstructed(trade_id=s.trade_id, transfer_id=s.trade_id)]
        failed = ", ".join(r.code for r in decision.results if not r.passed)
        return [spb.SettlementFailed(trade_id=s.trade_id, code="COMPLIANCE_REJECTED", reason=failed)]

    def transferred(self, transfer: rpb.UnitsTransferred) -> list[Message]:
        """The units moved: the settlement completes (its cash is paid beside it,
        dvp.delivered; the adjustments the transfer owes are the registry event's own,
        domain/adjustments.py)."""
        s = self.started
        if s is None or self.phase is not Phase.TRANSFERRING:
            return []
        delivery = (transfer.reservation_id, transfer.from_account_id, transfer.to_account_id, transfer.quantity)
        if delivery != (s.reservation_id, s.seller_account_id, s.buyer_account_id, s.quantity):
            return []  # another transfer that happens to carry this trade's id: not its delivery
        completed = spb.SettlementCompleted(
            trade_id=s.trade_id,
            transfer_id=transfer.transfer_id,
            quantity=s.quantity,
            cash_amount=s.price * s.quantity,
            currency=s.currency,
            buyer_account_id=s.buyer_account_id,
            seller_account_id=s.seller_account_id,
        )
        return [completed]

    def fail(self, error: DomainError) -> spb.SettlementFailed:
        assert self.started is not None
        return spb.SettlementFailed(trade_id=self.started.trade_id, code=error.code, reason=error.reason)

    def refused(self, rejection: CommandRejected) -> list[Message]:
        s = self.started
        if s is None or self.phase is not Phase.TRANSFERRING:
            return []
        return [spb.SettlementFailed(trade_id=s.trade_id, code=rejection.code, reason=rejection.reason)]

    # --- folding ---

    def apply(self, event: Message) -> None:
        match event:
            case spb.SettlementStarted():
                self.started, self.phase = event, Phase.SCREENING
            case spb.TransferInstructed():
                self.phase = Phase.TRANSFERRING
            case spb.SettlementCompleted():
                self.phase = Phase.SETTLED
            case spb.SettlementFailed():
                self.phase, self.failure = Phase.FAILED, f"{event.code}: {event.reason}"

    def snapshot(self) -> bytes:
        state = spb.TradeSettlementSnapshot(failure=self.failure)
        if self.started is not None:
            state.started.CopyFrom(self.started)
        if self.phase is not None:
            state.phase = _PHASE_TO_PB[self.phase]
        return state.SerializeToString(deterministic=True)

    @classmethod
    def restore(cls, stream_id: str, state: bytes) -> Self:
        snapshot = spb.TradeSettlementSnapshot.FromString(state)
        settlement = cls(stream_id)
        if snapshot.HasField("started"):
            settlement.started = snapshot.started
        settlement.phase = _PHASE_FROM_PB.get(snapshot.phase)
        settlement.failure = snapshot.failure
        return settlement
