"""Every Kafka topic of tonne, with its partition count, in one place.

Keys: instrument for matching, account for registry, trade for settlement,
jurisdiction for audit. Each consumed topic has a dead-letter twin "<topic>.dlq".
"""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

# Jurisdictions with a national-registry channel and an audit stream.
JURISDICTIONS = ("CN", "JP", "TH", "CH", "SG", "SE")

REGISTRY_COMMANDS = "registry.commands"
REGISTRY_EVENTS = "registry.events"
MATCHING_ORDERS = "matching.orders"
MATCHING_EVENTS = "matching.events"
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


def partition_counts() -> dict[str, int]:
    """Topic name (unprefixed) -> partitions. DLQs have one partition each."""
    counts = {
        REGISTRY_COMMANDS: 3,
        REGISTRY_EVENTS: 3,
        MATCHING_ORDERS: 3,
        MATCHING_EVENTS: 3,
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


async def ensure_topics(bootstrap: str, prefix: str = "") -> None:
    """Create every topic that does not exist yet; safe to run again."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
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
