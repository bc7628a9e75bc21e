"""The matching engine of one instrument: a `Book` aggregate, stream `book-<instrument_id>`.

Deterministic and pure: fed only by the sequenced order journal (orders, cancels,
replaces, and time and sessions as inputs too), it decides without changing itself (each
command returns journal events) and `apply` folds what was recorded. Every input takes
the next engine sequence; trade ids derive from it, never from a clock or randomness, so
the same inputs give the same journal.

The journal says what rests: `OrderAccepted.resting_quantity` (and `OrderReplaced`'s) is
what is left of the taker once its trades and protections are done, so the fold rests
it once and a trade only reduces its maker.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Self

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.aggregate import Aggregate
from services.common.errors import DomainError
from services.common.inputs import INT64_MAX, is_identifier
from services.matching.domain.book import BUY, Order, OrderBook
from services.matching.domain.instruments import Instrument
from tonne.v1 import matching_pb2 as pb

PREFIX = "book-"

Plan = list[tuple[Order, int]]  # fills as (maker, quantity), in the order they happen

Command = pb.SubmitOrder | pb.CancelOrder | pb.ReplaceOrder | pb.ExpireOrders | pb.CloseSession | pb.OpenSession

# The shape of services.common.inputs.Identifier: commands from Kafka are held to what the
# HTTP API accepts, so a malformed id is refused with a code and never stored or relayed.
# Order, broker, account and (optional) client order id at once: one regex call on the hot path.
_IDENTIFIERS = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}\n){3}(?:[A-Za-z0-9][A-Za-z0-9._:@-]{0,63})?")

_TIMES_IN_FORCE = frozenset(pb.TimeInForce.values())
_RESTING = (pb.TIME_IN_FORCE_GTC, pb.TIME_IN_FORCE_GTD, pb.TIME_IN_FORCE_DAY)
_STP_MODES = frozenset(pb.SelfTradePrevention.values())
_STP_SCOPES = frozenset(pb.StpScope.values())
_NANOS = 1_000_000_000


def shown(value: str) -> str:
    """An id as it may appear in a reason: malformed ones are not echoed back."""
    return repr(value) if is_identifier(value) else "(malformed id)"


def well_formed(order: pb.SubmitOrder) -> bool:
    """Can this order be stored as it is (ids and quantity within what the tables hold)?"""
    ids = (order.order_id, order.instrument_id, order.broker_id, order.account_id)
    client_ok = order.client_order_id == "" or is_identifier(order.client_order_id)
    return all(is_identifier(v) for v in ids) and client_ok and order.quantity <= INT64_MAX


def check_identifiers(order: pb.SubmitOrder) -> None:
    fields = {
        "order_id": order.order_id,
        "instrument_id": order.instrument_id,
        "broker_id": order.broker_id,
        "account_id": order.account_id,
    }
    malformed = [name for name, value in fields.items() if not is_identifier(value)]
    if order.client_order_id and not is_identifier(order.client_order_id):
        malformed.append("client_order_id")
    if malformed:
        raise DomainError(
            "ORDER_IDENTIFIER_INVALID",
            "identifiers are 1-64 characters of A-Z a-z 0-9 . _ : @ - starting with a letter or digit",
            [f"{name} is malformed" for name in malformed],
        )


def nanoseconds(timestamp: Timestamp) -> int:
    return timestamp.seconds * _NANOS + timestamp.nanos


def timestamp(ns: int) -> Timestamp:
    seconds, nanos = divmod(ns, _NANOS)
    return Timestamp(seconds=seconds, nanos=nanos)


def check_time(timestamp: Timestamp, code: str) -> int:
    """A time as nanoseconds; refused unless normalised (so it round-trips exactly)."""
    if not 0 <= timestamp.nanos < _NANOS:
        raise DomainError(code, "a time's nanos must lie in [0, 10^9)")
    return nanoseconds(timestamp)


def check_order_type(order: pb.SubmitOrder, as_of: int) -> None:
    """The combinations of type, time in force and flags the engine takes."""
    market = order.order_type == pb.ORDER_TYPE_MARKET
    if order.order_type not in (pb.ORDER_TYPE_UNSPECIFIED, pb.ORDER_TYPE_LIMIT, pb.ORDER_TYPE_MARKET):
        raise DomainError("ORDER_TYPE_INVALID", "order_type must be LIMIT or MARKET")
    tif = order.time_in_force
    if tif not in _TIMES_IN_FORCE or (market and tif in _RESTING):
        raise DomainError(
            "ORDER_TIME_IN_FORCE_INVALID", "a market order is IOC or FOK; a limit order GTC, IOC, FOK, GTD or DAY"
        )
    if order.self_trade_prevention not in _STP_MODES or order.stp_scope not in _STP_SCOPES:
        raise DomainError("ORDER_STP_INVALID", "unknown self-trade prevention mode or scope")
    if order.post_only and (market or tif not in (pb.TIME_IN_FORCE_UNSPECIFIED, *_RESTING)):
        raise DomainError("ORDER_POST_ONLY_INVALID", "post-only is for limit orders that may rest")
    if market and order.price:
        raise DomainError("MARKET_ORDER_PRICED", "a market order carries no price (its limit is the protection)")
    if (tif == pb.TIME_IN_FORCE_GTD) != order.HasField("expire_at"):
        raise DomainError("ORDER_EXPIRY_INVALID", "expire_at is required for GTD and only for GTD")
    if tif == pb.TIME_IN_FORCE_GTD and check_time(order.expire_at, "ORDER_EXPIRY_INVALID") <= as_of:
        raise DomainError("ORDER_EXPIRY_PASSED", "expire_at is not after the engine's latest expiry time")


def fully_traded(events: list[Message], quantity: int) -> bool:
    return sum(e.quantity for e in events if isinstance(e, pb.TradeExecuted)) == quantity


class Book(Aggregate):
    """One instrument's resting orders, its session state, its latest expiry time and the
    number of inputs its engine has taken."""

    SNAPSHOT_SCHEMA = 2

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.instrument_id = stream_id.removeprefix(PREFIX)
        self.orders = OrderBook()
        self.sequence = 0  # inputs taken (accepted, cancelled or refused): numbers trades
        self.closed = False  # the session is closed
        self.as_of = 0  # the latest ExpireOrders time taken, in nanoseconds
        # The order deciding as taker in the input being folded: its own reductions are
        # already counted in its resting quantity. Not state: it only spans one input.
        self._taker: tuple[str, int] = ("", 0)
        # What `submit` decided (the fills and the order that rests), handed to the fold
        # with its OrderAccepted, so the fold applies the whole input at once and need not
        # read it back from the events; an identity check, so a journal read from the
        # store (or a decision never recorded) takes the long way. Not state either.
        self._prepared: tuple[Message | None, Plan | None, Order | None] = (None, None, None)
        self._planned = 0  # the engine sequence whose trades were folded with their plan
        self._folds: dict[type[Message], Callable[[Message], None]] = {
            pb.OrderAccepted: self._accepted,  # type: ignore[dict-item]
            pb.TradeExecuted: self._traded,  # type: ignore[dict-item]
            pb.OrderCancelled: self._cancelled,  # type: ignore[dict-item]
            pb.OrderReduced: self._reduced,  # type: ignore[dict-item]
            pb.OrderReplaced: self._replaced,  # type: ignore[dict-item]
            pb.OrderRejected: self._sequenced,
            pb.SessionOpened: self._opened,  # type: ignore[dict-item]
            pb.SessionClosed: self._closed,  # type: ignore[dict-item]
            pb.OrdersExpired: self._expired,  # type: ignore[dict-item]
        }

    @classmethod
    def empty(cls, instrument_id: str) -> Book:
        return cls(PREFIX + instrument_id)

    # --- deciding (changes nothing) ---

    def decide(self, command: Command, instrument: Instrument | None) -> list[Message]:
        """The journal entries one sequenced input causes."""
        match command:
            case pb.SubmitOrder():
                return self.submit(command, instrument)
            case pb.CancelOrder():
                return self.cancel(command)
            case pb.ReplaceOrder():
                return self.replace(command, instrument)
            case pb.ExpireOrders():
                return self.expire(command)
            case pb.CloseSession():
                return self.close_session(command)
            case pb.OpenSession():
                return self.open_session(command)

    def submit(self, order: pb.SubmitOrder, instrument: Instrument | None) -> list[Message]:
        """Accept and match one order; returns the journal entries it causes.

        The hot path: each field is read once (a protobuf read is not free) and matching
        starts only when the opposite best price crosses."""
        order_id, side, limit, quantity = order.order_id, order.side, order.price, order.quantity
        account_id, broker_id = order.account_id, order.broker_id
        tif, stp, post_only = order.time_in_force, order.self_trade_prevention, order.post_only
        market = order.order_type == pb.ORDER_TYPE_MARKET
        try:
            if instrument is None or not instrument.instrument_id == order.instrument_id == self.instrument_id:
                raise DomainError("INSTRUMENT_UNKNOWN", f"no instrument {shown(order.instrument_id)}")
            if _IDENTIFIERS.fullmatch(f"{order_id}\n{broker_id}\n{account_id}\n{order.client_order_id}") is None:
                check_identifiers(order)  # names the malformed ones
            if self.orders.get(order_id) is not None:
                raise DomainError("SEQUENCE_DUPLICATE_ID", f"order id {shown(order_id)} was used")
            if self.closed:
                raise DomainError("MARKET_CLOSED", "the session is closed")
            if order.order_type or tif or stp or order.stp_scope or post_only or order.HasField("expire_at"):
                check_order_type(order, self.as_of)  # all unset: a plain GTC limit, nothing to check
            if market:
                instrument.check_side(side)
                best = self.orders.opposite(side).best()
                if best is None:
                    raise DomainError("MARKET_NO_LIQUIDITY", "a market order needs a resting order on the other side")
                limit = instrument.protected(side, best)
            instrument.check(side, limit, quantity)
        except DomainError as error:
            return self.refuse(order, error)
        sequence = self.sequence + 1
        opposite = self.orders.asks if side == BUY else self.orders.bids
        crosses = bool(opposite.keys) and opposite.keys[-1] >= limit * opposite.sign
        if not crosses:
            fills: list[Message] = []
            plan: Plan | None = []
            left, stopped = quantity, False
        elif post_only:
            return self._accepted_then_cancelled(order, sequence, pb.CANCEL_REASON_POST_ONLY_WOULD_TAKE)
        else:
            by_broker = order.stp_scope == pb.STP_SCOPE_BROKER
            fills, plan, left, stopped = self._match(
                order_id, side, limit, quantity, account_id, broker_id, stp, by_broker, sequence, instrument.currency
            )
        if tif == pb.TIME_IN_FORCE_FOK and (left or (plan is None and not fully_traded(fills, quantity))):
            # All or nothing, and a self-trade decrement is not a fill: the plan is dropped.
            return self._accepted_then_cancelled(order, sequence, pb.CANCEL_REASON_FOK_UNFILLED)
        if not left:
            accepted = pb.OrderAccepted(order=order, engine_sequence=sequence, resting_quantity=0)
            self._prepared = (accepted, plan, None)
            return [accepted, *fills]
        if stopped:
            reason: pb.CancelReason.ValueType = pb.CANCEL_REASON_SELF_TRADE
        elif market:
            reason = pb.CANCEL_REASON_MARKET_REMAINDER
        elif tif == pb.TIME_IN_FORCE_IOC:
            reason = pb.CANCEL_REASON_IOC_REMAINDER
        else:
            accepted = pb.OrderAccepted(order=order, engine_sequence=sequence, resting_quantity=left)
            expire_at = nanoseconds(order.expire_at) if tif == pb.TIME_IN_FORCE_GTD else 0
            resting = Order(
                order_id, side, limit, left, account_id, broker_id, tif, expire_at, post_only, stp, order.stp_scope
            )
            self._prepared = (accepted, plan, resting)
            return [accepted, *fills]
        accepted = pb.OrderAccepted(order=order, engine_sequence=sequence, resting_quantity=0)
        return [accepted, *fills, self._cancelled_event(order_id, account_id, side, left, reason, sequence)]

    def cancel(self, command: pb.CancelOrder) -> list[Message]:
        try:
            order = self._owned(command.order_id, command.instrument_id, command.broker_id)
        except DomainError as error:
            return self.refuse(command, error)
        return [
            self._cancelled_event(
                order.order_id,
                order.account_id,
                order.side,
                order.remaining,
                pb.CANCEL_REASON_BROKER,
                self.sequence + 1,
            )
        ]

    def replace(self, command: pb.ReplaceOrder, instrument: Instrument | None) -> list[Message]:
        """Cancel/replace: a smaller quantity at the same price keeps time priority; a new
        price loses it (the order goes to the back of its new level and may trade at once)."""
        try:
            order = self._owned(command.order_id, command.instrument_id, command.broker_id)
            if self.closed:
                raise DomainError("MARKET_CLOSED", "the session is closed")
            if instrument is None or instrument.instrument_id != self.instrument_id:
                raise DomainError("INSTRUMENT_UNKNOWN", f"no instrument {shown(command.instrument_id)}")
            instrument.check(order.side, command.price, command.quantity)
            if command.quantity > order.remaining:
                raise DomainError(
                    "REPLACE_QUANTITY_INCREASE",
                    f"the new quantity may not exceed the open {order.remaining} (a sell's reservation covers no more)",
                )
            if command.price == order.price and command.quantity == order.remaining:
                raise DomainError("REPLACE_UNCHANGED", "the replace changes neither price nor quantity")
        except DomainError as error:
            return self.refuse(command, error)
        sequence = self.sequence + 1
        events: list[Message] = []
        if command.quantity < order.remaining:
            taken = order.remaining - command.quantity
            events.append(self._reduced_event(order, taken, command.quantity, pb.CANCEL_REASON_REPLACED, sequence))
        if command.price == order.price:
            return events
        if order.post_only and self._crosses(order.side, command.price):
            reason = pb.CANCEL_REASON_POST_ONLY_WOULD_TAKE
            cancelled = self._cancelled_event(
                order.order_id, order.account_id, order.side, command.quantity, reason, sequence
            )
            return [*events, cancelled]
        fills, _, left, stopped = self._match(  # the fold reads a replace from its events
            order.order_id,
            order.side,
            command.price,
            command.quantity,
            order.account_id,
            order.broker_id,
            order.stp,
            order.stp_scope == pb.STP_SCOPE_BROKER,
            sequence,
            instrument.currency,
        )
        replaced = pb.OrderReplaced(
            order_id=order.order_id,
            instrument_id=self.instrument_id,
            broker_id=order.broker_id,
            account_id=order.account_id,
            side=pb.Side.ValueType(order.side),
            price=command.price,
            quantity=command.quantity,
            resting_quantity=0 if stopped else left,
            engine_sequence=sequence,
        )
        events += [replaced, *fills]
        if stopped and left:
            reason = pb.CANCEL_REASON_SELF_TRADE
            events.append(self._cancelled_event(order.order_id, order.account_id, order.side, left, reason, sequence))
        return events

    def expire(self, command: pb.ExpireOrders) -> list[Message]:
        """GTD orders whose expire_at <= as_of are cancelled (EXPIRED)."""
        try:
            if command.instrument_id != self.instrument_id:
                raise DomainError("INSTRUMENT_UNKNOWN", f"no instrument {shown(command.instrument_id)}")
            if not command.HasField("as_of"):
                raise DomainError("EXPIRY_TIME_INVALID", "as_of is required")
            as_of = check_time(command.as_of, "EXPIRY_TIME_INVALID")
            if as_of < self.as_of:
                raise DomainError("EXPIRY_TIME_BEHIND", "as_of is before the engine's latest expiry time")
        except DomainError as error:
            return self.refuse(command, error)
        sequence = self.sequence + 1
        ran = pb.OrdersExpired(instrument_id=self.instrument_id, as_of=command.as_of, engine_sequence=sequence)
        expired = self._cancel_where(
            lambda o: o.time_in_force == pb.TIME_IN_FORCE_GTD and o.expire_at <= as_of,
            pb.CANCEL_REASON_EXPIRED,
            sequence,
        )
        return [ran, *expired]

    def close_session(self, command: pb.CloseSession) -> list[Message]:
        """Closing cancels the DAY orders; new orders and replaces wait for the open."""
        try:
            if command.instrument_id != self.instrument_id:
                raise DomainError("INSTRUMENT_UNKNOWN", f"no instrument {shown(command.instrument_id)}")
            if self.closed:
                raise DomainError("SESSION_ALREADY_CLOSED", "the session is already closed")
        except DomainError as error:
            return self.refuse(command, error)
        sequence = self.sequence + 1
        closed = pb.SessionClosed(instrument_id=self.instrument_id, engine_sequence=sequence)
        day = self._cancel_where(
            lambda o: o.time_in_force == pb.TIME_IN_FORCE_DAY, pb.CANCEL_REASON_SESSION_CLOSED, sequence
        )
        return [closed, *day]

    def open_session(self, command: pb.OpenSession) -> list[Message]:
        try:
            if command.instrument_id != self.instrument_id:
                raise DomainError("INSTRUMENT_UNKNOWN", f"no instrument {shown(command.instrument_id)}")
            if not self.closed:
                raise DomainError("SESSION_ALREADY_OPEN", "the session is already open")
        except DomainError as error:
            return self.refuse(command, error)
        return [pb.SessionOpened(instrument_id=self.instrument_id, engine_sequence=self.sequence + 1)]

    def refuse(self, command: Command, error: DomainError) -> list[Message]:
        """The refusal of one input; it takes the next engine sequence like any input."""
        return [refusal(command, error, self.sequence + 1)]

    # --- deciding: the parts ---

    def _owned(self, order_id: str, instrument_id: str, broker_id: str) -> Order:
        order = self.orders.get(order_id) if instrument_id == self.instrument_id else None
        if order is None:
            raise DomainError("ORDER_NOT_RESTING", f"order {shown(order_id)} is not resting")
        if order.broker_id != broker_id:
            raise DomainError("ORDER_NOT_OWNED", "only the broker that placed an order may change it")
        return order

    def _crosses(self, side: int, limit: int) -> bool:
        """Would an order at `limit` take liquidity?"""
        best = self.orders.opposite(side).best()
        return best is not None and (best <= limit if side == BUY else best >= limit)

    def _match(
        self,
        order_id: str,
        side: int,
        limit: int,
        wanted: int,
        account_id: str,
        broker_id: str,
        stp: int,
        by_broker: bool,
        sequence: int,
        currency: str,
    ) -> tuple[list[Message], Plan | None, int, bool]:
        """The taker's trades and self-trade protections against the opposite side, best
        price first, oldest first; returns them, the fills as (maker, quantity) for the
        fold when nothing but trades happened (else None), the quantity left and whether
        self-trade prevention stopped the taker. Reads the book only: each maker is met
        once, so no overlay of what this input already took is needed.

        This is the engine's hot loop: locals over attribute lookups on purpose."""
        events: list[Message] = []
        plan: Plan = []
        protected = False  # self-trade prevention acted: the fold takes the long way
        opposite = self.orders.asks if side == BUY else self.orders.bids
        levels, keys, sign = opposite.levels, opposite.keys, opposite.sign
        bound = limit * sign  # a level crosses while its key >= bound (keys ascend to the best)
        instrument_id = self.instrument_id
        trade = pb.TradeExecuted
        aggressor = pb.Side.ValueType(side)
        n = 0
        for i in range(len(keys) - 1, -1, -1):
            key = keys[i]
            if key < bound:
                break
            price = key * sign
            for maker in levels[price].queue:
                available = maker.remaining
                if not available:
                    continue
                # BROKER scope widens ACCOUNT's: an account is never its own counterparty.
                if maker.account_id == account_id or (by_broker and maker.broker_id == broker_id):
                    protected = True
                    wanted, stop = self._prevent(events, maker, order_id, side, wanted, account_id, stp, sequence)
                    if stop or not wanted:
                        return events, None, wanted, stop
                    continue
                quantity = available if available < wanted else wanted
                n += 1
                if side == BUY:
                    buy_id, buy_account, buy_broker = order_id, account_id, broker_id
                    sell_id, sell_account, sell_broker = maker.order_id, maker.account_id, maker.broker_id
                else:
                    buy_id, buy_account, buy_broker = maker.order_id, maker.account_id, maker.broker_id
                    sell_id, sell_account, sell_broker = order_id, account_id, broker_id
                events.append(
                    trade(
                        trade_id=f"{instrument_id}:{sequence}:{n}",
                        instrument_id=instrument_id,
                        price=price,
                        quantity=quantity,
                        currency=currency,
                        buy_order_id=buy_id,
                        sell_order_id=sell_id,
                        buyer_account_id=buy_account,
                        seller_account_id=sell_account,
                        buyer_broker_id=buy_broker,
                        seller_broker_id=sell_broker,
                        aggressor=aggressor,
                        engine_sequence=sequence,
                        maker_order_id=maker.order_id,
                    )
                )
                plan.append((maker, quantity))
                wanted -= quantity
                if not wanted:
                    return events, None if protected else plan, 0, False
        return events, None if protected else plan, wanted, False

    def _prevent(
        self,
        events: list[Message],
        maker: Order,
        order_id: str,
        side: int,
        wanted: int,
        account_id: str,
        stp: int,
        sequence: int,
    ) -> tuple[int, bool]:
        """A taker met its own resting order: apply the taker's mode. Returns the taker's
        quantity left and whether the taker stops (its rest is then cancelled)."""
        reason = pb.CANCEL_REASON_SELF_TRADE
        if stp in (pb.STP_CANCEL_OLDEST, pb.STP_CANCEL_BOTH):
            events.append(
                self._cancelled_event(maker.order_id, maker.account_id, maker.side, maker.remaining, reason, sequence)
            )
            return wanted, stp == pb.STP_CANCEL_BOTH
        if stp == pb.STP_DECREMENT:
            taken = min(wanted, maker.remaining)
            events.append(self._reduced_event(maker, taken, maker.remaining - taken, reason, sequence))
            taker = Order(order_id, side, 0, wanted, account_id)
            events.append(self._reduced_event(taker, taken, wanted - taken, reason, sequence))
            return wanted - taken, False
        return wanted, True  # CANCEL_NEWEST, also when unset: a self-trade never goes through

    def _cancel_where(self, expires: Callable[[Order], bool], reason: int, sequence: int) -> list[Message]:
        return [
            self._cancelled_event(o.order_id, o.account_id, o.side, o.remaining, reason, sequence)
            for o in self.orders.resting()
            if expires(o)
        ]

    def _accepted_then_cancelled(self, order: pb.SubmitOrder, sequence: int, reason: int) -> list[Message]:
        return [
            pb.OrderAccepted(order=order, engine_sequence=sequence, resting_quantity=0),
            self._cancelled_event(order.order_id, order.account_id, order.side, order.quantity, reason, sequence),
        ]

    def _cancelled_event(
        self, order_id: str, account_id: str, side: int, remaining: int, reason: int, sequence: int
    ) -> pb.OrderCancelled:
        return pb.OrderCancelled(
            order_id=order_id,
            instrument_id=self.instrument_id,
            remaining_quantity=remaining,
            account_id=account_id,
            side=pb.Side.ValueType(side),
            engine_sequence=sequence,
            reason=pb.CancelReason.ValueType(reason),
        )

    def _reduced_event(self, order: Order, taken: int, remaining: int, reason: int, sequence: int) -> pb.OrderReduced:
        return pb.OrderReduced(
            order_id=order.order_id,
            instrument_id=self.instrument_id,
            account_id=order.account_id,
            side=pb.Side.ValueType(order.side),
            quantity=taken,
            remaining_quantity=remaining,
            reason=pb.CancelReason.ValueType(reason),
            engine_sequence=sequence,
        )

    # --- folding what was recorded ---

    def apply(self, event: Message) -> None:
        self._folds[type(event)](event)

    def mutate(self, events: Iterable[Message]) -> None:
        folds = self._folds  # Aggregate.mutate, without a call per event
        for event in events:
            folds[type(event)](event)
            self.version += 1

    def _sequenced(self, event: Message) -> None:
        self.sequence = event.engine_sequence  # type: ignore[attr-defined]

    def _accepted(self, event: pb.OrderAccepted) -> None:
        self.sequence = sequence = event.engine_sequence
        prepared, plan, taker = self._prepared
        if prepared is event and plan is not None:
            self._planned = sequence  # its trades follow, already folded here
            take = self.orders.take
            for maker, quantity in plan:
                take(maker, quantity)
            if taker is not None:
                self.orders.rest(taker)
            return
        o = event.order
        if event.HasField("resting_quantity"):
            self._taker = (o.order_id, sequence)
            rests = event.resting_quantity
        else:
            rests = o.quantity  # older journals: the taker rests whole; its trades reduce it
        if rests:
            self.orders.rest(
                Order(
                    o.order_id,
                    o.side,
                    o.price,
                    rests,
                    o.account_id,
                    o.broker_id,
                    o.time_in_force,
                    nanoseconds(o.expire_at) if o.time_in_force == pb.TIME_IN_FORCE_GTD else 0,
                    o.post_only,
                    o.self_trade_prevention,
                    o.stp_scope,
                )
            )

    def _traded(self, event: pb.TradeExecuted) -> None:
        self.sequence = sequence = event.engine_sequence
        if sequence == self._planned:
            return
        maker = event.maker_order_id
        if maker:
            self.orders.reduce(maker, event.quantity)
        else:  # older journals: both sides rest and both are reduced
            self.orders.reduce(event.buy_order_id, event.quantity)
            self.orders.reduce(event.sell_order_id, event.quantity)

    def _cancelled(self, event: pb.OrderCancelled) -> None:
        self.sequence = event.engine_sequence
        self.orders.cancel(event.order_id)  # a taker's own remainder never rested

    def _reduced(self, event: pb.OrderReduced) -> None:
        self.sequence = event.engine_sequence
        if (event.order_id, event.engine_sequence) != self._taker:
            self.orders.reduce(event.order_id, event.quantity)

    def _replaced(self, event: pb.OrderReplaced) -> None:
        self.sequence = event.engine_sequence
        self._taker = (event.order_id, event.engine_sequence)
        old = self.orders.cancel(event.order_id)
        if old is not None and event.resting_quantity:
            self.orders.rest(old.moved(event.price, event.resting_quantity))

    def _opened(self, event: pb.SessionOpened) -> None:
        self.sequence = event.engine_sequence
        self.closed = False

    def _closed(self, event: pb.SessionClosed) -> None:
        self.sequence = event.engine_sequence
        self.closed = True

    def _expired(self, event: pb.OrdersExpired) -> None:
        self.sequence = event.engine_sequence
        self.as_of = nanoseconds(event.as_of)

    def snapshot(self) -> bytes:
        state = pb.BookSnapshot(
            instrument_id=self.instrument_id,
            sequence=self.sequence,
            orders=[
                pb.BookSnapshot.RestingOrder(
                    order_id=o.order_id,
                    side=pb.Side.ValueType(o.side),
                    price=o.price,
                    remaining_quantity=o.remaining,
                    account_id=o.account_id,
                    broker_id=o.broker_id,
                    time_in_force=pb.TimeInForce.ValueType(o.time_in_force),
                    expire_at=timestamp(o.expire_at) if o.time_in_force == pb.TIME_IN_FORCE_GTD else None,
                    post_only=o.post_only,
                    self_trade_prevention=pb.SelfTradePrevention.ValueType(o.stp),
                    stp_scope=pb.StpScope.ValueType(o.stp_scope),
                )
                for o in self.orders.resting()
            ],
            closed=self.closed,
            as_of=timestamp(self.as_of) if self.as_of else None,
        )
        return state.SerializeToString(deterministic=True)

    @classmethod
    def restore(cls, stream_id: str, state: bytes) -> Self:
        snapshot = pb.BookSnapshot.FromString(state)
        book = cls(stream_id)
        book.sequence = snapshot.sequence
        book.closed = snapshot.closed
        book.as_of = nanoseconds(snapshot.as_of)
        for o in snapshot.orders:  # in priority order, so each queue keeps its time order
            book.orders.rest(
                Order(
                    o.order_id,
                    o.side,
                    o.price,
                    o.remaining_quantity,
                    o.account_id,
                    o.broker_id,
                    o.time_in_force,
                    nanoseconds(o.expire_at),
                    o.post_only,
                    o.self_trade_prevention,
                    o.stp_scope,
                )
            )
        return book


