"""Compliance on the new kernel, against a real PostgreSQL: facts as projections,
decisions per request, the audit chain and its feed, replay."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.protobuf.message import Message

from services.common import topics
from services.common.auth import DevIssuer
from services.common.db import connect_pool, migrate
from services.common.envelope import Context, unwrap, wrap
from services.common.errors import DomainError
from services.common.eventstore import ConcurrencyError
from services.common.replay import replay
from services.common.runtime import Kernel
from services.common.settings import Settings
from services.compliance import chain
from services.compliance.api import audit_lines, ndjson, router
from services.compliance.chain import StreamsFull, Subscription
from services.compliance.domain.authorizations import AuthorizationUsage
from services.compliance.domain.facts import Facts
from services.compliance.domain.screening import Policy, claims, screen
from services.compliance.service import Compliance, ComplianceSettings
from tests.unit.factories import issuance, loa
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb
from tonne.v1.envelope_pb2 import Envelope

INJECTION = "x'); DROP TABLE audit_chain; --"
STREAMS = 8  # more than the pool's 5 connections
# Guards a test against hanging if a stream or writer blocks; never reached when it works.
HANG_GUARD = 60.0


@dataclass
class Stack:
    service: Compliance
    pool: asyncpg.Pool
    settings: Settings
    http: httpx.AsyncClient
    pure: Facts

    async def deliver(self, topic: str, message: Message, correlation_id: str = "flow-1") -> Envelope:
        """One record through the real handler in a real unit of work, as the consumer does."""
        envelope = wrap(
            message,
            aggregate_id="k",
            context=Context(correlation_id, actor="test"),
            occurred_at=datetime(2026, 11, 1, tzinfo=UTC),
        )
        async with self.service.unit_of_work() as uow:
            await self.service.handlers[topic](uow, envelope, message)
        self.pure.apply(message)
        return envelope

    async def reads(self) -> tuple[object, ...]:
        """Everything a reader can see: the state hash, the API's pages, the audit chain."""
        async with self.pool.acquire() as conn:
            state = await self.service.state.hash(conn)
            chained = await conn.fetch("SELECT jurisdiction, sequence, hash FROM audit_chain ORDER BY 1, 2")
            outbox = await conn.fetchval("SELECT count(*) FROM outbox")
        pages = [(await self.http.get(f"/audit/{j}?limit=1000")).json() for j in ("TH", "CH")]
        decision = await self.http.get("/decisions/T1")
        return state.as_dict(), [tuple(r) for r in chained], outbox, pages, decision.status_code, decision.text


@pytest.fixture
async def stack(
    fresh_database_url: str, monkeypatch: pytest.MonkeyPatch, dev_issuer: DevIssuer
) -> AsyncIterator[Stack]:
    monkeypatch.setenv("TONNE_AUDIT_STREAMS", str(STREAMS))
    monkeypatch.setenv("TONNE_AUDIT_CHECKPOINT_EVERY", "2")
    await migrate(fresh_database_url, "compliance")
    pool = await connect_pool(fresh_database_url, "compliance")
    settings = Settings(service="compliance", kafka_bootstrap="127.0.0.1:9", database_url=fresh_database_url)
    from services.compliance.service import build

    service = build(Kernel(settings, pool))
    app = FastAPI()
    app.include_router(router(service))

    # The runtime's error mapping (services/common/runtime.py), for an app without Kafka.
    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(status_code=exc.http_status, content=exc.body())

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content=DomainError("REQUEST_INVALID", "invalid").body())

    # The operator reads everything; tenancy has its own test below.
    operator = {"authorization": f"Bearer {dev_issuer.mint('venue-ops', ['operator'])}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://compliance", headers=operator) as http:
        yield Stack(service, pool, settings, http, Facts())
    await service.feed.close()
    await pool.close()


def block(authorization_id: str = "LOA-TH-1", start: int = 1, end: int = 3000) -> rpb.SerialBlock:
    return issuance("I", "TH-GOV", start, end, authorization_id=authorization_id).block


