"""Which jurisdictions an event concerns: their regulators see it in their audit stream."""

from __future__ import annotations

from google.protobuf.message import Message

from services.compliance.domain.facts import Facts

_PARTY_FIELDS = {"jurisdiction", "host_party", "from_jurisdiction", "to_jurisdiction", "party"}


def concerned(event: Message, facts: Facts) -> set[str]:
    """Parties the event names, directly or through the accounts in `facts`."""
    found: set[str] = set()
    for name, value in _strings(event):
        if name in _PARTY_FIELDS:
            found.add(value)
        elif name.endswith("account_id") and value in facts.accounts:
            found.add(facts.accounts[value])
    return found


def account_ids(event: Message) -> set[str]:
    """Every account the event names: what `concerned` needs to know of `Facts`."""
    return {value for name, value in _strings(event) if name.endswith("account_id")}


def _strings(message: Message) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None:
            for child in value if descriptor.is_repeated else [value]:
                found += _strings(child)
        elif isinstance(value, str):
            found.append((descriptor.name, value))
    return found
