"""Delivery versus payment: each step of a trade's settlement decided with its cash.

The buyer's payment is held when the trade arrives, from the cover its buy order set aside
(no cash, no settlement: nothing has moved yet), paid to the seller in the transaction that
records the units' delivery, and given back in the one that records the trade's failure. So units and cash move together
or not at all; the one exception is a seller whose balance would pass 2^63-1 minor units
between approval and delivery (checked at both): the units have moved, the cash has not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import Message

from services.common.errors import DomainError
from services.settlement.domain.cash import CashAccount
from services.settlement.domain.settlement import TradeSettlement
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb
from tonne.v1.envelope_pb2 import CommandRejected


@dataclass
class Steps:
    """What one step records, per aggregate."""

    settlement: list[Message]
    buyer: list[Message] = field(default_factory=list)
    seller: list[Message] = field(default_factory=list)

    @property
    def failed(self) -> spb.SettlementFailed | None:
        return next((e for e in self.settlement if isinstance(e, spb.SettlementFailed)), None)


def opened(settlement: TradeSettlement, trade: mpb.TradeExecuted, buyer: CashAccount) -> Steps:
    """A trade arrives: start its settlement and hold the buyer's payment (from its buy
    order's cover, when the order had one)."""
    events = settlement.start(trade)
    if not events or isinstance(events[-1], spb.SettlementFailed):
        return Steps(events)
    try:
        held = buyer.hold(trade.trade_id, trade.price * trade.quantity, trade.buy_order_id, trade.quantity)
        return Steps(events, held)
    except DomainError as error:
        failed = spb.SettlementFailed(trade_id=trade.trade_id, code=error.code, reason=error.reason)
        return Steps([*events, failed])


def screened(
    settlement: TradeSettlement, decision: cpb.ScreeningDecision, buyer: CashAccount, seller: CashAccount
) -> Steps:
    """Compliance answered: instruct the transfer only if the seller can be paid."""
    events = settlement.screened(decision)
    if events and isinstance(events[0], spb.TransferInstructed):
        try:
            _receipt(settlement, seller)
        except DomainError as error:
            events = [settlement.fail(error)]
    return _unwound(events, buyer)


def delivered(
    settlement: TradeSettlement, transfer: rpb.UnitsTransferred, buyer: CashAccount, seller: CashAccount
) -> Steps:
    """The units moved: the held payment goes to the seller in the same transaction."""
    events = settlement.transferred(transfer)
    if not events:
        return Steps(events)
    try:
        received = _receipt(settlement, seller)
    except DomainError as error:
        return _unwound([settlement.fail(error)], buyer)
    s = settlement.started
    assert s is not None
    return Steps(events, buyer.pay(s.trade_id, s.seller_account_id), received)


def refused(settlement: TradeSettlement, rejection: CommandRejected, buyer: CashAccount) -> Steps:
    """The registry refused the transfer: the trade fails and the buyer gets its cash back."""
    return _unwound(settlement.refused(rejection), buyer)


def _receipt(settlement: TradeSettlement, seller: CashAccount) -> list[Message]:
    s = settlement.started
    assert s is not None
    return seller.receive(s.trade_id, s.price * s.quantity, s.buyer_account_id)


def _unwound(events: list[Message], buyer: CashAccount) -> Steps:
    steps = Steps(events)
    if (failed := steps.failed) is not None:
        steps.buyer = buyer.release(failed.trade_id, failed.code)
    return steps