def request(request_id: str = "T1", quantity: int = 3000, reservation_id: str = "S1") -> cpb.ScreenTransfer:
    return cpb.ScreenTransfer(
        request_id=request_id,
        trade_id=request_id,
        reservation_id=reservation_id,
        from_account_id="TH-GOV",
        to_account_id="CH-BUYER",
        quantity=quantity,
    )


async def observe_scenario(stack: Stack) -> None:
    """Scenario 1's facts, among unrelated ones screening must not need."""
    events = topics.REGISTRY_EVENTS
    for n in range(20):
        await stack.deliver(events, rpb.AccountOpened(account_id=f"SG-{n}", jurisdiction="SG"), f"noise-{n}")
    await stack.deliver(events, rpb.AccountOpened(account_id="TH-GOV", jurisdiction="TH"))
    await stack.deliver(events, rpb.AccountOpened(account_id="CH-BUYER", jurisdiction="CH"))
    await stack.deliver(events, rpb.AuthorizationRecorded(authorization=loa(quantity=4000)))
    await stack.deliver(events, rpb.AuthorizationRecorded(authorization=loa("LOA-OTHER", 10)))
    await stack.deliver(
        events, rpb.UnitsReserved(reservation_id="S1", account_id="TH-GOV", quantity=3000, blocks=[block()])
    )
    # 500 of the LoA already first-transferred abroad; a domestic transfer spends nothing.
    abroad = rpb.UnitsTransferred(
        transfer_id="X1",
        from_jurisdiction="TH",
        to_jurisdiction="CH",
        quantity=500,
        blocks=[block(start=5001, end=5500)],
    )
    await stack.deliver(events, abroad)
    home = rpb.UnitsTransferred(transfer_id="X2", from_jurisdiction="TH", to_jurisdiction="TH", blocks=[block()])
    await stack.deliver(events, home)


async def decisions_sent(stack: Stack) -> list[Envelope]:
    rows = await stack.pool.fetch("SELECT value FROM outbox WHERE topic = $1 ORDER BY id", topics.COMPLIANCE_DECISIONS)
    return [unwrap(row["value"])[0] for row in rows]


async def test_screening_through_the_handlers_decides_as_the_pure_core(stack: Stack) -> None:
    await observe_scenario(stack)
    policy = Policy.load()
    approved, starved = request("T1"), request("T2", quantity=3600)
    for screened in (approved, starved):
        expected = screen(screened, stack.pure, policy)
        await stack.deliver(topics.COMPLIANCE_REQUESTS, screened)
        stored = await stack.pool.fetchrow("SELECT * FROM decisions WHERE request_id = $1", screened.request_id)
        assert stored["decision"] == expected.SerializeToString(deterministic=True)
        if expected.verdict == cpb.APPROVED:  # the approval's claims, as the service records them
            for loa_id, quantity in claims(screened, stack.pure).items():
                usage = stack.pure.usage.setdefault(loa_id, AuthorizationUsage.of(loa_id))
                usage.mutate(usage.claim(screened.request_id, quantity))
        assert (stored["trade_id"], stored["verdict"]) == (screened.trade_id, cpb.Verdict.Name(expected.verdict))
    assert (await stack.http.get("/decisions/T1")).json()["verdict"] == "APPROVED"
    rejected = (await stack.http.get("/decisions/T2")).json()
    assert rejected["verdict"] == "REJECTED"
    assert [r["code"] for r in rejected["results"] if not r["passed"]] == [
        "HOLDINGS_RESERVED",
        "DOUBLE_CLAIMING_AUTHORIZATION",
    ]
    # 4000 authorized, 500 first-transferred, 3000 claimed by T1: T2's serials would spend 3000.
    assert "LOA-TH-1 has 500 left, transfer would first-transfer 3000" in rejected["results"][-1]["evidence"]
    usage = await stack.pool.fetchrow("SELECT used, claimed FROM authorization_usage")
    assert (usage["used"], usage["claimed"]) == (500, 3000)
    sent = await decisions_sent(stack)
    assert [(e.aggregate_id, cpb.ScreeningDecision.FromString(e.payload).request_id) for e in sent] == [
        ("decision-T1", "T1"),
        ("decision-T2", "T2"),
    ]
    # Both regulators saw the flow; the SG accounts' chain holds only its own events.
    for party, expected_intact in (("TH", True), ("CH", True)):
        verdict = (await stack.http.get(f"/audit/{party}/verify")).json()
        assert verdict["intact"] is expected_intact and verdict["checked"] > 0 and verdict["next"] is None
    assert len((await stack.http.get("/audit/SG")).json()["items"]) == 20


