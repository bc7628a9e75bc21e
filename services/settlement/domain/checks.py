"""What settlement accepts from other services' topics: a record from Kafka can carry
anything, so identifiers, parties and numbers are checked before they are stored or used
as stream ids. A refusal raises a DomainError with a stable code (the consumer parks the
record on the dead-letter topic with that code) and changes nothing."""

from __future__ import annotations

import re

from services.common.errors import DomainError
from services.common.inputs import INT64_MAX, is_identifier, is_party
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb

_CURRENCY = re.compile(r"[A-Z]{3}")


def _refuse(code: str, problems: list[str], what: str) -> None:
    if problems:
        raise DomainError(code, f"{what} cannot be settled as sent", problems[:20])


def check_trade(trade: mpb.TradeExecuted) -> None:
    """Ids are identifiers (a broker id may be empty: then no broker reads the settlement);
    quantity and price positive and within int64 (bigint)."""
    problems = [
        f"{name} is not an identifier"
        for name in ("trade_id", "instrument_id", "seller_account_id", "buyer_account_id", "sell_order_id", "currency")
        if not is_identifier(getattr(trade, name))
    ]
    problems += [
        f"{name} is not an identifier"
        for name in ("buyer_broker_id", "seller_broker_id")
        if getattr(trade, name) and not is_identifier(getattr(trade, name))
    ]
    if not 0 < trade.quantity <= INT64_MAX:
        problems.append("quantity must be in 1..2^63-1")
    if trade.price <= 0:
        problems.append("price must be positive")
    _refuse("TRADE_INVALID", problems, "the trade")


def check_cover(command: spb.ReserveCash | spb.ReleaseCash) -> None:
    """A buy order's cover as matching asks for it: ids, a currency code, amounts in range."""
    problems = [
        f"{name} is not an identifier"
        for name in ("order_id", "account_id")
        if not is_identifier(getattr(command, name))
    ]
    if not _CURRENCY.fullmatch(command.currency):
        problems.append("currency is not an ISO 4217 code")
    if isinstance(command, spb.ReserveCash) and not (command.amount > 0 and 0 < command.quantity <= INT64_MAX):
        problems.append("amount and quantity must be positive and within 2^63-1")
    _refuse("COVER_INVALID", problems, "the cover")


def check_authorization(authorization: rpb.RecordAuthorization | rpb.AuthorizationRevoked) -> None:
    problems = []
    if not is_identifier(authorization.authorization_id):
        problems.append("authorization_id is not an identifier")
    if not is_party(authorization.host_party):
        problems.append("host_party is not an ISO 3166 alpha-2 code")
    if isinstance(authorization, rpb.RecordAuthorization) and authorization.quantity > INT64_MAX:
        problems.append("quantity beyond 2^63-1")
    _refuse("AUTHORIZATION_INVALID", problems, "the authorization")


def check_blocks(blocks: list[rpb.SerialBlock]) -> None:
    """Blocks settlement records (first-transferred serials) or adjusts: storable and sane."""
    problems = []
    total = 0
    for i, block in enumerate(blocks):
        attributes = block.attributes
        if not is_identifier(block.namespace):
            problems.append(f"blocks[{i}].namespace is not an identifier")
        if not block.start <= block.end <= INT64_MAX:
            problems.append(f"blocks[{i}] must have start <= end <= 2^63-1")
        if not is_party(attributes.host_party):
            problems.append(f"blocks[{i}].host_party is not an ISO 3166 alpha-2 code")
        if attributes.authorization_id and not is_identifier(attributes.authorization_id):
            problems.append(f"blocks[{i}].authorization_id is not an identifier")
        total += block.end - block.start + 1
    if total > INT64_MAX:
        problems.append("the blocks hold more than 2^63-1 units")
    _refuse("TRANSFER_INVALID", problems, "the transfer")


def check_account(event: rpb.AccountOpened) -> None:
    problems = []
    if not is_identifier(event.account_id):
        problems.append("account_id is not an identifier")
    if not is_party(event.jurisdiction):
        problems.append("jurisdiction is not an ISO 3166 alpha-2 code")
    _refuse("ACCOUNT_INVALID", problems, "the account")


def check_mandate(event: rpb.MandateGranted | rpb.MandateRevoked) -> None:
    problems = [
        f"{name} is not an identifier"
        for name in ("mandate_id", "account_id", "broker_id")
        if not is_identifier(getattr(event, name))
    ]
    if not is_party(event.jurisdiction):
        problems.append("jurisdiction is not an ISO 3166 alpha-2 code")
    _refuse("MANDATE_INVALID", problems, "the mandate")
