"""The registry's service layer on a real PostgreSQL: the SQL block index agrees with the
memory index, a failed unit of work changes nothing, the live state hash equals replay
from zero and from snapshots, concurrent issuances into one namespace serialise, and the
HTTP API pages blocks and refuses hostile input with a 4xx."""

from __future__ import annotations

import asyncio
import datetime
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.protobuf.message import Message

from services.common.auth import DevIssuer
from services.common.db import connect_pool, migrate
from services.common.envelope import Context, unwrap
from services.common.errors import DomainError
from services.common.replay import replay
from services.common.runtime import Kernel
from services.common.settings import Settings
from services.registry.api import router
from services.registry.domain.memory import MemoryRegistry
from services.registry.policies import issuance_policies
from services.registry.service import COMPLIANCE, Registry
from services.registry.sql_index import COLUMNS, block_of
from tests.unit.factories import issuance, loa, open_account
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as pb
from tonne.v1.envelope_pb2 import CommandRejected

ACCOUNTS = ("TH-GOV", "TH-CO", "CH-BUYER", "JP-BUYER")
NAMESPACES = ("JCM-TH", "VCU-TH")


def settings_for(dsn: str, snapshot_every: int = 3) -> Settings:
    fields: dict[str, Any] = {
        "service": "registry",
        "kafka_bootstrap": "127.0.0.1:1",  # never contacted: no consumer, no relay
        "database_url": dsn,
        "TONNE_SNAPSHOT_EVERY": snapshot_every,  # settable by its alias only
    }
    return Settings.model_validate(fields)


@pytest.fixture
async def kernel(fresh_database_url: str) -> AsyncIterator[Kernel]:
    await migrate(fresh_database_url, "registry")
    pool = await connect_pool(fresh_database_url, "registry")
    yield Kernel(settings_for(fresh_database_url), pool)
    await pool.close()


async def run(registry: Registry, command: Message) -> list[Message]:
    async with registry.unit_of_work() as uow:
        return await registry.execute(uow, command, Context.new("test"))


async def screen(
    registry: Registry, proposal_id: str, account_id: str, verdict: cpb.Verdict.ValueType = cpb.APPROVED
) -> list[Message]:
    """The transaction log's answer to a proposal, as it arrives on compliance.decisions."""
    failed = [] if verdict == cpb.APPROVED else [cpb.RuleResult(code="DOUBLE_USE", evidence="JCM-TH:1-400 used")]
    decision = cpb.ProposalScreened(proposal_id=proposal_id, account_id=account_id, verdict=verdict, results=failed)
    async with registry.unit_of_work() as uow:
        return await registry.execute(uow, decision, Context.new("compliance"), channel=COMPLIANCE)


async def issued(registry: Registry, command: pb.RecordIssuance) -> list[Message]:
    """An issuance proposed and approved by the transaction log: what the approval records
    (the refusal, if it was refused when asked)."""
    [proposal] = await run(registry, command)
    if not isinstance(proposal, pb.ScreenProposal):
        return [proposal]
    return await screen(registry, proposal.proposal_id, proposal.account_id)


def setup_commands() -> list[Message]:
    return [
        open_account("TH-GOV", "TH", pb.GOVERNMENT),
        open_account("TH-CO", "TH"),
        open_account("CH-BUYER", "CH"),
        open_account("JP-BUYER", "JP"),
        open_account("SG-SPARE", "SG"),  # empty: closed by a random command, then refused units
        # The A6.4 mechanism's accounts its issuance rules name (policies/issuance/a6_4.json).
        open_account("UN-A64-PENDING", "UN", pb.PENDING),
        open_account("UN-A64-SOP-AF", "UN", pb.SHARE_OF_PROCEEDS),
        open_account("UN-A64-OMGE", "UN", pb.OMGE_CANCELLATION),
        loa(),
    ]


def memory_registry() -> MemoryRegistry:
    """The memory registry under the issuance rules the service loads."""
    return MemoryRegistry(issuance=issuance_policies())