async def test_a_repeated_request_gets_the_recorded_decision(stack: Stack) -> None:
    await observe_scenario(stack)
    await stack.deliver(topics.COMPLIANCE_REQUESTS, request("T1"))
    # The same request id again, now asking for more than is reserved: still the first answer.
    await stack.deliver(topics.COMPLIANCE_REQUESTS, request("T1", quantity=9000))
    first, again = await decisions_sent(stack)
    assert again == first  # byte for byte, same event id: a consumer that has it skips it
    assert await stack.pool.fetchval("SELECT count(*) FROM events WHERE stream_id = 'decision-T1'") == 1
    assert (await stack.http.get("/decisions/T1")).json()["verdict"] == "APPROVED"


async def test_malformed_kafka_input_is_refused_or_rejected_not_stored(stack: Stack) -> None:
    huge = "A" * 1_000_000
    with pytest.raises(DomainError) as refused:
        await stack.deliver(topics.REGISTRY_EVENTS, rpb.AccountOpened(account_id=huge, jurisdiction="TH"))
    assert refused.value.code == "FACT_INVALID"
    bad = cpb.ScreenTransfer(request_id="T9", trade_id="T9", reservation_id="S1", from_account_id=huge, quantity=1)
    await stack.deliver(topics.COMPLIANCE_REQUESTS, bad)
    decision = (await stack.http.get("/decisions/T9")).json()
    assert decision["verdict"] == "REJECTED" and decision["results"][0]["code"] == "REQUEST_INVALID"
    assert await stack.pool.fetchval("SELECT max(length(decision)) FROM decisions") < 1000
    assert await stack.pool.fetchval("SELECT count(*) FROM accounts") == 0


async def test_an_injected_jurisdiction_is_stored_harmlessly(stack: Stack) -> None:
    await stack.deliver(topics.REGISTRY_EVENTS, rpb.AccountOpened(account_id="TH-GOV", jurisdiction="TH"))
    await stack.deliver(topics.REGISTRY_EVENTS, rpb.AccountOpened(account_id="EVIL", jurisdiction=INJECTION), "c-evil")
    trade = mpb.TradeExecuted(trade_id="T1", buyer_account_id="EVIL", seller_account_id="TH-GOV", quantity=1)
    await stack.deliver(topics.MATCHING_EVENTS, trade, "c-trade")
    assert await stack.pool.fetchval("SELECT jurisdiction FROM accounts WHERE account_id = 'EVIL'") == INJECTION
    # The chain store itself takes the hostile key as data (pg_notify is parameterised).
    links = chain.Links()
    links.add(
        INJECTION,
        topics.REGISTRY_EVENTS,
        wrap(trade, aggregate_id="k", context=Context("c"), occurred_at=datetime.now(UTC)),
    )
    async with stack.pool.acquire() as conn, conn.transaction():
        await links.flush(conn)
    rows = await stack.pool.fetch("SELECT jurisdiction, count(*) AS n FROM audit_chain GROUP BY 1 ORDER BY 1")
    assert [(r["jurisdiction"], r["n"]) for r in rows] == [("TH", 2), (INJECTION, 1)]
    assert (await stack.http.get(f"/audit/{quote(INJECTION, safe='')}")).status_code == 422


