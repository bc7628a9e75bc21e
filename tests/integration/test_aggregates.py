"""Aggregates, unit of work, snapshots, state hash and retention on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Self

import asyncpg
import pytest
from google.protobuf.message import Message

from services.common import eventstore, outbox, tracking
from services.common.aggregate import Aggregate
from services.common.db import connect_pool, migrate, service_role
from services.common.envelope import Context
from services.common.eventstore import ConcurrencyError
from services.common.repository import Repository
from services.common.statehash import Projection, ServiceState
from services.common.tracking import Origin
from services.common.unit_of_work import UnitOfWorkFactory
from tests.support import eventually
from tonne.v1 import registry_pb2 as rpb
from tonne.v1.envelope_pb2 import Envelope


class Roster(Aggregate):
    """A toy aggregate: the accounts opened in one namespace."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.accounts: list[str] = []

    def open(self, account_id: str) -> list[Message]:
        if account_id in self.accounts:
            raise ValueError(f"{account_id} is open")
        return [rpb.AccountOpened(account_id=account_id, holder="h", jurisdiction="TH", type=rpb.HOLDING)]

    def apply(self, event: Message) -> None:
        assert isinstance(event, rpb.AccountOpened)
        self.accounts.append(event.account_id)

    def snapshot(self) -> bytes:
        return "\n".join(self.accounts).encode()

    @classmethod
    def restore(cls, stream_id: str, state: bytes) -> Self:
        roster = cls(stream_id)
        roster.accounts = state.decode().split("\n") if state else []
        return roster


async def project(conn: asyncpg.Connection, envelope: Envelope, event: Message) -> None:
    assert isinstance(event, rpb.AccountOpened)
    await conn.execute(
        "INSERT INTO opened (account_id, stream_id) VALUES ($1, $2)", event.account_id, envelope.aggregate_id
    )


CONTEXT = Context.new("test")