def random_command(rng: random.Random, memory: MemoryRegistry, n: int) -> Message:
    """Mostly valid commands, some refused, some hostile."""
    roll = rng.random()
    reservations = sorted(r for a in memory.accounts.values() for r in a.reservations)
    if rng.random() < 0.02:
        return pb.CloseAccount(account_id=rng.choice([*ACCOUNTS, "SG-SPARE"]), reason="left", by="operator")
    if rng.random() < 0.08:
        mandate, account = f"M-{rng.randint(1, 4)}", rng.choice(ACCOUNTS)
        if rng.random() < 0.6:
            return pb.GrantMandate(mandate_id=mandate, account_id=account, broker_id=rng.choice(["B-1", "B-2"]))
        return pb.RevokeMandate(mandate_id=mandate, account_id=account)
    if rng.random() < 0.15:
        return control_command(rng, memory, n)
    if rng.random() < 0.3 and (answered := answer(rng, memory)) is not None:
        return answered
    if roll < 0.3:
        start = rng.randint(1, 3000)
        command = issuance(
            f"I-{n}",
            rng.choice(ACCOUNTS[:2]),
            start,
            start + rng.randint(0, 150),
            namespace=rng.choice(NAMESPACES),
            vintage=rng.choice([2023, 2024]),
            authorization_id=rng.choice(["", "LOA-TH-1"]),
        )
        kind = rng.random()
        if kind < 0.15:  # A6.4: through the pending account, levies taken
            command.block.namespace, command.block.attributes.standard = "A64-TH", pb.A6_4ER
        elif kind < 0.3 and command.block.namespace == "JCM-TH":  # JCM split with the host's government
            command.accounts["host_government"] = rng.choice(["TH-GOV", "TH-CO"])
        if rng.random() < 0.3:  # the same plant's periods, issued once across programmes
            plant = rng.choice(["TH-Chonburi", "TH-Rayong"])
            command.fingerprint.CopyFrom(
                pb.ProjectFingerprint(host_party="TH", location=plant, capacity_kw=12_000, operator="Solar Co")
            )
            month = rng.randint(1, 12)
            command.period.start, command.period.end = f"2024-{month:02d}-01", f"2024-{month:02d}-28"
        return command
    if roll < 0.55 or not reservations:
        return pb.ReserveUnits(
            reservation_id=f"R-{n}",
            account_id=rng.choice(ACCOUNTS),
            quantity=rng.randint(1, 120),
            selector=pb.UnitSelector(
                host_party="TH",
                vintage=rng.choice([0, 2024]),
                authorized_for=rng.choice([pb.AUTHORIZED_USE_UNSPECIFIED, pb.NDC]),
            ),
        )
    rid = rng.choice(reservations)
    quantity = rng.randint(1, 80)
    if roll < 0.7:
        return pb.ReleaseReservation(reservation_id=rid, quantity=quantity)
    if roll < 0.97:
        to = rng.choice([*ACCOUNTS, "SG-SPARE"])
        return pb.TransferUnits(transfer_id=f"T-{n}", reservation_id=rid, to_account_id=to, quantity=quantity)
    return rng.choice(
        [
            open_account("X" * 100_000, "TH"),
            open_account("BAD", "A'"),
            pb.ReleaseReservation(reservation_id="R-none", quantity=1),
            issuance(f"I-{n}", "TH-GOV", 2**63 - 1, 2**64 - 1),
        ]
    )


def answer(rng: random.Random, memory: MemoryRegistry) -> Message | None:
    """The transaction log's answer to a pending proposal, or its timing out; None if
    nothing is pending."""
    screening = sorted((p, a.account_id) for a in memory.accounts.values() for p in a.screening)
    if not screening:
        return None
    proposal_id, owner = rng.choice(screening)
    if rng.random() < 0.1:
        memory.now += timedelta(hours=1)
        return pb.ExpireProposal(proposal_id=proposal_id, account_id=owner)
    verdict = cpb.APPROVED if rng.random() < 0.8 else cpb.REJECTED
    return cpb.ProposalScreened(proposal_id=proposal_id, account_id=owner, verdict=verdict)


