"""Kafka's own authority (docs/trust.md, deploy/kafka_security.py), on the running stack's
broker: every principal (each service, national-registry-TH, regulator-TH, a wrong
password, no credentials) tries to produce to, consume from and describe every topic of a
deployment, and to use and describe every principal's consumer group. What its ACLs grant
succeeds; everything else is refused by the broker with an authorization error (or, without
valid credentials, the connection is refused), and the data a forbidden read would have
returned is not returned. The suite prints the counts: attempts, successes = 0.

The table runs on a deployment of its own (topics and ACLs provisioned exactly as
`prepare` does for the stack, under another prefix), so its probe records and consumer
groups never touch the services' topics; the services' own principals are checked on the
running stack.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    GroupCoordinatorNotAvailableError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    for_code,
)
from pydantic import ValidationError

from deploy.kafka_security import KafkaSecurity, national_registry_user, provision, regulator_user, service_user
from services.common import topics
from services.common.kafka import KafkaAccess, idempotent_producer
from services.common.settings import Settings
from tests.support import eventually

NATIONAL, REGULATOR = national_registry_user("TH"), regulator_user("TH")
WRONG_PASSWORD, NO_CREDENTIALS = "wrong password", "no credentials"
SERVICE_USERS = {service_user(name): name for name in topics.SERVICES}
AUTHENTICATED = (*SERVICE_USERS, NATIONAL, REGULATOR)
# What the broker answers a refused action with, by action.
REFUSAL: dict[str, type[KafkaError]] = {
    "produce": TopicAuthorizationFailedError,
    "consume": TopicAuthorizationFailedError,
    "describe": TopicAuthorizationFailedError,
    "join group": GroupAuthorizationFailedError,
    "group offsets": GroupAuthorizationFailedError,
    # An idempotent producer needs WRITE on some topic (KIP-679) or IDEMPOTENT_WRITE.
    "idempotent producer": ClusterAuthorizationFailedError,
    "sasl handshake": SaslAuthenticationFailed,
    "metadata": KafkaConnectionError,  # only refused to a client without valid credentials
}
DEADLINE_S = 30.0


def may(principal: str, action: str, topic: str) -> bool:
    """The rules of docs/trust.md for a topic (unprefixed)."""
    if principal in SERVICE_USERS:
        reads = topic in topics.consumed(SERVICE_USERS[principal])
        writes = topic in topics.produced(SERVICE_USERS[principal])
    elif principal == NATIONAL:
        reads, writes = topic == topics.registry_outbound("TH"), topic == topics.registry_inbound("TH")
    elif principal == REGULATOR:
        reads, writes = topic == topics.audit("TH"), False
    else:
        reads = writes = False
    return {"produce": writes, "consume": reads, "describe": reads or writes}[action]


def own_group(prefix: str, principal: str) -> str:
    """A consumer group the principal may use: a service's own, a party's under its prefix."""
    if principal in SERVICE_USERS:
        return f"{prefix}tonne-{SERVICE_USERS[principal]}"
    return f"{prefix}{principal}-acl-test"


def marker(topic: str) -> bytes:
    return f"marker of {topic}: only its readers may see this".encode()


def probe_value(principal: str, topic: str) -> bytes:
    return f"written by {principal} to {topic}".encode()


@dataclass
class Tally:
    attempts: int = 0  # forbidden actions tried
    successes: int = 0  # of them, not refused (or returning data)
    allowed: int = 0  # allowed actions that succeeded
    refusals: collections.Counter[str] = field(default_factory=collections.Counter)
    breaches: list[str] = field(default_factory=list)

    async def judge(self, principal: str, action: str, target: str, allowed: bool, run: Awaitable[Any]) -> Any:
        """Run one action; an allowed one must succeed, a forbidden one must be refused with
        the expected error. Returns what an allowed action returned."""
        where = f"{principal}: {action} {target}"
        expected: type[KafkaError] = REFUSAL[action]
        if principal in (WRONG_PASSWORD, NO_CREDENTIALS) and action != "sasl handshake":
            # A client's bootstrap fails: its login is refused, or the SASL listener drops a
            # client that skips the handshake.
            expected = KafkaConnectionError
        if allowed:
            result = await run
            self.allowed += 1
            return result
        self.attempts += 1
        try:
            leaked = await run
        except expected as refused:
            self.refusals[type(refused).__name__] += 1
            return None
        self.successes += 1
        self.breaches.append(f"{where}: not refused, returned {leaked!r:.200}")
        return None


async def consume(kafka: KafkaAccess, topic: str, group: str) -> list[bytes]:
    """Read `topic` from the beginning in `group` until its marker arrives."""
    consumer = AIOKafkaConsumer(
        topic, **kafka.options(), group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    seen: list[bytes] = []
    try:
        await consumer.start()  # the group's coordinator and the topic's metadata: both authorized

        async def marker_read() -> bool:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen.extend(record.value or b"" for record in records)
            return marker(topic) in seen

        await eventually(marker_read, f"the marker of {topic}", timeout=DEADLINE_S)
    finally:
        await consumer.stop()
    return seen


async def describe(admin: AIOKafkaAdminClient, topic: str) -> list[int]:
    [found] = await admin.describe_topics([topic])
    if found["error_code"]:
        raise for_code(found["error_code"])(topic)
    return [p["partition"] for p in found["partitions"]]


async def group_offsets(admin: AIOKafkaAdminClient, group: str) -> dict[TopicPartition, Any]:
    async def answered() -> dict[TopicPartition, Any] | None:
        try:
            return {**await admin.list_consumer_group_offsets(group)} or {TopicPartition("none", -1): None}
        except GroupCoordinatorNotAvailableError:  # a new broker elects the coordinator first
            return None

    return await eventually(answered, f"the offsets of {group}", timeout=DEADLINE_S)


async def handshake(kafka: KafkaAccess) -> bool:
    """One connection through the SASL handshake, as `kafka`'s principal."""
    options = {k: v for k, v in kafka.options().items() if k != "bootstrap_servers"}
    host, port = kafka.bootstrap.rsplit(":", 1)
    conn = await create_conn(host, int(port), **options)
    conn.close()
    return True