@pytest.fixture
async def pool(fresh_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(fresh_database_url, "kernel_test", source="registry")
    pool = await connect_pool(fresh_database_url, "kernel_test")
    await pool.execute("CREATE TABLE opened (account_id text PRIMARY KEY, stream_id text NOT NULL)")
    yield pool
    await pool.close()


def rosters(snapshot_every: int = 3) -> Repository[Roster]:
    return Repository(Roster, "roster-", snapshot_every=snapshot_every, cache_size=100)


async def open_accounts(unit_of_work: UnitOfWorkFactory, repository: Repository[Roster], key: str, *ids: str) -> None:
    for account_id in ids:
        async with unit_of_work() as uow:
            roster = await uow.load(repository, key)
            await uow.record(roster, [(e, []) for e in roster.open(account_id)], CONTEXT)


async def test_state_changes_only_after_commit_and_a_failure_reloads_only_its_aggregate(pool: asyncpg.Pool) -> None:
    repository, unit_of_work = rosters(), UnitOfWorkFactory(pool, project)
    await open_accounts(unit_of_work, repository, "a", "a1")
    await open_accounts(unit_of_work, repository, "b", "b1")
    a, b = repository.cached("roster-a"), repository.cached("roster-b")
    assert a is not None and b is not None

    with pytest.raises(RuntimeError):
        async with unit_of_work() as uow:
            roster = await uow.load(repository, "a")
            await uow.record(roster, [(e, []) for e in roster.open("a2")], CONTEXT)
            assert roster.accounts == ["a1", "a2"]  # folded for the next decision of this unit...
            assert unit_of_work.locks("roster-a").locked()  # ...which no one else can read before commit
            raise RuntimeError("the handler fails after recording")

    assert repository.cached("roster-a") is None  # dropped; reloaded on next use
    assert not unit_of_work.locks("roster-a").locked()
    assert repository.cached("roster-b") is b  # untouched
    assert await pool.fetchval("SELECT count(*) FROM opened") == 2  # the projection rolled back too
    await open_accounts(unit_of_work, repository, "a", "a2")
    reloaded = repository.cached("roster-a")
    assert reloaded is not None and (reloaded.accounts, reloaded.version) == (["a1", "a2"], 2)


async def test_snapshot_plus_tail_equals_folding_from_zero(pool: asyncpg.Pool) -> None:
    repository, unit_of_work = rosters(snapshot_every=3), UnitOfWorkFactory(pool, project)
    await open_accounts(unit_of_work, repository, "x", *(f"x{n}" for n in range(7)))
    async with pool.acquire() as conn:
        snapshot = await eventstore.latest_snapshot(conn, "roster-x")
        assert snapshot is not None and snapshot.version == 6  # taken at 3 and again at 6
        from_snapshot = await repository.load(conn, "roster-x")
        from_zero = await repository.load(conn, "roster-x", from_snapshot=False)
    assert from_snapshot.snapshot() == from_zero.snapshot() and from_snapshot.version == from_zero.version == 7

    state = ServiceState([repository], project, [Projection("opened", ("account_id", "stream_id"), ("account_id",))])
    async with pool.acquire() as conn:
        live = await state.hash(conn, "live")
        assert live == await state.hash(conn, "snapshot") == await state.hash(conn, "zero")
        await conn.execute("UPDATE opened SET stream_id = 'tampered' WHERE account_id = 'x3'")
        assert (await state.hash(conn, "live")).projections != live.projections


async def test_instances_see_each_others_commits_and_a_race_is_refused(pool: asyncpg.Pool) -> None:
    first, second = rosters(), rosters()  # two instances: own caches, own locks
    one, two = UnitOfWorkFactory(pool, project), UnitOfWorkFactory(pool, project)
    await open_accounts(one, first, "s", "s1")
    await open_accounts(two, second, "s", "s2")
    await open_accounts(one, first, "s", "s3")  # its cached copy catches up with s2 first
    cached = first.cached("roster-s")
    assert cached is not None and cached.accounts == ["s1", "s2", "s3"]

    async with one() as uow:
        roster = await uow.load(first, "s")
        await uow.record(roster, [(e, []) for e in roster.open("s4")], CONTEXT)
        racer = asyncio.create_task(open_accounts(two, second, "s", "s4-too"))

        async def blocked() -> bool:
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            return bool(await pool.fetchval(waiting))

        await eventually(blocked, "the racing instance to wait on the same stream version")
    with pytest.raises(ConcurrencyError):
        await racer
    assert second.cached("roster-s") is None  # dropped, and decided again on the next try
    await open_accounts(two, second, "s", "s5")
    settled = second.cached("roster-s")
    assert settled is not None and settled.accounts == ["s1", "s2", "s3", "s4", "s5"]


async def test_retention_prunes_published_outbox_rows_and_old_tracking_ids(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for n in range(3):
            await conn.execute("INSERT INTO outbox (topic, key, value) VALUES ('t', 'k', $1)", bytes([n]))
            await tracking.first_deliveries(conn, "c", [(f"e{n}", Origin("t", 0, n))])
        await conn.execute("UPDATE outbox SET published_at = now() - interval '2 days' WHERE value <> '\\x02'")
        await conn.execute("UPDATE tracking SET processed_at = now() - interval '2 days' WHERE event_id <> 'e2'")
        assert await outbox.prune(conn, timedelta(days=1)) == 2
        assert await tracking.prune(conn, timedelta(days=1)) == 2
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 1  # unpublished rows stay
        assert [r["event_id"] for r in await conn.fetch("SELECT event_id FROM tracking")] == ["e2"]


async def test_a_service_role_reaches_only_its_own_schema(fresh_database_url: str) -> None:
    await migrate(fresh_database_url, "registry")
    await migrate(fresh_database_url, "matching")
    role = await service_role(fresh_database_url, "registry")
    assert role == "tonne_registry"
    pool = await connect_pool(fresh_database_url, "registry", role=role)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_user") == "tonne_registry"
            assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            await conn.execute("INSERT INTO outbox (topic, key, value) VALUES ('t', 'k', 'v')")  # its own tables
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM matching.outbox")  # another service's
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DROP TABLE outbox")  # no DDL
    finally:
        await pool.close()


async def test_a_unit_of_work_decides_many_times_on_one_aggregate(pool: asyncpg.Pool) -> None:
    """Group commit: a batch's decisions see each other's effects, and commit together."""
    repository, unit_of_work = rosters(snapshot_every=100), UnitOfWorkFactory(pool, project)
    async with unit_of_work() as uow:
        for account_id in ("g1", "g2", "g3"):
            roster = await uow.load(repository, "g")
            await uow.record(roster, [(e, []) for e in roster.open(account_id)], CONTEXT)
        with pytest.raises(ValueError):
            roster.open("g2")  # the earlier decisions of this unit of work are visible to the later ones
    async with pool.acquire() as conn:
        stored = await repository.load(conn, "roster-g", from_snapshot=False)
    assert (stored.accounts, stored.version) == (["g1", "g2", "g3"], 3)


async def test_a_deferred_unit_of_work_writes_at_its_end_in_one_statement_or_one_transaction(
    pool: asyncpg.Pool,
) -> None:
    """One decision's writes wait for the end: a lone append, its projection made inside
    its statement (the inline call), needs no transaction; several writes commit together
    or not at all, and a failure drops what the unit of work loaded."""
    await pool.execute(
        "CREATE FUNCTION opened_by(account text, stream text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
        "IF account LIKE 'bad%' THEN RAISE EXCEPTION 'refused %', account; END IF; "
        "INSERT INTO opened (account_id, stream_id) VALUES (account, stream); END $$"
    )

    def inline(envelope: Envelope, event: Message) -> list[eventstore.Call] | None:
        assert isinstance(event, rpb.AccountOpened)
        return [eventstore.Call("opened_by", (event.account_id, envelope.aggregate_id))]

    repository, unit_of_work = rosters(snapshot_every=100), UnitOfWorkFactory(pool, project, inline)
    statements: list[str] = []

    def logged(query: asyncpg.connection.LoggedQuery) -> None:
        statements.append(query.query.strip().upper())

    async with unit_of_work(deferred=True) as uow:
        uow.conn.add_query_logger(logged)  # stays on the pool's connection: the test's own pool
        roster = await uow.load(repository, "d")
        await uow.record(roster, [(e, []) for e in roster.open("d1")], CONTEXT)
        assert await pool.fetchval("SELECT count(*) FROM events WHERE stream_id = 'roster-d'") == 0  # pending
    writes = [s for s in statements if "INSERT INTO" in s or s.startswith(("BEGIN", "COMMIT"))]
    assert len(writes) == 1 and "OPENED_BY(" in writes[0]  # the append alone, its projection inside
    assert await pool.fetchval("SELECT stream_id FROM opened WHERE account_id = 'd1'") == "roster-d"

    # The inline call fails: the append in its statement is not written either.
    with pytest.raises(asyncpg.RaiseError):
        async with unit_of_work(deferred=True) as uow:
            roster = await uow.load(repository, "d")
            await uow.record(roster, [(e, []) for e in roster.open("bad1")], CONTEXT)
    assert repository.cached("roster-d") is None
    assert await pool.fetchval("SELECT max(version) FROM events WHERE stream_id = 'roster-d'") == 1

    # Two writes, the second on a stream another instance moves meanwhile: neither lands.
    elsewhere = (rosters(), UnitOfWorkFactory(pool, project, inline))
    with pytest.raises(ConcurrencyError):
        async with unit_of_work(deferred=True) as uow:
            first = await uow.load(repository, "f")
            await uow.record(first, [(e, []) for e in first.open("f1")], CONTEXT)
            second = await uow.load(repository, "e")
            await open_accounts(elsewhere[1], elsewhere[0], "e", "e1")
            await uow.record(second, [(e, []) for e in second.open("e2")], CONTEXT)
    assert await pool.fetchval("SELECT count(*) FROM events WHERE stream_id = 'roster-f'") == 0
    assert repository.cached("roster-f") is None and repository.cached("roster-e") is None
