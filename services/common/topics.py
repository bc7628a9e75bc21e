"""Every Kafka topic of tonne, with its partition count and who reads and writes it, in
one place.

Keys: instrument for matching, account for registry, trade for settlement (account for its
commands and cash), jurisdiction for audit. Each consumed topic has a dead-letter twin "<topic>.dlq".
The broker's ACLs (deploy/kafka_security.py) are derived from `consumed` and `produced`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from services.common.kafka import KafkaAccess

SERVICES = ("registry", "matching", "settlement", "compliance")
# Jurisdictions with a national-registry channel and an audit stream.
JURISDICTIONS = ("CN", "JP", "TH", "CH", "SG", "SE")

REGISTRY_COMMANDS = "registry.commands"
REGISTRY_EVENTS = "registry.events"
MATCHING_ORDERS = "matching.orders"
MATCHING_EVENTS = "matching.events"
SETTLEMENT_COMMANDS = "settlement.commands"
SETTLEMENT_COVERS = "settlement.covers"  # answers to a buy order's ReserveCash
SETTLEMENT_EVENTS = "settlement.events"
COMPLIANCE_REQUESTS = "compliance.requests"
COMPLIANCE_DECISIONS = "compliance.decisions"


def registry_inbound(jurisdiction: str) -> str:
    return f"registry.inbound.{jurisdiction}"


def registry_outbound(jurisdiction: str) -> str:
    return f"registry.outbound.{jurisdiction}"


def audit(jurisdiction: str) -> str:
    return f"audit.{jurisdiction}"


def dead_letter(topic: str) -> str:
    return f"{topic}.dlq"


# What each service's consumer subscribes to (its `handlers`; the runtime refuses to start
# a service whose handlers name a topic missing here) and what its outbox sends.
_CONSUMES: dict[str, tuple[str, ...]] = {
    "registry": (
        REGISTRY_COMMANDS,
        COMPLIANCE_DECISIONS,
        SETTLEMENT_EVENTS,  # the adjustments applied: the blocks' corresponding-adjustment status
        *(registry_inbound(j) for j in JURISDICTIONS),
    ),
    "matching": (MATCHING_ORDERS, REGISTRY_EVENTS, SETTLEMENT_COVERS),
    "settlement": (SETTLEMENT_COMMANDS, MATCHING_EVENTS, COMPLIANCE_DECISIONS, REGISTRY_EVENTS),
    "compliance": (REGISTRY_EVENTS, MATCHING_EVENTS, SETTLEMENT_EVENTS, COMPLIANCE_REQUESTS, COMPLIANCE_DECISIONS),
}
_SENDS: dict[str, tuple[str, ...]] = {
    "registry": (REGISTRY_EVENTS, COMPLIANCE_REQUESTS, *(registry_outbound(j) for j in JURISDICTIONS)),
    "matching": (MATCHING_ORDERS, MATCHING_EVENTS, REGISTRY_COMMANDS, SETTLEMENT_COMMANDS),
    # Settlement tells each party's national registry of the adjustments it owes.
    "settlement": (
        COMPLIANCE_REQUESTS,
        REGISTRY_COMMANDS,
        SETTLEMENT_EVENTS,
        SETTLEMENT_COVERS,
        *(registry_outbound(j) for j in JURISDICTIONS),
    ),
    "compliance": (COMPLIANCE_DECISIONS, *(audit(j) for j in JURISDICTIONS)),
}


def consumed(service: str) -> tuple[str, ...]:
    """Unprefixed topics `service` reads."""
    return _CONSUMES[service]


def produced(service: str) -> tuple[str, ...]:
    """Unprefixed topics `service` writes: its outbox's and the dead letters of what it reads."""
    return _SENDS[service] + tuple(dead_letter(topic) for topic in _CONSUMES[service])


def check_consumes(service: str, handled: Iterable[str]) -> None:
    """Refuse a service whose handlers read a topic its Kafka ACLs do not grant."""
    missing = sorted(set(handled) - set(_CONSUMES.get(service, ())))
    if missing:
        raise RuntimeError(f"{service} handles {missing}, which services/common/topics.py does not list")


def partition_counts() -> dict[str, int]:
    """Topic name (unprefixed) -> partitions. DLQs have one partition each."""
    counts = {
        REGISTRY_COMMANDS: 3,
        REGISTRY_EVENTS: 3,
        MATCHING_ORDERS: 3,
        MATCHING_EVENTS: 3,
        SETTLEMENT_COMMANDS: 3,
        SETTLEMENT_COVERS: 3,
        SETTLEMENT_EVENTS: 3,
        COMPLIANCE_REQUESTS: 3,
        COMPLIANCE_DECISIONS: 3,
    }
    for jurisdiction in JURISDICTIONS:
        counts[registry_inbound(jurisdiction)] = 1
        counts[registry_outbound(jurisdiction)] = 1
        # One partition keeps each jurisdiction's audit chain in order.
        counts[audit(jurisdiction)] = 1
    for topic in list(counts):
        if not topic.startswith("audit.") and not topic.startswith("registry.outbound."):
            counts[dead_letter(topic)] = 1
    return counts


async def ensure_topics(kafka: KafkaAccess, prefix: str = "") -> None:
    """Create every topic that does not exist yet; safe to run again (needs CREATE: the admin)."""
    admin = AIOKafkaAdminClient(**kafka.options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name=prefix + name, num_partitions=partitions, replication_factor=1)
            for name, partitions in partition_counts().items()
            if prefix + name not in existing
        ]
        if wanted:
            # Another starter may win the race; the topics exist either way.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
    finally:
        await admin.close()
