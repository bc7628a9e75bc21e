"""Mandates as matching observes them: a broker may act for an account only while the
registry holds a mandate naming both. A fact from Kafka can carry anything, so one is
checked before it is stored."""

from __future__ import annotations

import re

from services.common.errors import DomainError
from services.common.inputs import is_identifier
from tonne.v1 import registry_pb2 as rpb

_PARTY = re.compile(r"[A-Z]{2}")


def check_mandate(event: rpb.MandateGranted | rpb.MandateRevoked) -> None:
    """Refuse (the record is dead-lettered with MANDATE_INVALID) a mandate fact whose ids
    are not identifiers or whose jurisdiction is not an ISO 3166 alpha-2 code."""
    problems = [
        f"{name} is not an identifier"
        for name in ("mandate_id", "account_id", "broker_id")
        if not is_identifier(getattr(event, name))
    ]
    if _PARTY.fullmatch(event.jurisdiction) is None:
        problems.append("jurisdiction is not an ISO 3166 alpha-2 code")
    if problems:
        raise DomainError("MANDATE_INVALID", f"observed {event.DESCRIPTOR.name} is malformed", problems)


def not_mandated(broker_id: str, account_id: str) -> DomainError:
    """The refusal of an order for an account the broker may not act for. The same for an
    account that does not exist: matching keeps no accounts, and the answer reveals none."""
    return DomainError(
        "BROKER_NOT_MANDATED",
        f"broker {broker_id!r} holds no mandate for account {account_id!r}",
        http_status=403,
    )
