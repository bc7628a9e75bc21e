"""The shared kernel against a real PostgreSQL and a real Kafka broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from google.protobuf.message import Message

from services.common import eventstore, outbox, topics
from services.common.consumer import Consumer
from services.common.db import connect_pool, migrate
from services.common.envelope import Context, unwrap, wrap
from services.common.kafka import KafkaAccess, idempotent_producer
from services.common.outbox import OutboxRelay
from services.common.topics import ensure_topics
from services.common.unit_of_work import UnitOfWork, UnitOfWorkFactory
from tests.support import eventually, publish_raw, read_topic
from tonne.v1 import registry_pb2 as rpb
from tonne.v1.envelope_pb2 import DeadLetter, Envelope


def envelope(account_id: str) -> Envelope:
    command = rpb.OpenAccount(account_id=account_id, holder="h", jurisdiction="TH", type=rpb.HOLDING)
    return wrap(command, aggregate_id=account_id, context=Context.new("test"), occurred_at=datetime.now(UTC))


async def no_projections(conn: asyncpg.Connection, envelope: Envelope, event: Message) -> None:
    """The kernel tests record events without projecting them."""


@pytest.fixture
async def pool(fresh_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(fresh_database_url, "registry")
    pool = await connect_pool(fresh_database_url, "registry")
    yield pool
    await pool.close()


async def test_event_store_refuses_a_stale_writer(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await eventstore.append(conn, "s", 0, [envelope("a"), envelope("b")]) == 2
        with pytest.raises(eventstore.ConcurrencyError):
            await eventstore.append(conn, "s", 1, [envelope("c")])
        assert [e.aggregate_id for e in await eventstore.read_stream(conn, "s")] == ["a", "b"]
        assert [e.aggregate_id for e in await eventstore.read_stream(conn, "s", after_version=1)] == ["b"]


async def test_migrations_are_idempotent(fresh_database_url: str) -> None:
    first = await migrate(fresh_database_url, "compliance")
    assert first[:3] == ["kernel/0001_kernel.sql", "kernel/0002_aggregates.sql", "compliance/0001_audit.sql"]
    assert await migrate(fresh_database_url, "compliance") == []


async def test_outbox_relay_publishes_in_order_once(
    pool: asyncpg.Pool, kafka_access: KafkaAccess, topic_prefix: str
) -> None:
    prefix = topic_prefix + "outbox."
    await ensure_topics(kafka_access, prefix)
    sent = [envelope(f"acct-{n}") for n in range(5)]
    async with pool.acquire() as conn, conn.transaction():
        for e in sent:
            await outbox.enqueue(conn, topics.REGISTRY_EVENTS, "same-key", e)
    producer = idempotent_producer(kafka_access, "test-relay")
    await producer.start()
    try:
        relay = OutboxRelay(pool, producer, prefix, "registry")
        assert await relay.publish_pending() == 5
        assert await relay.publish_pending() == 0  # marked published: never sent twice
    finally:
        await producer.stop()
    records = await read_topic(kafka_access.bootstrap, prefix + topics.REGISTRY_EVENTS, lambda rs: len(rs) >= 5)
    assert [unwrap(r.value)[0].event_id for r in records] == [e.event_id for e in sent]


async def test_consumer_applies_once_and_parks_what_it_cannot_apply(
    pool: asyncpg.Pool, kafka_access: KafkaAccess, topic_prefix: str
) -> None:
    kafka_bootstrap = kafka_access.bootstrap
    prefix = topic_prefix + "consumer."
    await ensure_topics(kafka_access, prefix)
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE applied (account_id text)")

    poisoned = 0

    async def handler(uow: UnitOfWork, env: Envelope, command: Message) -> None:
        nonlocal poisoned
        assert isinstance(command, rpb.OpenAccount)
        await uow.conn.execute("INSERT INTO applied VALUES ($1)", command.account_id)
        if command.account_id == "poison":
            poisoned += 1
            raise ValueError("this record always fails")  # after a write: it must roll back

    producer = idempotent_producer(kafka_access, "test-consumer")
    await producer.start()
    consumer = Consumer(
        name="kernel-test",
        kafka=kafka_access,
        topic_prefix=prefix,
        pool=pool,
        producer=producer,
        handlers={topics.REGISTRY_COMMANDS: handler},
        unit_of_work=UnitOfWorkFactory(pool, no_projections),
    )
    await consumer.start()
    try:
        topic = prefix + topics.REGISTRY_COMMANDS
        good = envelope("good")
        await publish_raw(kafka_bootstrap, topic, b"k", good.SerializeToString())
        await publish_raw(kafka_bootstrap, topic, b"k", good.SerializeToString())  # redelivered / republished
        await publish_raw(kafka_bootstrap, topic, b"k", b"\xff not protobuf")
        await publish_raw(kafka_bootstrap, topic, b"k", envelope("poison").SerializeToString())
        await publish_raw(kafka_bootstrap, topic, b"k", envelope("after").SerializeToString())

        async def applied() -> list[str] | None:
            rows = [r["account_id"] for r in await pool.fetch("SELECT account_id FROM applied")]
            return rows if "after" in rows else None

        # The partition moves past both bad records and applies the good ones once each.
        assert await eventually(applied, "the records after the bad ones to apply") == ["good", "after"]
        letters = await read_topic(kafka_bootstrap, topics.dead_letter(topic), lambda rs: len(rs) >= 2)
        parked = [DeadLetter.FromString(r.value) for r in letters]
        assert [(d.error_code, d.origin_topic, d.origin_offset) for d in parked] == [
            ("ENVELOPE_UNDECODABLE", topic, 2),
            ("HANDLER_FAILED", topic, 3),
        ]
        assert parked[0].origin_value == b"\xff not protobuf" and parked[1].consumer == "kernel-test"
        assert poisoned == 4  # with its batch once, then alone three times; each attempt rolled back
    finally:
        await consumer.stop()
        await producer.stop()