async def test_a_handler_failing_mid_transaction_leaves_reads_unchanged(stack: Stack) -> None:
    await observe_scenario(stack)
    await stack.deliver(topics.COMPLIANCE_REQUESTS, request("T1"))
    before = await stack.reads()
    with pytest.raises(RuntimeError):
        async with stack.service.unit_of_work() as uow:
            for message in (
                rpb.AccountOpened(account_id="CH-2", jurisdiction="CH"),
                rpb.UnitsTransferred(from_jurisdiction="TH", to_jurisdiction="JP", blocks=[block(start=1, end=4000)]),
                request("T3"),
            ):
                envelope = wrap(message, aggregate_id="k", context=Context("flow-1"), occurred_at=datetime.now(UTC))
                topic = (
                    topics.COMPLIANCE_REQUESTS if isinstance(message, cpb.ScreenTransfer) else topics.REGISTRY_EVENTS
                )
                await stack.service.handlers[topic](uow, envelope, message)
            raise RuntimeError("the process dies before commit")
    assert await stack.reads() == before
    assert (await stack.http.get("/decisions/T3")).status_code == 404


async def test_the_live_state_hash_is_what_replay_computes(stack: Stack) -> None:
    await observe_scenario(stack)
    await stack.deliver(topics.COMPLIANCE_REQUESTS, request("T1"))
    await stack.deliver(topics.COMPLIANCE_REQUESTS, request("T2", quantity=3600))
    async with stack.pool.acquire() as conn:
        live = await stack.service.state.hash(conn)
        empty = await conn.fetchval("SELECT count(*) FROM decisions")
    assert empty == 2
    from services.compliance.service import build

    assert await replay(stack.settings, build, "zero") == live
    assert await replay(stack.settings, build, "snapshot") == live
    # The hash covers the projections: another fact changes it.
    await stack.deliver(topics.REGISTRY_EVENTS, rpb.AccountOpened(account_id="JP-1", jurisdiction="JP"))
    async with stack.pool.acquire() as conn:
        assert (await stack.service.state.hash(conn)) != live