def control_command(rng: random.Random, memory: MemoryRegistry, n: int) -> Message:
    """A Union Registry control or a retirement; time passes now and then."""
    account, other = rng.choice(ACCOUNTS), rng.choice(ACCOUNTS)
    scheduled = sorted((t, a.account_id) for a in memory.accounts.values() for t in a.scheduled)
    if scheduled and rng.random() < 0.3:
        memory.now += timedelta(hours=rng.choice([1, 30]))
        transfer_id, owner = rng.choice(scheduled)
        if rng.random() < 0.7:
            return pb.ExecuteTransfer(transfer_id=transfer_id, account_id=owner)
        return pb.CancelTransfer(transfer_id=transfer_id, account_id=owner, reason="holder's request", by="bob")
    pending = sorted(
        (a.account_id, t) for a in memory.accounts.values() for t, e in a.trusted.items() if e.effective_at is None
    )
    if pending and rng.random() < 0.4:
        owner, trusted = rng.choice(pending)
        return pb.ApproveTrustedAccount(account_id=owner, trusted_account_id=trusted, by=rng.choice(["alice", "bob"]))
    if rng.random() < 0.2:
        memory.now += timedelta(days=8)
    freeze = rng.random() < 0.5
    return rng.choice(
        [
            (pb.FreezeAccount if freeze else pb.UnfreezeAccount)(account_id=account, reason="review", by="reg"),
            # Every unit here is of one project: frozen only briefly.
            (pb.FreezeProject if freeze and rng.random() < 0.3 else pb.UnfreezeProject)(
                project_id="TH-FSOLAR-1", host_party="TH", reason="review", by="reg"
            ),
            pb.ProposeTrustedAccount(account_id=account, trusted_account_id=other, by="alice"),
            pb.RemoveTrustedAccount(account_id=account, trusted_account_id=other, by="bob"),
            pb.SetTransferLimit(account_id=account, per_transfer=rng.choice([0, 60]), by="alice"),
            pb.RequestTransfer(
                transfer_id=f"X-{n}", account_id=account, to_account_id=other, quantity=rng.randint(1, 90), by="alice"
            ),
            pb.RetireUnits(
                retirement_id=f"RT-{n}",
                account_id=rng.choice(ACCOUNTS[:2]),
                quantity=rng.randint(1, 60),
                beneficiary="Acme",
                purpose="claim",
                cancel=rng.random() < 0.3,
                use=pb.CLAIM_VOLUNTARY,
                claim_year=2025,
            ),
        ]
    )


def outcome(events: list[Message]) -> list[bytes]:
    return [e.SerializeToString(deterministic=True) for e in events]


async def drive(registry: Registry, memory: MemoryRegistry, commands: list[Message]) -> None:
    """Each command through the service and the memory registry: same events or same refusal."""
    for command in commands:
        # The transaction log answers on its own channel (compliance.decisions).
        channel = COMPLIANCE if isinstance(command, cpb.ProposalScreened) else ""
        async with registry.unit_of_work() as uow:  # on the memory registry's clock
            events = await registry.execute(uow, command, Context.new("test"), channel=channel, now=memory.now)
        try:
            expected = memory.execute(command)
        except DomainError as error:
            [rejected] = events
            assert isinstance(rejected, CommandRejected), (command, rejected)
            assert (rejected.code, list(rejected.evidence)) == (error.code, error.evidence)
        else:
            assert outcome(events) == outcome(expected), command


async def sql_blocks(pool: asyncpg.Pool) -> list[tuple[Any, ...]]:
    rows = await pool.fetch(f"SELECT {COLUMNS} FROM blocks ORDER BY namespace, serial_start")
    return [_shape(block_of(r)) for r in rows]


class _Any:
    def __eq__(self, other: object) -> bool:
        return True


ANY_KEY: Any = _Any()


def _shape(b: Any) -> tuple[Any, ...]:
    return (b.namespace, b.start, b.end, b.account_id, b.status, b.reservation_id, b.units.key)