async def cluster_metadata(kafka: KafkaAccess) -> list[Any]:
    client = AIOKafkaClient(**kafka.options())
    try:
        await client.bootstrap()
        return list((await client.fetch_all_metadata()).brokers())
    finally:
        await client.close()


async def contents(admin: KafkaAccess, prefix: str, names: list[str]) -> dict[str, list[bytes]]:
    """Every record of the deployment's topics, read by the admin to the end of each partition."""
    consumer = AIOKafkaConsumer(**admin.options(), enable_auto_commit=False)
    await consumer.start()
    try:
        counts = topics.partition_counts()
        partitions = [TopicPartition(prefix + name, p) for name in names for p in range(counts[name])]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: dict[str, list[bytes]] = {name: [] for name in names}

        async def at_end() -> bool:
            for tp, records in (await consumer.getmany(timeout_ms=500, max_records=5000)).items():
                found[tp.topic.removeprefix(prefix)].extend(r.value or b"" for r in records)
            return all([await consumer.position(tp) >= end for tp, end in ends.items()])

        await eventually(at_end, "the admin to read every topic to its end", timeout=DEADLINE_S)
    finally:
        await consumer.stop()
    return found


@pytest.fixture
async def deployment(kafka_security: KafkaSecurity | None, topic_prefix: str) -> AsyncIterator[tuple[str, list[str]]]:
    """Topics and ACLs of a deployment of its own, each topic holding its marker record."""
    assert kafka_security is not None, "the session's broker must run with SASL (tests/conftest.py)"
    prefix = topic_prefix + "acl."
    await topics.ensure_topics(kafka_security.admin, prefix)
    await provision(kafka_security, prefix)
    names = sorted(topics.partition_counts())
    producer = AIOKafkaProducer(**kafka_security.admin.options(), enable_idempotence=True)
    await producer.start()
    try:
        for name in names:
            await producer.send_and_wait(prefix + name, marker(prefix + name), key=b"marker")
    finally:
        await producer.stop()
    yield prefix, names


async def idempotent_init(kafka: KafkaAccess) -> bool:
    producer = idempotent_producer(kafka, "acl-test")
    try:
        await producer.start()
    finally:
        await producer.stop()
    return True


