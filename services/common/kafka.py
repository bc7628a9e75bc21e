"""The one Kafka producer each service uses (outbox relay and dead letters)."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer


def idempotent_producer(bootstrap: str, client_id: str) -> AIOKafkaProducer:
    # Idempotence forces acks=all and keeps per-partition order across retries.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        linger_ms=2,
    )