async def test_the_sql_index_agrees_with_the_memory_index(kernel: Kernel) -> None:
    registry, memory = Registry(kernel), memory_registry()
    rng = random.Random(7)
    await drive(registry, memory, setup_commands())
    commands = []
    for n in range(400):
        command = random_command(rng, memory, n)
        commands.append(command)
        await drive(registry, memory, [command])
    assert sum(isinstance(c, pb.TransferUnits) for c in commands) > 20
    expected = [_shape(b) for ns in memory.index.namespaces() for b in memory.index.blocks(ns)]
    assert await sql_blocks(kernel.pool) == expected
    for account in ACCOUNTS:
        totals = dict(
            await kernel.pool.fetch(
                "SELECT status, sum(quantity)::bigint FROM holdings WHERE account_id = $1 GROUP BY status", account
            )
        )
        for status in ("held", "reserved"):
            in_memory = sum(b.quantity for b in memory.index.holdings(account) if b.status == status)
            assert totals.get(status, 0) == in_memory
    mandates = await kernel.pool.fetch("SELECT mandate_id, account_id, broker_id FROM mandates ORDER BY mandate_id")
    assert [tuple(r) for r in mandates] == sorted(
        (m, a.account_id, b) for a in memory.accounts.values() for m, b in a.mandates.items()
    )
    assert mandates and sum(isinstance(c, pb.GrantMandate) for c in commands) > 5
    # Nothing oversize was stored.
    assert await kernel.pool.fetchval("SELECT max(length(stream_id)) FROM events") <= 100
    # The controls and retirements were exercised, not only offered.
    recorded = dict(await kernel.pool.fetch("SELECT type, count(*) FROM events GROUP BY type"))
    exercised = (
        "AccountFrozen",
        "TrustedAccountApproved",
        "TransferScheduled",
        "UnitsRetired",
        "UnitsAllocated",
        "ScreenProposal",
        "ProposalRejected",
    )
    assert await kernel.pool.fetchval("SELECT count(*) FROM issuance_fingerprints") > 0
    refusals = await kernel.pool.fetch("SELECT envelope FROM events WHERE type = 'tonne.v1.CommandRejected'")
    codes = {unwrap(r["envelope"])[1].code for r in refusals}  # type: ignore[attr-defined]
    assert "DOUBLE_ISSUANCE_PROJECT_PERIOD" in codes
    for kind in (*exercised, "AccountClosed"):
        assert recorded.get(f"tonne.v1.{kind}", 0) > 0, (kind, recorded)


async def test_serials_at_the_top_of_int64_move_and_merge(kernel: Kernel) -> None:
    top = 2**63 - 1
    registry, memory = Registry(kernel), memory_registry()
    await drive(registry, memory, setup_commands())
    await drive(
        registry,
        memory,
        [
            issuance("I-TOP", "TH-GOV", top - 99, top),
            cpb.ProposalScreened(proposal_id="I-TOP", account_id="TH-GOV", verdict=cpb.APPROVED),
            pb.ReserveUnits(reservation_id="R-1", account_id="TH-GOV", quantity=100),
            pb.ReleaseReservation(reservation_id="R-1", quantity=30),  # the highest: [top - 29, top]
            pb.TransferUnits(transfer_id="T-1", reservation_id="R-1", to_account_id="TH-CO", quantity=70),
            pb.ReserveUnits(reservation_id="R-2", account_id="TH-GOV", quantity=30),
            pb.TransferUnits(transfer_id="T-2", reservation_id="R-2", to_account_id="TH-CO", quantity=30),
        ],
    )
    assert await sql_blocks(kernel.pool) == [("JCM-TH", top - 99, top, "TH-CO", "held", "", ANY_KEY)]


async def test_a_failed_unit_of_work_changes_nothing(kernel: Kernel) -> None:
    registry = Registry(kernel)
    for command in setup_commands():
        await run(registry, command)
    await issued(registry, issuance("I-1", "TH-GOV", 1, 1000, authorization_id="LOA-TH-1"))
    await run(registry, pb.ReserveUnits(reservation_id="R-1", account_id="TH-GOV", quantity=400))
    async with kernel.pool.acquire() as conn:
        before = await registry.state.hash(conn)
    blocks_before = await sql_blocks(kernel.pool)
    async with kernel.pool.acquire() as conn:
        version_before = (await registry.accounts.get(conn, "account-TH-GOV")).version

    transfer = pb.TransferUnits(transfer_id="T-1", reservation_id="R-1", to_account_id="CH-BUYER", quantity=100)
    with pytest.raises(RuntimeError):
        async with registry.unit_of_work() as uow:
            [moved] = await registry.execute(uow, transfer, Context.new("test"))
            assert isinstance(moved, pb.UnitsTransferred)
            raise RuntimeError("the handler fails after recording")

    async with kernel.pool.acquire() as conn:
        assert await registry.state.hash(conn) == before
        account = await registry.accounts.get(conn, "account-TH-GOV")
        assert account.version == version_before and account.reservations == {"R-1": 400}
    assert await sql_blocks(kernel.pool) == blocks_before
    # The next command works, on the same state.
    [moved] = await run(registry, transfer)
    assert isinstance(moved, pb.UnitsTransferred)
    assert [(b.start, b.end) for b in moved.blocks] == [(1, 100)]