def refusal(command: Command, error: DomainError, engine_sequence: int = 0) -> pb.OrderRejected:
    """The refusal of a sequenced command; a well-formed order travels with it."""
    order = command if isinstance(command, pb.SubmitOrder) and well_formed(command) else None
    if isinstance(command, pb.SubmitOrder | pb.CancelOrder | pb.ReplaceOrder):
        order_id, broker_id = command.order_id, command.broker_id
    else:
        order_id = broker_id = ""  # time and session inputs name no order
    return rejected(order_id, command.instrument_id, broker_id, error, engine_sequence=engine_sequence, order=order)


def rejected(
    order_id: str,
    instrument_id: str,
    broker_id: str,
    error: DomainError,
    *,
    engine_sequence: int = 0,
    order: pb.SubmitOrder | None = None,
) -> pb.OrderRejected:
    """A refusal for the journal; malformed ids are blanked so they are never stored or relayed."""
    return pb.OrderRejected(
        order_id=order_id if is_identifier(order_id) else "",
        instrument_id=instrument_id if is_identifier(instrument_id) else "",
        broker_id=broker_id if is_identifier(broker_id) else "",
        code=error.code,
        reason=error.reason,
        evidence=error.evidence,
        engine_sequence=engine_sequence,
        order=order,
    )
