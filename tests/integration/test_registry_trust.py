"""The registry's trust boundary on a real PostgreSQL: a national registry's channel acts
only for its own jurisdiction (records go through the kernel's consumer, topic and all),
and every HTTP endpoint answers each role as its authority and tenancy say, forbidden
reads returning no data and never revealing whether an account exists."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from google.protobuf.message import Message

from services.common import topics
from services.common.auth import DevIssuer
from services.common.consumer import Consumer
from services.common.db import connect_pool, migrate
from services.common.envelope import Context, wrap
from services.common.kafka import KafkaAccess
from services.common.runtime import Kernel
from services.registry import sql_index
from services.registry.domain.blocks import Holding, IndexConflict, Move, Status
from services.registry.service import Registry
from services.registry.sql_index import moved
from tests.integration.test_registry_state import app_for, issued, run, screen, settings_for
from tests.unit.factories import issuance, loa, open_account
from tonne.v1 import registry_pb2 as pb
from tonne.v1.envelope_pb2 import CommandRejected, Envelope

CHANNEL_CODES = {"CHANNEL_JURISDICTION_MISMATCH", "COMMAND_NOT_ALLOWED_ON_CHANNEL"}


@pytest.fixture
async def kernel(fresh_database_url: str) -> AsyncIterator[Kernel]:
    await migrate(fresh_database_url, "registry")
    pool = await connect_pool(fresh_database_url, "registry")
    yield Kernel(settings_for(fresh_database_url), pool)
    await pool.close()


class Channels:
    """Records delivered to the registry's handlers by the kernel's consumer, as fetched
    from `registry.inbound.<JUR>` (no broker: the records are made here)."""

    def __init__(self, registry: Registry, producer: AIOKafkaProducer) -> None:
        # The producer is only used to park dead letters, which these records never are.
        self.registry = registry
        self.consumer = Consumer(
            name="registry",
            kafka=KafkaAccess("127.0.0.1:1"),
            topic_prefix="",
            pool=registry.pool,
            producer=producer,
            handlers=registry.handlers,
            unit_of_work=registry.unit_of_work,
        )
        self.offsets = itertools.count()

    async def send(self, topic: str, *commands: Message) -> list[str]:
        envelopes = [
            wrap(c, aggregate_id="national", context=Context.new("national"), occurred_at=datetime.now(UTC))
            for c in commands
        ]
        records = [
            ConsumerRecord(topic, 0, next(self.offsets), 0, 0, b"k", e.SerializeToString(), None, 1, 1, [])
            for e in envelopes
        ]
        return await self.consumer.process(records)


async def rejections(kernel: Kernel) -> list[tuple[str, str]]:
    """(command type, code) of every recorded refusal, in order; each also queued on registry.events."""
    rows = await kernel.pool.fetch(
        "SELECT event_id, envelope FROM events WHERE type = $1 ORDER BY position", CommandRejected.DESCRIPTOR.full_name
    )
    found = []
    for row in rows:
        refused = CommandRejected.FromString(Envelope.FromString(row["envelope"]).payload)
        found.append((refused.command_type.removeprefix("tonne.v1."), refused.code))
    published = await kernel.pool.fetchval("SELECT count(*) FROM outbox WHERE topic = $1", topics.REGISTRY_EVENTS)
    assert published >= len(found)
    return found


async def test_a_national_channel_acts_only_for_its_own_jurisdiction(kernel: Kernel) -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    try:
        await national_channels(kernel, Channels(Registry(kernel), producer))
    finally:
        await producer.stop()


async def national_channels(kernel: Kernel, channels: Channels) -> None:
    registry = channels.registry
    th, cn = topics.registry_inbound("TH"), topics.registry_inbound("CN")
    # Each channel sets up its own books.
    own = await channels.send(
        cn,
        open_account("CN-GOV", "CN", pb.GOVERNMENT),
        pb.RecordAuthorization(
            authorization_id="LOA-CN-1",
            host_party="CN",
            quantity=1000,
            use=pb.NDC,
            first_transfer=pb.AT_FIRST_INTERNATIONAL_TRANSFER,
            vintage_from=2021,
            vintage_to=2030,
        ),
        issuance("I-CN-1", "CN-GOV", 1, 1000, namespace="CCER-CN", host="CN", standard=pb.CCER),
    )
    assert own == ["applied"] * 3
    await channels.send(th, open_account("TH-GOV", "TH", pb.GOVERNMENT), loa(), issuance("I-TH-1", "TH-GOV", 1, 500))
    # The transaction log approves both issuances (only on its own channel: compliance.decisions).
    await screen(registry, "I-CN-1", "CN-GOV")
    await screen(registry, "I-TH-1", "TH-GOV")
    # The venue reserves CN units (registry.commands): a TH message must not move them.
    await run(registry, pb.ReserveUnits(reservation_id="R-CN", account_id="CN-GOV", quantity=100))
    assert await rejections(kernel) == []
    async with kernel.pool.acquire() as conn:
        before = await registry.state.hash(conn)

    forged = [
        open_account("CN-SQUAT", "CN"),
        open_account("CN-GOV", "TH"),  # an existing CN account, claimed as TH's
        pb.RecordAuthorization(
            authorization_id="LOA-CN-FORGED",
            host_party="CN",
            quantity=10**6,
            use=pb.NDC,
            first_transfer=pb.AT_FIRST_INTERNATIONAL_TRANSFER,
            vintage_from=2021,
            vintage_to=2030,
        ),
        issuance("I-F-1", "CN-GOV", 5000, 6000, namespace="CCER-CN", host="CN", standard=pb.CCER),
        issuance("I-F-2", "TH-GOV", 5000, 6000, namespace="CCER-CN", host="CN", standard=pb.CCER),
        issuance("I-F-3", "CN-GOV", 5000, 6000, host="TH"),
        pb.GrantMandate(mandate_id="M-F", account_id="CN-GOV", broker_id="BROKER-X"),
        pb.ReserveUnits(reservation_id="R-F", account_id="CN-GOV", quantity=10),
        pb.ReserveUnits(reservation_id="R-F2", account_id="TH-GOV", quantity=10),
        pb.TransferUnits(transfer_id="T-F", reservation_id="R-CN", to_account_id="TH-GOV", quantity=100),
        pb.ReleaseReservation(reservation_id="R-CN", quantity=100),
    ]
    outcomes = await channels.send(th, *forged)
    assert outcomes == ["applied"] * len(forged)  # consumed, each as a recorded refusal
    refused = await rejections(kernel)
    assert [type(c).__name__ for c in forged] == [kind for kind, _ in refused]
    assert {code for _, code in refused} <= CHANNEL_CODES, refused
    print(f"\nforged national-channel commands: {len(forged)} attempted, 0 accepted")

    # Nothing changed: accounts, authorizations, blocks, reservations, mandates, holdings.
    async with kernel.pool.acquire() as conn:
        assert await registry.state.hash(conn) == before
    assert await kernel.pool.fetchval("SELECT count(*) FROM accounts WHERE account_id = 'CN-SQUAT'") == 0
    reserved = await kernel.pool.fetchval(
        "SELECT sum(serial_end - serial_start + 1) FROM blocks WHERE reservation_id = 'R-CN'"
    )
    assert reserved == 100
    # The TH channel still acts for TH.
    assert await channels.send(th, pb.GrantMandate(mandate_id="M-TH", account_id="TH-GOV", broker_id="B-1")) == [
        "applied"
    ]
    assert await kernel.pool.fetchval("SELECT jurisdiction FROM mandates WHERE mandate_id = 'M-TH'") == "TH"


async def test_the_index_refuses_an_event_that_does_not_match_it(kernel: Kernel) -> None:
    registry = Registry(kernel)
    await run(registry, open_account("TH-GOV", "TH", pb.GOVERNMENT))
    await issued(registry, issuance("I-1", "TH-GOV", 1, 100))
    reserved = Holding("TH-GOV", Status.RESERVED, "R-X")
    async with kernel.pool.acquire() as conn:
        with pytest.raises(IndexConflict):  # not held as the event says
            async with conn.transaction():
                await sql_index.run(
                    conn, moved("released", "R-X", "TH-GOV", 10, [Move("JCM-TH", 1, 10, reserved, Holding("TH-GOV"))])
                )
        with pytest.raises(IndexConflict):  # beyond the container
            async with conn.transaction():
                await sql_index.run(
                    conn, moved("reserved", "R-X", "TH-GOV", 10, [Move("JCM-TH", 95, 104, Holding("TH-GOV"), reserved)])
                )
    blocks = await kernel.pool.fetch("SELECT serial_start, serial_end, status FROM blocks")
    assert [tuple(r) for r in blocks] == [(1, 100, "held")]


# --- the HTTP API: each role x each endpoint ---

ROLES: dict[str, tuple[list[str], str]] = {
    "operator": (["operator"], ""),
    "registry-operator:CN": (["registry-operator:CN"], ""),
    "registry-operator:TH": (["registry-operator:TH"], ""),
    "regulator:CN": (["regulator:CN"], ""),
    "regulator:TH": (["regulator:TH"], ""),
    "broker (mandated)": (["broker"], "BROKER-CN"),
    "broker (other)": (["broker"], "BROKER-X"),
    "national-registry:CN": (["national-registry:CN"], ""),
    "anonymous": ([], ""),
}
OPENS = {"operator", "registry-operator:CN"}
KEEPS = {"operator", "registry-operator:CN"}
READS = {"operator", "registry-operator:CN", "regulator:CN", "broker (mandated)"}
# Roles that can never call the endpoint: 403 (401 without a token); the others with a
# tenancy that does not cover the account: 404 ACCOUNT_UNKNOWN.
NEVER_OPENS = {"regulator:CN", "regulator:TH", "broker (mandated)", "broker (other)", "national-registry:CN"}
NEVER_READS = {"national-registry:CN"}
NEVER_KEEPS = {"regulator:CN", "regulator:TH", "broker (mandated)", "broker (other)", "national-registry:CN"}


def expected(role: str, allowed: set[str], never: set[str], ok: int, tenancy_miss: int = 404) -> int:
    if role == "anonymous":
        return 401
    if role in allowed:
        return ok
    return 403 if role in never else tenancy_miss


@pytest.fixture
async def api(kernel: Kernel, dev_issuer: DevIssuer) -> AsyncIterator[tuple[Registry, dict[str, httpx.AsyncClient]]]:
    registry = Registry(kernel)
    for command in (
        open_account("CN-GOV", "CN", pb.GOVERNMENT),
        issuance("I-CN-1", "CN-GOV", 1, 1000, namespace="CCER-CN", host="CN", standard=pb.CCER),
        pb.GrantMandate(mandate_id="M-CN", account_id="CN-GOV", broker_id="BROKER-CN"),
    ):
        [event] = await run(registry, command)
        assert not isinstance(event, CommandRejected), event
    await screen(registry, "I-CN-1", "CN-GOV")
    transport = httpx.ASGITransport(app=app_for(registry))
    clients = {}
    for role, (roles, broker_id) in ROLES.items():
        headers = {"authorization": f"Bearer {dev_issuer.mint(role, roles, broker_id)}"} if roles else {}
        clients[role] = httpx.AsyncClient(transport=transport, base_url="http://registry", headers=headers)
    yield registry, clients
    for client in clients.values():
        await client.aclose()


def assert_no_data(response: httpx.Response, account_id: str) -> None:
    """A refusal carries its code and nothing of the account."""
    body = response.json()
    assert set(body) == {"code", "reason", "evidence"}, body
    if response.status_code == 404:
        # Word for word what an account that does not exist gets.
        assert body == {"code": "ACCOUNT_UNKNOWN", "reason": f"no account {account_id!r}", "evidence": []}
    else:
        assert body["code"] in ("AUTH_UNAUTHENTICATED", "AUTH_FORBIDDEN"), body
        assert "CN-GOV" not in response.text and "holder" not in response.text


async def test_each_role_gets_exactly_what_its_authority_and_tenancy_allow(
    kernel: Kernel, api: tuple[Registry, dict[str, httpx.AsyncClient]]
) -> None:
    _, clients = api
    attempts = forbidden = 0
    for n, (role, client) in enumerate(clients.items()):
        # Reads of an existing account (and of one that does not exist).
        for path in ("/accounts/CN-GOV", "/accounts/CN-GOV/blocks"):
            response = await client.get(path)
            want = expected(role, READS, NEVER_READS, 200)
            assert response.status_code == want, (role, path, response.text)
            if want == 200:
                body = response.json()
                items = body["holdings"] if path == "/accounts/CN-GOV" else body["items"]
                assert [(b["start"], b["end"]) for b in items] == [(1, 1000)]
            else:
                forbidden += 1
                assert_no_data(response, "CN-GOV")
            attempts += 1
            missing = await client.get(path.replace("CN-GOV", "CN-NOBODY"))
            assert missing.status_code == (want if want in (401, 403) else 404), (role, path)

        # Opening an account of CN.
        account_id = f"CN-NEW-{n}"
        opened = await client.post("/accounts", json={"account_id": account_id, "holder": "h", "jurisdiction": "CN"})
        want = expected(role, OPENS, NEVER_OPENS, 201, tenancy_miss=403)
        assert opened.status_code == want, (role, opened.text)
        attempts += 1
        if want == 201:
            assert opened.json()["account_id"] == account_id
        else:
            forbidden += 1
            assert_no_data(opened, account_id)
        created = await kernel.pool.fetchval("SELECT count(*) FROM accounts WHERE account_id = $1", account_id)
        assert created == (want == 201)

        # Granting and revoking a mandate on the CN account.
        mandate_id = f"M-{n}"
        body = {"mandate_id": mandate_id, "broker_id": "BROKER-Z"}
        granted = await client.post("/accounts/CN-GOV/mandates", json=body)
        want = expected(role, KEEPS, NEVER_KEEPS, 201)
        assert granted.status_code == want, (role, granted.text)
        attempts += 1
        if want == 201:
            assert granted.json() == {**body, "account_id": "CN-GOV", "jurisdiction": "CN"}
            assert (await client.post("/accounts/CN-GOV/mandates", json=body)).status_code == 201  # idempotent
        else:
            forbidden += 1
            assert_no_data(granted, "CN-GOV")
        exists = await kernel.pool.fetchval("SELECT count(*) FROM mandates WHERE mandate_id = $1", mandate_id)
        assert exists == (want == 201)
        # Revoking M-CN (the mandated broker's): allowed roles revoke a fresh grant instead.
        target = mandate_id if want == 201 else "M-CN"
        revoked = await client.delete(f"/accounts/CN-GOV/mandates/{target}")
        assert revoked.status_code == (200 if want == 201 else want), (role, revoked.text)
        attempts += 1
        if want == 201:
            assert revoked.json()["broker_id"] == "BROKER-Z"
            again = await client.delete(f"/accounts/CN-GOV/mandates/{target}")
            assert (again.status_code, again.json()["code"]) == (404, "MANDATE_UNKNOWN")
        else:
            forbidden += 1
            assert_no_data(revoked, "CN-GOV")
        still = await kernel.pool.fetchval("SELECT broker_id FROM mandates WHERE mandate_id = 'M-CN'")
        assert still == "BROKER-CN"
    print(f"\nregistry API: {attempts} attempts, {forbidden} forbidden, 0 of them succeeded")
    assert forbidden > 20


async def test_a_revoked_mandate_ends_the_brokers_reads(
    kernel: Kernel, api: tuple[Registry, dict[str, httpx.AsyncClient]]
) -> None:
    _, clients = api
    broker, keeper = clients["broker (mandated)"], clients["registry-operator:CN"]
    assert (await broker.get("/accounts/CN-GOV")).status_code == 200
    assert (await keeper.delete("/accounts/CN-GOV/mandates/M-CN")).status_code == 200
    gone = await broker.get("/accounts/CN-GOV")
    assert gone.status_code == 404
    assert_no_data(gone, "CN-GOV")
    # A mandate on another account gives nothing on this one.
    await keeper.post("/accounts", json={"account_id": "CN-OTHER", "holder": "h", "jurisdiction": "CN"})
    body: dict[str, Any] = {"mandate_id": "M-OTHER", "broker_id": "BROKER-CN"}
    assert (await keeper.post("/accounts/CN-OTHER/mandates", json=body)).status_code == 201
    assert (await broker.get("/accounts/CN-OTHER")).status_code == 200
    assert (await broker.get("/accounts/CN-GOV/blocks")).status_code == 404
    # The mandate id is the account's: reusing it elsewhere is a conflict.
    reused = await keeper.post("/accounts/CN-GOV/mandates", json=body)
    assert (reused.status_code, reused.json()["code"]) == (409, "MANDATE_EXISTS")


async def test_every_operation_declares_its_roles_and_refusals(kernel: Kernel) -> None:
    document = app_for(Registry(kernel)).openapi()
    operations = [(path, method, op) for path, item in document["paths"].items() for method, op in item.items()]
    # 9 on accounts, mandates, retirements, expiries and their proposals, 15 of the Union Registry's controls
    # (closing, block freezes), 2 on external transfers, 3 on carbon-inclusion manifests, 1 transaction history,
    # 2 on authorizations.
    assert len(operations) == 32
    for path, method, operation in operations:
        [requirement] = operation["security"]
        assert set(requirement["oauth2"]) <= {"operator", "registry-operator", "regulator", "broker"}, path
        expected = {"401", "403", "422", "404" if "{account_id}" in path else "422"}
        if (path, method) == ("/accounts", "post"):
            expected.add("409")
        assert expected <= set(operation["responses"]), (path, method)
