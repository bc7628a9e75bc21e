"""Which jurisdictions an event concerns: their regulators see it in their audit stream."""

from __future__ import annotations

from google.protobuf.message import Message

from services.compliance.domain.facts import Facts

_PARTY_FIELDS = {"jurisdiction", "host_party", "from_jurisdiction", "to_jurisdiction", "party"}


def concerned(event: Message, facts: Facts) -> set[str]:
    found: set[str] = set()
    _walk(event, facts, found)
    return found


def _walk(message: Message, facts: Facts, found: set[str]) -> None:
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None:
            children = value if descriptor.is_repeated else [value]
            for child in children:
                _walk(child, facts, found)
        elif descriptor.name in _PARTY_FIELDS and isinstance(value, str):
            found.add(value)
        elif descriptor.name.endswith("account_id") and isinstance(value, str) and value in facts.accounts:
            found.add(facts.accounts[value])