async def test_audit_pages_and_verification_windows(stack: Stack) -> None:
    for n in range(7):
        await stack.deliver(topics.REGISTRY_EVENTS, rpb.AccountOpened(account_id=f"TH-{n}", jurisdiction="TH"), f"c{n}")
    sequences, after = [], 0
    while True:
        page = (await stack.http.get(f"/audit/TH?after={after}&limit=3")).json()
        sequences += [item["sequence"] for item in page["items"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert sequences == list(range(1, 8))
    windows, after = [], 0
    while after is not None:
        window = (await stack.http.get(f"/audit/TH/verify?after={after}&limit=3")).json()
        windows.append((window["checked"], window["intact"]))
        after = window["next"]
    assert windows == [(3, True), (3, True), (1, True)]
    await stack.pool.execute("UPDATE audit_chain SET envelope = envelope || '\\x00'::bytea WHERE sequence = 5")
    broken = (await stack.http.get("/audit/TH/verify")).json()
    assert (broken["intact"], broken["first_broken_sequence"], broken["next"]) == (False, 5, None)
    # The window after record 5 checks against 5's stored hash: it is intact.
    assert (await stack.http.get("/audit/TH/verify?after=5")).json()["intact"] is True
    assert (await stack.http.get("/audit/TH/verify?after=99")).json()["code"] == "AUDIT_RECORD_UNKNOWN"
    for bad in (
        "/audit/th",
        "/audit/THA/verify",
        f"/audit/TH?after={2**63}",
        "/audit/TH?limit=0",
        "/decisions/" + "x" * 65,
    ):
        response = await stack.http.get(bad)
        assert (response.status_code, response.json()["code"]) == (422, "REQUEST_INVALID"), bad


async def test_audit_streams_wait_without_holding_pooled_connections(stack: Stack) -> None:
    await stack.deliver(topics.REGISTRY_EVENTS, rpb.AccountOpened(account_id="TH-0", jurisdiction="TH"))
    feed = stack.service.feed
    received: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()

    async def follow(n: int, subscription: Subscription) -> None:
        lines = audit_lines(stack.service, subscription, after=0, framed=ndjson)
        try:
            async for line in lines:
                await received.put((n, line))
        finally:
            subscription.close()
            await lines.aclose()

    subscriptions = [feed.subscribe("TH") for _ in range(STREAMS)]
    followers = [asyncio.create_task(follow(n, s)) for n, s in enumerate(subscriptions)]
    try:
        assert feed.subscribers == STREAMS
        with pytest.raises(StreamsFull):
            feed.subscribe("CH")
        full = await stack.http.get("/audit/CH/stream")
        assert (full.status_code, full.headers["retry-after"], full.json()["code"]) == (503, "15", "AUDIT_STREAMS_FULL")
        # Every stream has its history; then a writer still gets through, and wakes them all.
        await asyncio.wait_for(collect(received, STREAMS, b'"sequence": 1,'), HANG_GUARD)
        await asyncio.wait_for(
            stack.deliver(topics.REGISTRY_EVENTS, rpb.AccountOpened(account_id="TH-1", jurisdiction="TH")), HANG_GUARD
        )
        await asyncio.wait_for(collect(received, STREAMS, b'"sequence": 2,'), HANG_GUARD)
    finally:
        for follower in followers:
            follower.cancel()
        for follower in followers:
            with contextlib.suppress(asyncio.CancelledError):
                await follower
    assert feed.subscribers == 0


async def collect(received: asyncio.Queue[tuple[int, bytes]], streams: int, marker: bytes) -> None:
    """Until each of `streams` followers delivered a line containing `marker`."""
    seen: set[int] = set()
    while len(seen) < streams:
        n, line = await received.get()
        if marker in line:
            seen.add(n)


async def test_regulators_read_only_their_jurisdictions(stack: Stack, dev_issuer: DevIssuer) -> None:
    await observe_scenario(stack)
    await stack.deliver(topics.COMPLIANCE_REQUESTS, request())

    def token(subject: str, *roles: str, broker_id: str = "") -> dict[str, str]:
        return {"authorization": f"Bearer {dev_issuer.mint(subject, list(roles), broker_id)}"}

    readers = {
        "anonymous": {"authorization": ""},
        "broker-a": token("broker-a", "broker", broker_id="broker-a"),
        "regulator:TH": token("th", "regulator:TH"),
        "regulator:CH": token("ch", "regulator:CH"),
        "regulator:CN": token("cn", "regulator:CN"),
        "registry-operator:TH": token("th-reg", "registry-operator:TH"),
        "national-registry:TH": token("th-nat", "national-registry:TH"),
    }
    paths = ("/decisions/T1", "/audit/TH", "/audit/TH/verify", "/audit/TH/stream", "/audit/CN")
    expected = {
        "anonymous": (401, 401, 401, 401, 401),
        "broker-a": (403, 403, 403, 403, 403),
        "regulator:TH": (200, 200, 200, None, 403),  # its stream: tests/e2e/test_authority.py
        "regulator:CH": (200, 403, 403, 403, 403),  # the buyer's regulator sees the decision
        "regulator:CN": (404, 403, 403, 403, 200),
        "registry-operator:TH": (403, 403, 403, 403, 403),
        "national-registry:TH": (403, 403, 403, 403, 403),
    }
    for name, headers in readers.items():
        seen: list[int | None] = []
        for path, wanted in zip(paths, expected[name], strict=True):
            if wanted is None:  # an allowed stream never ends; ASGITransport would buffer it forever
                seen.append(None)
                continue
            response = await stack.http.get(path, headers=headers)
            seen.append(response.status_code)
            if response.status_code != 200:  # a refusal carries none of the object's data
                assert set(response.json()) == {"code", "reason", "evidence"}
                assert "TH-GOV" not in response.text and "APPROVED" not in response.text
        assert tuple(seen) == expected[name], name
    unknown = await stack.http.get("/decisions/NOPE", headers=readers["regulator:CN"])
    hidden = await stack.http.get("/decisions/T1", headers=readers["regulator:CN"])
    assert unknown.json()["code"] == hidden.json()["code"] == "DECISION_UNKNOWN"
    assert stack.service.feed.subscribers == 0


async def test_a_screen_that_comes_before_its_reservation_waits_for_it(stack: Stack) -> None:
    """registry.events and compliance.requests are not ordered: a request whose reservation
    is not known yet is not refused on stale facts; it is screened when the reservation
    arrives (and replay reproduces that)."""
    events = topics.REGISTRY_EVENTS
    await stack.deliver(events, rpb.AccountOpened(account_id="TH-GOV", jurisdiction="TH"))
    await stack.deliver(events, rpb.AccountOpened(account_id="CH-BUYER", jurisdiction="CH"))
    await stack.deliver(events, rpb.AuthorizationRecorded(authorization=loa(quantity=4000)))
    early = request("T9", reservation_id="S9")
    await stack.deliver(topics.COMPLIANCE_REQUESTS, early)
    await stack.deliver(topics.COMPLIANCE_REQUESTS, early)  # asked again while waiting
    assert await stack.pool.fetchval("SELECT count(*) FROM decisions") == 0
    assert await stack.pool.fetchval("SELECT count(*) FROM deferred_screens") == 1

    reserved = rpb.UnitsReserved(reservation_id="S9", account_id="TH-GOV", quantity=3000, blocks=[block()])
    await stack.deliver(events, reserved)
    decided = await stack.pool.fetchrow("SELECT verdict, decision FROM decisions WHERE request_id = 'T9'")
    assert decided["verdict"] == "APPROVED"
    assert decided["decision"] == screen(early, stack.pure, Policy.load()).SerializeToString(deterministic=True)
    assert await stack.pool.fetchval("SELECT count(*) FROM deferred_screens") == 0
    async with stack.pool.acquire() as conn:
        live = await stack.service.state.hash(conn)
    few = ComplianceSettings.model_validate({"TONNE_AUDIT_STREAMS": 4})
    assert await replay(stack.settings, lambda kernel: Compliance(kernel, Policy.load(), few), "zero") == live


async def test_two_instances_screening_at_once_cannot_both_spend_one_authorization(stack: Stack) -> None:
    """Issue 10's double claim: two deliveries whose sum exceeds what the LoA has left,
    screened at the same moment by two instances; one is approved, the other refused after
    the consumer's retry. The registry's transfer then spends the claim; a failed
    settlement gives its claim back."""
    from services.compliance.service import build

    events = topics.REGISTRY_EVENTS
    await stack.deliver(events, rpb.AccountOpened(account_id="TH-GOV", jurisdiction="TH"))
    await stack.deliver(events, rpb.AccountOpened(account_id="CH-BUYER", jurisdiction="CH"))
    await stack.deliver(events, rpb.AuthorizationRecorded(authorization=loa(quantity=4000)))
    for reservation_id, start in (("S1", 1), ("S2", 2501)):
        blocks = [block(start=start, end=start + 2499)]
        reserved = rpb.UnitsReserved(reservation_id=reservation_id, account_id="TH-GOV", quantity=2500, blocks=blocks)
        await stack.deliver(events, reserved)
    other = build(Kernel(stack.settings, stack.pool))  # its own caches and stream locks
    both_loaded = asyncio.Barrier(2)

    async def screen_on(service: Compliance, screened: cpb.ScreenTransfer) -> int:
        """As the consumer does: a unit of work, retried when a stream moved under it."""
        envelope = wrap(screened, aggregate_id="k", context=Context("flow"), occurred_at=datetime.now(UTC))
        for attempt in range(1, 4):
            try:
                async with service.unit_of_work() as uow:
                    facts = await service.facts(uow, screened)  # loads (locks) the LoA's usage
                    if attempt == 1:
                        await asyncio.wait_for(both_loaded.wait(), HANG_GUARD)  # both read the same version
                    await service.decide(uow, screened, facts, Context.following(envelope, "compliance"))
                return attempt
            except ConcurrencyError:
                continue
        raise AssertionError("never decided")

    attempts = await asyncio.gather(
        screen_on(stack.service, request("T1", 2500, "S1")), screen_on(other, request("T2", 2500, "S2"))
    )
    assert sorted(attempts) == [1, 2]  # the second writer's version check failed once
    verdicts = await stack.pool.fetch("SELECT request_id, verdict FROM decisions ORDER BY request_id")
    assert sorted(r["verdict"] for r in verdicts) == ["APPROVED", "REJECTED"]
    [winner] = [r["request_id"] for r in verdicts if r["verdict"] == "APPROVED"]
    usage = await stack.pool.fetchrow("SELECT used, claimed FROM authorization_usage")
    assert (usage["used"], usage["claimed"]) == (0, 2500)

    # The registry moves the winner's units abroad: the claim becomes use.
    start = 1 if winner == "T1" else 2501
    abroad = rpb.UnitsTransferred(
        transfer_id=winner, from_jurisdiction="TH", to_jurisdiction="CH", blocks=[block(start=start, end=start + 2499)]
    )
    await stack.deliver(events, abroad)
    usage = await stack.pool.fetchrow("SELECT used, claimed FROM authorization_usage")
    assert (usage["used"], usage["claimed"]) == (2500, 0)

    # A third delivery within what is left is approved, then its settlement fails: released.
    await stack.deliver(
        events,
        rpb.UnitsReserved(
            reservation_id="S3", account_id="TH-GOV", quantity=1500, blocks=[block(start=6001, end=7500)]
        ),
    )
    await stack.deliver(topics.COMPLIANCE_REQUESTS, request("T3", 1500, "S3"))
    assert await stack.pool.fetchval("SELECT claimed FROM authorization_usage") == 1500
    await stack.deliver(topics.SETTLEMENT_EVENTS, spb.SettlementFailed(trade_id="T3", code="CASH_INSUFFICIENT"))
    assert await stack.pool.fetchval("SELECT claimed FROM authorization_usage") == 0
    assert await stack.pool.fetchval("SELECT count(*) FROM authorization_claims") == 0
    async with stack.pool.acquire() as conn:
        live = await stack.service.state.hash(conn)
    assert await replay(stack.settings, build, "zero") == live


async def test_an_exported_chain_verifies_offline_with_its_signed_checkpoints(stack: Stack, tmp_path: Path) -> None:
    """A regulator exports its chain and the checkpoints, checks them with the verifier CLI
    and the published key; a byte changed in the export is named at its sequence."""
    for n in range(5):
        await stack.deliver(topics.REGISTRY_EVENTS, rpb.AccountOpened(account_id=f"TH-{n}", jurisdiction="TH"), f"c{n}")
    key = (await stack.http.get("/audit-signing-key")).json()
    assert (key["algorithm"], key["checkpoint_every"]) == ("Ed25519", 2)
    records = (await stack.http.get("/audit/TH?limit=1000")).json()["items"]
    signed = (await stack.http.get("/audit/TH/checkpoints")).json()
    assert [c["sequence"] for c in signed["items"]] == [2, 4] and signed["next"] is None
    exported, checkpoints = tmp_path / "th.ndjson", tmp_path / "th-checkpoints.json"
    exported.write_text("".join(json.dumps(r) + "\n" for r in records))
    checkpoints.write_text(json.dumps(signed["items"]))

    def verify() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "services.compliance.verify", str(exported)]
        command += ["--checkpoints", str(checkpoints), "--public-key", key["public_key"]]
        return subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD, check=False)

    intact = await asyncio.to_thread(verify)
    assert (intact.returncode, intact.stdout.strip()) == (0, "intact: 5 records, 2 signed checkpoints")
    records[2]["envelope_hex"] = records[2]["envelope_hex"][:-2] + (
        "00" if records[2]["envelope_hex"][-2:] != "00" else "01"
    )
    exported.write_text("".join(json.dumps(r) + "\n" for r in records))
    broken = await asyncio.to_thread(verify)
    assert (broken.returncode, broken.stdout.strip()) == (
        1,
        "broken at sequence 3: does not follow from the record before it",
    )