async def test_live_hash_equals_replay_from_zero_and_from_snapshots(kernel: Kernel) -> None:
    registry, memory = Registry(kernel), memory_registry()
    rng = random.Random(11)
    await drive(registry, memory, setup_commands())
    for n in range(150):
        await drive(registry, memory, [random_command(rng, memory, n)])
    assert await kernel.pool.fetchval("SELECT count(*) FROM snapshots") > 0
    async with kernel.pool.acquire() as conn:
        live = await registry.state.hash(conn)
    zero = await replay(kernel.settings, Registry, "zero")
    snapshot = await replay(kernel.settings, Registry, "snapshot")
    assert live == zero == snapshot
    # And a restarted service (nothing cached) serves the same.
    async with kernel.pool.acquire() as conn:
        assert await Registry(kernel).state.hash(conn, "snapshot") == live


async def test_the_hash_sees_a_changed_projection(kernel: Kernel) -> None:
    registry = Registry(kernel)
    for command in setup_commands():
        await run(registry, command)
    await issued(registry, issuance("I-1", "TH-GOV", 1, 1000))
    zero = await replay(kernel.settings, Registry, "zero")
    await kernel.pool.execute("UPDATE blocks SET serial_end = 999")
    async with kernel.pool.acquire() as conn:
        assert (await registry.state.hash(conn)).projections != zero.projections


async def test_concurrent_issuances_into_one_namespace_serialise(fresh_database_url: str) -> None:
    await migrate(fresh_database_url, "registry")
    settings = settings_for(fresh_database_url)
    pools = [await connect_pool(fresh_database_url, "registry") for _ in range(2)]
    try:
        # Two instances: own pools, own caches, different account streams.
        first, second = (Registry(Kernel(settings, pool)) for pool in pools)
        for command in setup_commands():
            await run(first, command)
        for attempt in range(10):
            # Both proposed (nothing is issued yet), then approved at once: decided again, one wins.
            await run(first, issuance(f"A-{attempt}", "TH-GOV", attempt * 100 + 1, attempt * 100 + 60))
            await run(second, issuance(f"B-{attempt}", "TH-CO", attempt * 100 + 40, attempt * 100 + 99))
            a, b = await asyncio.gather(
                screen(first, f"A-{attempt}", "TH-GOV"), screen(second, f"B-{attempt}", "TH-CO")
            )
            kinds = sorted(type(e[0]).__name__ for e in (a, b))
            assert kinds == ["ProposalRejected", "UnitsIssued"]
            rejected = next(e[0] for e in (a, b) if isinstance(e[0], pb.ProposalRejected))
            assert rejected.code == "DOUBLE_ISSUANCE_OVERLAP"
        overlaps = await pools[0].fetchval(
            "SELECT count(*) FROM blocks x JOIN blocks y ON x.namespace = y.namespace AND x.serial_start < "
            "y.serial_start AND x.serial_end >= y.serial_start"
        )
        assert overlaps == 0
    finally:
        for pool in pools:
            await pool.close()


def app_for(registry: Registry) -> FastAPI:
    """The registry's router with the runtime's error mapping (no Kafka needed)."""
    app = FastAPI()
    app.include_router(router(registry))

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(status_code=exc.http_status, content=exc.body())

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"code": "REQUEST_INVALID"})

    return app


