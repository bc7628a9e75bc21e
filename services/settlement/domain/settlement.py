"""Delivery versus payment, one trade at a time:

    started --screen--> screening --approved--> transferring --units moved--> settled
                                  \\-rejected--> failed            \\-refused--> failed

Pure: each step returns the events it causes; `apply` folds them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum

from google.protobuf.message import Message

from services.settlement.domain.adjustments import Interval, first_transfer_adjustments
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


@dataclass
class Settlement:
    started: spb.SettlementStarted
    phase: Phase = Phase.SCREENING
    failure: str = ""
    adjustments: list[spb.CorrespondingAdjustmentApplied] = field(default_factory=list)


class Settlements:
    def __init__(self) -> None:
        self.trades: dict[str, Settlement] = {}
        self.authorizations: dict[str, rpb.RecordAuthorization] = {}
        self.first_transferred: dict[str, list[Interval]] = defaultdict(list)
        self.cash: dict[tuple[str, str], int] = defaultdict(int)  # (account, currency) -> minor units

    def start(self, trade: mpb.TradeExecuted) -> list[Message]:
        if trade.trade_id in self.trades:
            return []
        return [
            spb.SettlementStarted(
                trade_id=trade.trade_id,
                instrument_id=trade.instrument_id,
                seller_account_id=trade.seller_account_id,
                buyer_account_id=trade.buyer_account_id,
                reservation_id=trade.sell_order_id,
                quantity=trade.quantity,
                price=trade.price,
                currency=trade.currency,
            )
        ]

    def screened(self, decision: cpb.ScreeningDecision) -> list[Message]:
        settlement = self.trades.get(decision.trade_id)
        if settlement is None or settlement.phase is not Phase.SCREENING:
            return []
        if decision.verdict == cpb.APPROVED:
            return [spb.TransferInstructed(trade_id=decision.trade_id, transfer_id=decision.trade_id)]
        failed = ", ".join(r.code for r in decision.results if not r.passed)
        return [spb.SettlementFailed(trade_id=decision.trade_id, code="COMPLIANCE_REJECTED", reason=failed)]

    def transferred(self, transfer: rpb.UnitsTransferred) -> list[Message]:
        settlement = self.trades.get(transfer.transfer_id)
        if settlement is None or settlement.phase is not Phase.TRANSFERRING:
            return []
        s = settlement.started
        events: list[Message] = list(
            first_transfer_adjustments(s.trade_id, transfer, self.authorizations, self.first_transferred)
        )
        events.append(
            spb.SettlementCompleted(
                trade_id=s.trade_id,
                transfer_id=transfer.transfer_id,
                quantity=s.quantity,
                cash_amount=s.price * s.quantity,
                currency=s.currency,
                buyer_account_id=s.buyer_account_id,
                seller_account_id=s.seller_account_id,
            )
        )
        return events

    def refused(self, rejection: CommandRejected) -> list[Message]:
        settlement = self.trades.get(rejection.command_id)
        if settlement is None or settlement.phase is not Phase.TRANSFERRING:
            return []
        return [spb.SettlementFailed(trade_id=rejection.command_id, code=rejection.code, reason=rejection.reason)]

    def apply(self, event: Message) -> None:
        match event:
            case rpb.AuthorizationRecorded():
                self.authorizations[event.authorization.authorization_id] = event.authorization
            case rpb.UnitsTransferred():
                # Observed to remember which ITMO serials have been first-transferred.
                if event.from_jurisdiction != event.to_jurisdiction:
                    for b in event.blocks:
                        if b.attributes.authorization_id:
                            self.first_transferred[b.namespace].append((b.start, b.end))
            case spb.SettlementStarted():
                self.trades[event.trade_id] = Settlement(event)
            case spb.TransferInstructed():
                self.trades[event.trade_id].phase = Phase.TRANSFERRING
            case spb.CorrespondingAdjustmentApplied():
                self.trades[event.trade_id].adjustments.append(event)
            case spb.SettlementCompleted():
                self.trades[event.trade_id].phase = Phase.SETTLED
                self.cash[(event.buyer_account_id, event.currency)] -= event.cash_amount
                self.cash[(event.seller_account_id, event.currency)] += event.cash_amount
            case spb.SettlementFailed():
                settlement = self.trades[event.trade_id]
                settlement.phase, settlement.failure = Phase.FAILED, f"{event.code}: {event.reason}"