async def test_a_round_trip_between_two_accounts_alerts_both_parties_regulators(stack: Stack) -> None:
    await observe_scenario(stack)
    instrument = "JCM-TH-2024-NDC"

    def trade(trade_id: str, buyer: str, seller: str) -> mpb.TradeExecuted:
        return mpb.TradeExecuted(
            trade_id=trade_id,
            instrument_id=instrument,
            price=1500,
            quantity=10,
            buyer_account_id=buyer,
            seller_account_id=seller,
            buyer_broker_id="B-1",
            seller_broker_id="B-2",
        )

    await stack.deliver(topics.MATCHING_EVENTS, trade("TR-1", "CH-BUYER", "TH-GOV"))
    await stack.deliver(topics.MATCHING_EVENTS, trade("TR-2", "TH-GOV", "CH-BUYER"))  # and back
    rows = await stack.pool.fetch("SELECT value FROM outbox WHERE topic = $1 ORDER BY id", topics.COMPLIANCE_DECISIONS)
    sent = [unwrap(r["value"])[1] for r in rows]
    alerts = [payload for payload in sent if isinstance(payload, cpb.SurveillanceAlert)]
    assert [(a.alert_id, list(a.trade_ids)) for a in alerts] == [("ROUND_TRIP:TR-2", ["TR-2", "TR-1"])]
    # Consumed back from compliance.decisions, the alert is in both parties' audit chains.
    await stack.deliver(topics.COMPLIANCE_DECISIONS, alerts[0])
    for party in ("TH", "CH"):
        page = (await stack.http.get(f"/audit/{party}?limit=1000")).json()
        assert [i["payload"]["alert_id"] for i in page["items"] if i["event_type"].endswith("SurveillanceAlert")] == [
            "ROUND_TRIP:TR-2"
        ], party