async def test_the_api_pages_blocks_and_refuses_hostile_input(kernel: Kernel, dev_issuer: DevIssuer) -> None:
    registry = Registry(kernel)
    transport = httpx.ASGITransport(app=app_for(registry))
    operator = {"authorization": f"Bearer {dev_issuer.mint('th-registry', ['registry-operator:TH'])}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://registry", headers=operator) as client:
        opened = await client.post(
            "/accounts", json={"account_id": "TH-GOV", "holder": "Thailand", "jurisdiction": "TH"}
        )
        assert opened.status_code == 201 and opened.json()["held"] == 0
        again = await client.post("/accounts", json={"account_id": "TH-GOV", "holder": "x", "jurisdiction": "TH"})
        assert again.status_code == 409 and again.json()["code"] == "ACCOUNT_EXISTS"
        # Gaps between issuances keep 7 separate blocks.
        for n in range(7):
            await issued(registry, issuance(f"I-{n}", "TH-GOV", n * 10 + 1, n * 10 + 5, vintage=2023 + n % 2))
        account = (await client.get("/accounts/TH-GOV")).json()
        assert (account["held"], account["reserved"], len(account["holdings"])) == (35, 0, 7)
        seen, after = [], None
        while True:
            params: dict[str, Any] = {"limit": 3, **({"after": after} if after else {})}
            page = (await client.get("/accounts/TH-GOV/blocks", params=params)).json()
            seen += [b["start"] for b in page["items"]]
            if (after := page["next"]) is None:
                break
        assert seen == [1, 11, 21, 31, 41, 51, 61]
        only = (await client.get("/accounts/TH-GOV/blocks", params={"vintage": 2024, "standard": "JCM"})).json()
        assert [b["start"] for b in only["items"]] == [11, 31, 51]
        assert (await client.get("/accounts/NOBODY")).status_code == 404
        await run(registry, pb.ReserveUnits(reservation_id="R-1", account_id="TH-GOV", quantity=7))
        account = (await client.get("/accounts/TH-GOV")).json()
        assert (account["held"], account["reserved"]) == (28, 7)
        # Held first, then reserved: the index's order.
        assert [(b["start"], b["status"]) for b in account["holdings"]][-2:] == [(1, "reserved"), (11, "reserved")]
        reserved = (await client.get("/accounts/TH-GOV/blocks", params={"status": "reserved"})).json()
        assert [(b["start"], b["end"], b["reservation_id"]) for b in reserved["items"]] == [
            (1, 5, "R-1"),
            (11, 12, "R-1"),
        ]
        hostile = [
            client.post("/accounts", json={"account_id": "X" * 1_000_000, "holder": "h", "jurisdiction": "TH"}),
            client.post("/accounts", json={"account_id": "A", "holder": "h", "jurisdiction": "A'"}),
            client.post("/accounts", json={"account_id": "A", "holder": "h\x00", "jurisdiction": "TH"}),
            client.post(
                "/accounts",
                content=b'{"account_id": "A", "holder": "\\ud800", "jurisdiction": "TH"}',
                headers={"content-type": "application/json"},
            ),
            client.get("/accounts/TH-GOV/blocks", params={"limit": 2**63}),
            client.get("/accounts/TH-GOV/blocks", params={"vintage": 2**64}),
            client.get("/accounts/TH-GOV/blocks", params={"after": "held:JCM-TH:99999999999999999999"}),
            client.get("/accounts/TH-GOV/blocks", params={"after": "no-cursor"}),
            client.get("/accounts/" + "X" * 100),
        ]
        for response in await asyncio.gather(*hostile):
            assert response.status_code == 422, response.text
    assert await kernel.pool.fetchval("SELECT count(*) FROM accounts") == 1


async def test_the_index_refuses_a_fingerprint_period_issued_twice(kernel: Kernel) -> None:
    """A decision reads earlier issuances before it writes; the write checks again under
    the fingerprint's lock, so two racing issuances of one project period never both land."""
    record = "SELECT registry_fingerprint_recorded($1, $2, 2::smallint, $3::date, $4::date)"
    start, end = datetime.date(2024, 1, 1), datetime.date(2024, 1, 31)
    async with kernel.pool.acquire() as conn:
        await conn.execute(record, "I-1", b"plant", start, end)
        with pytest.raises(asyncpg.PostgresError) as twice:
            await conn.execute(record, "I-2", b"plant", end, end)
        assert twice.value.sqlstate == "TN001"
        await conn.execute(record, "I-3", b"plant", end + datetime.timedelta(days=1), end + datetime.timedelta(days=9))
        assert await conn.fetchval("SELECT count(*) FROM issuance_fingerprints") == 2
