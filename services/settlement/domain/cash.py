"""Cash: a double-entry ledger per participant account and currency.

Each account is an aggregate (stream `cash-<account id>/<currency>`) with what it has
`available`, what `covers` its resting buy orders and what it `holds` for trades being
settled. Every recorded event is a posting whose legs (`legs`) sum to zero: deposits and
withdrawals move cash between the account and EXTERNAL (the venue's bank); a buy order's
cover moves it from available to reserved, a trade's hold from available (or from its
order's cover, reserved) to held; a trade's payment moves the buyer's held
cash to the seller (CashPaid and CashReceived, one leg each, recorded in one transaction).
Amounts are integer minor units; no balance ever leaves the 64-bit range or goes negative.
"""

from __future__ import annotations

from typing import NamedTuple, Self

from google.protobuf.message import Message

from services.common.aggregate import Aggregate
from services.common.errors import DomainError
from services.common.inputs import INT64_MAX
from tonne.v1 import settlement_pb2 as spb

PREFIX = "cash-"
EXTERNAL = "EXTERNAL"  # the venue's bank: where deposits come from and withdrawals go
# Buckets of an account: free to use, set aside for resting buy orders, held for trades.
AVAILABLE, RESERVED, HELD = "available", "reserved", "held"


def key(account_id: str, currency: str) -> str:
    """The account's stream key (ids never contain "/")."""
    return f"{account_id}/{currency}"


class Leg(NamedTuple):
    posting_id: str
    account_id: str
    currency: str
    bucket: str
    amount: int


def legs(event: Message) -> list[Leg]:
    """The legs an event posts (a payment's two events carry one each, same posting id)."""
    match event:
        case spb.CashDeposited():
            posting = f"deposit:{event.movement_id}"
            return [
                Leg(posting, EXTERNAL, event.currency, AVAILABLE, -event.amount),
                Leg(posting, event.account_id, event.currency, AVAILABLE, event.amount),
            ]
        case spb.CashWithdrawn():
            posting = f"withdrawal:{event.movement_id}"
            return [
                Leg(posting, event.account_id, event.currency, AVAILABLE, -event.amount),
                Leg(posting, EXTERNAL, event.currency, AVAILABLE, event.amount),
            ]
        case spb.CashReserved():
            posting = f"cover:{event.order_id}"
            return [
                Leg(posting, event.account_id, event.currency, AVAILABLE, -event.amount),
                Leg(posting, event.account_id, event.currency, RESERVED, event.amount),
            ]
        case spb.CashReservationReleased():
            posting = f"uncover:{event.order_id}"
            return [
                Leg(posting, event.account_id, event.currency, RESERVED, -event.amount),
                Leg(posting, event.account_id, event.currency, AVAILABLE, event.amount),
            ]
        case spb.CashHeld():
            posting = f"hold:{event.trade_id}"
            return [
                Leg(
                    posting, event.account_id, event.currency, RESERVED if event.order_id else AVAILABLE, -event.amount
                ),
                Leg(posting, event.account_id, event.currency, HELD, event.amount),
            ]
        case spb.CashHoldReleased():
            posting = f"release:{event.trade_id}"
            return [
                Leg(posting, event.account_id, event.currency, HELD, -event.amount),
                Leg(posting, event.account_id, event.currency, AVAILABLE, event.amount),
            ]
        case spb.CashPaid():
            return [Leg(f"payment:{event.trade_id}", event.account_id, event.currency, HELD, -event.amount)]
        case spb.CashReceived():
            return [Leg(f"payment:{event.trade_id}", event.account_id, event.currency, AVAILABLE, event.amount)]
    return []


class Cover(NamedTuple):
    """What a resting buy order may still pay, and for how many units."""

    amount: int
    quantity: int


def _positive(amount: int) -> None:
    if not 0 < amount <= INT64_MAX:
        raise DomainError("CASH_AMOUNT_INVALID", f"an amount is 1 to {INT64_MAX} minor units")


