"""The test infrastructure itself works: a real Kafka round trip and real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.common.kafka import KafkaAccess

DEADLINE_S = 30


async def test_kafka_round_trip(kafka_access: KafkaAccess, topic_prefix: str) -> None:
    topic = f"{topic_prefix}infra-check-{uuid.uuid4().hex[:8]}"
    key, value = b"k-" + uuid.uuid4().bytes, b"v-" + uuid.uuid4().bytes

    admin = AIOKafkaAdminClient(**kafka_access.options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        assert topic in await admin.list_topics()
    finally:
        await admin.close()

    producer = AIOKafkaProducer(**kafka_access.options(), enable_idempotence=True)
    await producer.start()
    try:
        sent = await asyncio.wait_for(producer.send_and_wait(topic, value=value, key=key), DEADLINE_S)
    finally:
        await producer.stop()
    assert sent.topic == topic
    assert sent.offset == 0

    consumer = AIOKafkaConsumer(
        topic,
        **kafka_access.options(),
        group_id=f"{topic_prefix}infra-check",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), DEADLINE_S)
    finally:
        await consumer.stop()
    assert (record.topic, record.offset) == (topic, 0)
    assert record.key == key
    assert record.value == value


async def test_postgres_select_one(fresh_database_url: str) -> None:
    conn = await asyncpg.connect(fresh_database_url)
    try:
        assert await conn.fetchval("select 1") == 1
        expected_db = urlsplit(fresh_database_url).path.lstrip("/")
        assert expected_db.startswith("t_")
        assert await conn.fetchval("select current_database()") == expected_db
    finally:
        await conn.close()


async def test_postgres_create_insert_select(fresh_database_url: str) -> None:
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await conn.execute("create table lots (id bigint primary key, tonnes numeric not null)")
        await conn.executemany("insert into lots (id, tonnes) values ($1, $2)", [(1, 10), (2, 32)])
        rows = await conn.fetch("select id, tonnes from lots order by id")
        assert [(r["id"], int(r["tonnes"])) for r in rows] == [(1, 10), (2, 32)]
        assert await conn.fetchval("select sum(tonnes) from lots") == 42
    finally:
        await conn.close()


async def test_fresh_databases_are_isolated(fresh_database_url: str) -> None:
    """A fresh database starts empty: no table leaks in from other tests."""
    conn = await asyncpg.connect(fresh_database_url)
    try:
        count = await conn.fetchval("select count(*) from information_schema.tables where table_schema = 'public'")
        assert count == 0
    finally:
        await conn.close()