async def test_large_orders_cancelled_after_trading_the_other_way_alert_layering(stack: Stack) -> None:
    await observe_scenario(stack)
    bought = mpb.TradeExecuted(
        trade_id="TR-L1",
        instrument_id="JCM-TH-2024-NDC",
        price=1500,
        quantity=10,
        buyer_account_id="CH-BUYER",
        seller_account_id="TH-GOV",
    )
    await stack.deliver(topics.MATCHING_EVENTS, bought)
    spoof = mpb.OrderCancelled(
        order_id="O-SPOOF",
        instrument_id="JCM-TH-2024-NDC",
        remaining_quantity=20_000,
        account_id="CH-BUYER",
        side=mpb.SELL,
        reason=mpb.CANCEL_REASON_BROKER,
    )
    await stack.deliver(topics.MATCHING_EVENTS, spoof)
    rows = await stack.pool.fetch("SELECT value FROM outbox WHERE topic = $1 ORDER BY id", topics.COMPLIANCE_DECISIONS)
    alerts = [p for p in (unwrap(r["value"])[1] for r in rows) if isinstance(p, cpb.SurveillanceAlert)]
    assert [(a.alert_id, list(a.trade_ids), list(a.order_ids)) for a in alerts] == [
        ("LAYERING:O-SPOOF", ["TR-L1"], ["O-SPOOF"])
    ]
    await stack.deliver(topics.COMPLIANCE_DECISIONS, alerts[0])
    page = (await stack.http.get("/audit/CH?limit=1000")).json()
    assert "LAYERING:O-SPOOF" in [i["payload"].get("alert_id") for i in page["items"]]