async def send_once(kafka: KafkaAccess, topic: str, value: bytes) -> Any:
    producer = AIOKafkaProducer(**kafka.options())
    try:
        await producer.start()
        return await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def describe_once(kafka: KafkaAccess, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(**kafka.options())
    try:
        await admin.start()
        return await describe(admin, topic)
    finally:
        await admin.close()


async def principal_table(
    tally: Tally, user: str, kafka: KafkaAccess, prefix: str, names: list[str], groups: dict[str, str]
) -> None:
    """Every action of one authenticated principal on every topic and group."""
    writes_somewhere = any(may(user, "produce", name) for name in names)
    await tally.judge(user, "sasl handshake", kafka.bootstrap, True, handshake(kafka))
    await tally.judge(user, "metadata", kafka.bootstrap, True, cluster_metadata(kafka))
    await tally.judge(user, "idempotent producer", "init", writes_somewhere, idempotent_init(kafka))
    producer = AIOKafkaProducer(**kafka.options(), acks="all", request_timeout_ms=10_000)
    admin = AIOKafkaAdminClient(**kafka.options())
    await producer.start()
    await admin.start()
    try:
        for name in names:
            topic = prefix + name
            sent = producer.send_and_wait(topic, probe_value(user, name), key=b"probe")
            await tally.judge(user, "produce", topic, may(user, "produce", name), sent)
            read = consume(kafka, topic, groups[user])
            seen = await tally.judge(user, "consume", topic, may(user, "consume", name), read)
            assert seen is None or marker(topic) in seen, f"{user} read {topic} without its marker"
            await tally.judge(user, "describe", topic, may(user, "describe", name), describe(admin, topic))
        readable = next(prefix + name for name in names if may(user, "consume", name))
        for group in groups.values():
            mine = group == groups[user]
            await tally.judge(user, "join group", group, mine, consume(kafka, readable, group))
            await tally.judge(user, "group offsets", group, mine, group_offsets(admin, group))
    finally:
        await admin.close()
        await producer.stop()


async def test_each_principal_may_do_on_kafka_only_what_its_acls_grant(
    running_stack: Any, kafka_security: KafkaSecurity | None, deployment: tuple[str, list[str]]
) -> None:
    assert kafka_security is not None
    prefix, names = deployment
    bootstrap = kafka_security.admin.bootstrap
    tally = Tally()
    # Every principal's group, and those of another jurisdiction's registry and regulator.
    parties = (*AUTHENTICATED, national_registry_user("CN"), regulator_user("CN"))
    groups = {user: own_group(prefix, user) for user in parties}
    for user in AUTHENTICATED:
        await principal_table(tally, user, kafka_security.access(user), prefix, names, groups)

    # Without valid credentials nothing works, not even on the national registry's channel.
    inbound, outbound = prefix + topics.registry_inbound("TH"), prefix + topics.registry_outbound("TH")
    strangers = {
        WRONG_PASSWORD: KafkaAccess(bootstrap, NATIONAL, kafka_security.password("not the password")),
        NO_CREDENTIALS: KafkaAccess(bootstrap),
    }
    for user, kafka in strangers.items():
        if kafka.authenticated:  # without credentials there is no handshake to fail
            await tally.judge(user, "sasl handshake", bootstrap, False, handshake(kafka))
        await tally.judge(user, "metadata", bootstrap, False, cluster_metadata(kafka))
        await tally.judge(user, "produce", inbound, False, send_once(kafka, inbound, probe_value(user, inbound)))
        await tally.judge(user, "consume", outbound, False, consume(kafka, outbound, groups[NATIONAL]))
        await tally.judge(user, "describe", outbound, False, describe_once(kafka, outbound))

    # What the broker holds: each marker and exactly the allowed probes; no forbidden write landed.
    written = await contents(kafka_security.admin, prefix, names)
    for name in names:
        expected = {marker(prefix + name)} | {probe_value(u, name) for u in AUTHENTICATED if may(u, "produce", name)}
        assert sorted(written[name]) == sorted(expected), name

    # The running stack: each service runs as its own principal and, with it, is ready
    # (its consumer holds partitions of what it reads; its producer answers).
    async with httpx.AsyncClient(timeout=10) as client:
        for name in running_stack.processes.names:
            assert running_stack.processes.kafka_access(name).username == service_user(name.split("-")[0])
            response = await client.get(f"{running_stack.urls[name]}/readyz")
            assert response.status_code == 200, (name, response.text)

    print(
        f"\nkafka acl: {len(AUTHENTICATED) + len(strangers)} principals x {len(names)} topics and {len(groups)} "
        f"groups; forbidden attempts: {tally.attempts}, successes: {tally.successes}; allowed actions that "
        f"succeeded: {tally.allowed}; refusals: {dict(tally.refusals)}"
    )
    assert tally.successes == 0, tally.breaches
    assert tally.attempts >= 500


def test_production_refuses_a_service_without_kafka_credentials() -> None:
    base = {"service": "matching", "kafka_bootstrap": "127.0.0.1:9092", "database_url": "postgresql://x/y"}
    with pytest.raises(ValidationError, match="production needs Kafka credentials"):
        Settings.model_validate({**base, "TONNE_ENV": "production", "TONNE_KAFKA_USERNAME": ""})
    named = {"TONNE_KAFKA_USERNAME": "tonne-matching", "TONNE_KAFKA_PASSWORD": "derived"}
    settings = Settings.model_validate({**base, "TONNE_ENV": "production", **named})
    assert settings.kafka.options()["security_protocol"] == "SASL_PLAINTEXT"
    # Outside production, no username is a PLAINTEXT client (an external broker without SASL).
    plain = Settings.model_validate({**base, "TONNE_ENV": "development", "TONNE_KAFKA_USERNAME": ""})
    assert plain.kafka.options() == {"bootstrap_servers": "127.0.0.1:9092"}