class CashAccount(Aggregate):
    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.account_id, _, self.currency = stream_id.removeprefix(PREFIX).partition("/")
        self.available = 0
        self.covers: dict[str, Cover] = {}  # buy order id -> what it may still pay
        self.holds: dict[str, int] = {}  # trade id -> amount held for its payment

    @classmethod
    def of(cls, account_id: str, currency: str) -> CashAccount:
        return cls(PREFIX + key(account_id, currency))

    @property
    def held(self) -> int:
        """Set aside, for resting buy orders and for trades being settled."""
        return sum(self.holds.values()) + sum(cover.amount for cover in self.covers.values())

    # --- deciding (changes nothing) ---

    def deposit(self, movement_id: str, amount: int, by: str) -> list[Message]:
        _positive(amount)
        if self.available + self.held + amount > INT64_MAX:
            raise DomainError("CASH_BALANCE_OVERFLOW", "the balance would exceed 2^63-1 minor units")
        return [self._movement(spb.CashDeposited, movement_id, amount, by)]

    def withdraw(self, movement_id: str, amount: int, by: str) -> list[Message]:
        _positive(amount)
        if amount > self.available:
            raise DomainError("CASH_INSUFFICIENT", f"{self.available} {self.currency} available, {amount} asked")
        return [self._movement(spb.CashWithdrawn, movement_id, amount, by)]

    def reserve(self, order_id: str, amount: int, quantity: int) -> list[Message]:
        """Cover a buy order before it may rest; refused when the buyer cannot pay it."""
        if order_id in self.covers:
            return []
        _positive(amount)
        if quantity <= 0:
            raise DomainError("CASH_AMOUNT_INVALID", "a cover is for a positive quantity")
        self._affords(amount, "the order may cost")
        return [
            spb.CashReserved(
                order_id=order_id, account_id=self.account_id, currency=self.currency, amount=amount, quantity=quantity
            )
        ]

    def uncover(self, order_id: str, reason: str) -> list[Message]:
        """Give back what is left of a buy order's cover (cancelled, expired, refused)."""
        cover = self.covers.get(order_id)
        if cover is None:
            return []
        return [
            spb.CashReservationReleased(
                order_id=order_id,
                account_id=self.account_id,
                currency=self.currency,
                amount=cover.amount,
                reason=reason,
            )
        ]

    def hold(self, trade_id: str, amount: int, order_id: str = "", quantity: int = 0) -> list[Message]:
        """Set a trade's payment aside: from its buy order's cover when it has one (then
        what is left of a cover whose order is filled goes back), else from what is
        available; refused when the buyer cannot pay it."""
        if trade_id in self.holds:
            return []
        _positive(amount)
        cover = self.covers.get(order_id)
        if cover is None:
            self._affords(amount, "the trade costs")
            return [spb.CashHeld(trade_id=trade_id, account_id=self.account_id, currency=self.currency, amount=amount)]
        if amount > cover.amount or quantity > cover.quantity:
            raise DomainError("CASH_COVER_EXCEEDED", f"trade {trade_id} costs more than order {order_id} covers")
        held: list[Message] = [
            spb.CashHeld(
                trade_id=trade_id,
                account_id=self.account_id,
                currency=self.currency,
                amount=amount,
                order_id=order_id,
                quantity=quantity,
            )
        ]
        left = cover.amount - amount
        if quantity == cover.quantity and left:  # filled below its limit: the rest goes back
            held.append(
                spb.CashReservationReleased(
                    order_id=order_id,
                    account_id=self.account_id,
                    currency=self.currency,
                    amount=left,
                    reason="order filled",
                )
            )
        return held

    def _affords(self, amount: int, what: str) -> None:
        if amount > self.available:
            raise DomainError(
                "CASH_INSUFFICIENT",
                f"{self.account_id} has {self.available} {self.currency} available, {what} {amount}",
            )

    def release(self, trade_id: str, reason: str) -> list[Message]:
        amount = self.holds.get(trade_id)
        if amount is None:
            return []
        return [
            spb.CashHoldReleased(
                trade_id=trade_id, account_id=self.account_id, currency=self.currency, amount=amount, reason=reason
            )
        ]

    def pay(self, trade_id: str, to_account_id: str) -> list[Message]:
        """The held payment goes to the seller (see `receive`)."""
        amount = self.holds.get(trade_id)
        if amount is None:
            return []
        return [
            spb.CashPaid(
                trade_id=trade_id,
                account_id=self.account_id,
                currency=self.currency,
                amount=amount,
                to_account_id=to_account_id,
            )
        ]

    def receive(self, trade_id: str, amount: int, from_account_id: str) -> list[Message]:
        if self.available + self.held + amount > INT64_MAX:
            raise DomainError("CASH_BALANCE_OVERFLOW", f"{self.account_id}'s balance would exceed 2^63-1 minor units")
        return [
            spb.CashReceived(
                trade_id=trade_id,
                account_id=self.account_id,
                currency=self.currency,
                amount=amount,
                from_account_id=from_account_id,
            )
        ]

    def _movement(
        self, kind: type[spb.CashDeposited] | type[spb.CashWithdrawn], movement_id: str, amount: int, by: str
    ) -> Message:
        return kind(movement_id=movement_id, account_id=self.account_id, currency=self.currency, amount=amount, by=by)

    # --- folding ---

    def apply(self, event: Message) -> None:
        for leg in legs(event):
            if leg.account_id != self.account_id:
                continue
            if leg.bucket == AVAILABLE:
                self.available += leg.amount
        match event:
            case spb.CashReserved():
                self.covers[event.order_id] = Cover(event.amount, event.quantity)
            case spb.CashReservationReleased():
                self.covers.pop(event.order_id, None)
            case spb.CashHeld():
                self.holds[event.trade_id] = event.amount
                if (cover := self.covers.get(event.order_id)) is not None:
                    # A filled order's cover goes; one with cash left is released next.
                    left = Cover(cover.amount - event.amount, cover.quantity - event.quantity)
                    if left == (0, 0):
                        del self.covers[event.order_id]
                    else:
                        self.covers[event.order_id] = left
            case spb.CashHoldReleased() | spb.CashPaid():
                self.holds.pop(event.trade_id, None)

    def snapshot(self) -> bytes:
        state = spb.CashAccountSnapshot(
            account_id=self.account_id,
            currency=self.currency,
            available=self.available,
            holds=[spb.CashAccountSnapshot.Hold(trade_id=t, amount=a) for t, a in sorted(self.holds.items())],
            covers=[
                spb.CashAccountSnapshot.Cover(order_id=o, amount=c.amount, quantity=c.quantity)
                for o, c in sorted(self.covers.items())
            ],
        )
        return state.SerializeToString(deterministic=True)

    @classmethod
    def restore(cls, stream_id: str, state: bytes) -> Self:
        snapshot = spb.CashAccountSnapshot.FromString(state)
        account = cls(stream_id)
        account.available = snapshot.available
        account.holds = {h.trade_id: h.amount for h in snapshot.holds}
        account.covers = {c.order_id: Cover(c.amount, c.quantity) for c in snapshot.covers}
        return account
