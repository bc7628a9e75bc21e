"""The Union Registry's controls and retirement through the registry's HTTP API on a
real PostgreSQL: freezes by the registry operator and the regulator, the trusted list
with four eyes and a delay, a transfer outside the list scheduled and then completed once
by two racing schedulers, or cancelled; retirements; who may do which."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from google.protobuf.message import Message

from services.common.auth import DevIssuer
from services.common.envelope import Context, unwrap
from services.common.runtime import Kernel
from services.registry import sql_index
from services.registry.domain.blocks import Holding, Move, Status
from services.registry.domain.controls import Policy
from services.registry.scheduler import Scheduler
from services.registry.service import Registry
from tests.integration.test_registry_state import app_for, issued, kernel, run, screen  # noqa: F401 (fixture)
from tests.unit.factories import issuance, open_account
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as pb
from tonne.v1.envelope_pb2 import Envelope

DELAY = timedelta(hours=26)
POLICY = Policy(trust_delay=timedelta(days=7), untrusted_delay=DELAY, untrusted_cap=1000)


class Caller:
    def __init__(self, client: httpx.AsyncClient, issuer: DevIssuer, subject: str, roles: list[str]) -> None:
        self.client = client
        self.headers = {"authorization": f"Bearer {issuer.mint(subject, roles)}"}

    async def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return await self.client.post(path, json=body or {}, headers=self.headers)

    async def get(self, path: str) -> httpx.Response:
        return await self.client.get(path, headers=self.headers)

    async def put(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self.client.put(path, json=body, headers=self.headers)

    async def delete(self, path: str) -> httpx.Response:
        return await self.client.delete(path, headers=self.headers)


@pytest.fixture
async def world(kernel: Kernel, dev_issuer: DevIssuer) -> AsyncIterator[tuple[Registry, dict[str, Caller]]]:  # noqa: F811
    registry = Registry(kernel, POLICY)
    transport = httpx.ASGITransport(app=app_for(registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
        callers = {
            "alice": Caller(client, dev_issuer, "alice", ["registry-operator:TH"]),
            "bob": Caller(client, dev_issuer, "bob", ["registry-operator:TH"]),
            "regulator": Caller(client, dev_issuer, "th-regulator", ["regulator:TH"]),
            "ch": Caller(client, dev_issuer, "carol", ["registry-operator:CH"]),
            "broker": Caller(client, dev_issuer, "broker-a", ["broker"]),
        }
        for account, party in (("TH-CO", "TH"), ("CH-BUYER", "CH")):
            opener = callers["alice"] if party == "TH" else callers["ch"]
            opened = await opener.post("/accounts", {"account_id": account, "holder": account, "jurisdiction": party})
            assert opened.status_code == 201, opened.text
        await issued(registry, issuance("I-1", "TH-CO", 1, 5000))
        yield registry, callers


async def screened(
    registry: Registry, caller: Caller, path: str, body: dict[str, Any], verdict: cpb.Verdict.ValueType = cpb.APPROVED
) -> httpx.Response:
    """POST an operation the transaction log screens, answered while the API waits for it
    (the answer of a request refused before it is proposed: none)."""
    posted = asyncio.create_task(caller.post(path, body))
    proposal_id = body.get("retirement_id") or body.get("expiry_id") or body["transfer_id"]
    deadline = asyncio.get_running_loop().time() + 10
    while not posted.done():
        row = await registry.pool.fetchrow("SELECT account_id FROM proposals WHERE proposal_id = $1", proposal_id)
        if row is not None:
            await screen(registry, proposal_id, row["account_id"], verdict)
            break
        assert asyncio.get_running_loop().time() < deadline, "no proposal recorded"
        await asyncio.sleep(0.01)
    return await posted


async def held(registry: Registry, account_id: str) -> int:
    total = await registry.pool.fetchval(
        "SELECT coalesce(sum(quantity), 0) FROM holdings WHERE account_id = $1 AND status = 'held'", account_id
    )
    return int(total)


async def test_freezes_stop_units_and_are_audited(world: tuple[Registry, dict[str, Caller]]) -> None:
    registry, callers = world
    frozen = await callers["regulator"].post("/accounts/TH-CO/freeze", {"reason": "suspected account takeover"})
    assert frozen.status_code == 200, frozen.text
    assert frozen.json()["frozen"] is True
    refused = await run(registry, pb.ReserveUnits(reservation_id="R-1", account_id="TH-CO", quantity=10))
    assert [r.code for r in refused] == ["ACCOUNT_FROZEN"]  # type: ignore[attr-defined]
    # The freeze is an event on the account's stream with who and why: what compliance chains.
    row = await registry.pool.fetchrow(
        "SELECT envelope FROM events WHERE stream_id = 'account-TH-CO' AND type = $1", "tonne.v1.AccountFrozen"
    )
    assert row is not None
    queued = [Envelope.FromString(v).type for v in await registry.pool.fetchval("SELECT array_agg(value) FROM outbox")]
    assert queued.count("tonne.v1.AccountFrozen") == 1
    thawed = await callers["alice"].post("/accounts/TH-CO/unfreeze", {"reason": "cleared"})
    assert thawed.json()["frozen"] is False
    # Outside one's jurisdiction, and for a broker, the account does not exist / may not act.
    assert (await callers["ch"].post("/accounts/TH-CO/freeze", {"reason": "x"})).status_code == 404
    assert (await callers["broker"].post("/accounts/TH-CO/freeze", {"reason": "x"})).status_code == 403
    assert (await callers["regulator"].post("/accounts/TH-CO/freeze", {"reason": ""})).status_code == 422

    project = await callers["regulator"].post(
        "/projects/TH-FSOLAR-1/freeze", {"host_party": "TH", "reason": "verification withdrawn"}
    )
    assert project.json() == {
        "project_id": "TH-FSOLAR-1",
        "host_party": "TH",
        "frozen": True,
        "reason": "verification withdrawn",
    }
    refused = await run(registry, pb.ReserveUnits(reservation_id="R-2", account_id="TH-CO", quantity=10))
    assert [r.code for r in refused] == ["PROJECT_FROZEN"]  # type: ignore[attr-defined]
    other = await callers["ch"].post("/projects/TH-FSOLAR-1/freeze", {"host_party": "TH", "reason": "x"})
    assert other.status_code == 403


async def test_trusted_list_four_eyes_and_scheduled_transfers(world: tuple[Registry, dict[str, Caller]]) -> None:
    registry, callers = world
    alice, bob = callers["alice"], callers["bob"]
    proposed = await alice.post("/accounts/TH-CO/trusted", {"account_id": "CH-BUYER"})
    assert proposed.status_code == 201 and proposed.json()["effective_at"] is None
    same = await alice.post("/accounts/TH-CO/trusted/CH-BUYER/approval")
    assert (same.status_code, same.json()["code"]) == (422, "FOUR_EYES_REQUIRED")
    before = datetime.now(UTC)
    approved = await bob.post("/accounts/TH-CO/trusted/CH-BUYER/approval")
    assert approved.status_code == 200, approved.text
    effective = datetime.fromisoformat(approved.json()["effective_at"])
    assert effective >= before + POLICY.trust_delay
    listed = await callers["regulator"].get("/accounts/TH-CO/trusted")
    assert [e["trusted_account_id"] for e in listed.json()["items"]] == ["CH-BUYER"]

    # Not effective for 7 days: capped and scheduled after the delay.
    over = await alice.post(
        "/accounts/TH-CO/transfers", {"transfer_id": "X-0", "to_account_id": "CH-BUYER", "quantity": 1001}
    )
    assert over.json()["code"] == "TRANSFER_LIMIT_EXCEEDED"
    sent = await screened(
        registry,
        alice,
        "/accounts/TH-CO/transfers",
        {"transfer_id": "X-1", "to_account_id": "CH-BUYER", "quantity": 300},
    )
    assert sent.status_code == 201, sent.text
    assert sent.json()["state"] == "scheduled"
    due = datetime.fromisoformat(sent.json()["execute_at"])
    assert await held(registry, "TH-CO") == 4700 and await held(registry, "CH-BUYER") == 0
    await screened(
        registry,
        alice,
        "/accounts/TH-CO/transfers",
        {"transfer_id": "X-2", "to_account_id": "CH-BUYER", "quantity": 200},
    )
    pending = await callers["regulator"].get("/accounts/TH-CO/transfers")
    assert [t["transfer_id"] for t in pending.json()["items"]] == ["X-1", "X-2"]

    # Nothing is due yet; then two schedulers (two instances) race for the due transfers.
    assert await Scheduler(registry).run_once(due - timedelta(seconds=1)) == 0
    cancelled = await bob.post("/accounts/TH-CO/transfers/X-2/cancellation", {"reason": "not requested by holder"})
    assert cancelled.json()["state"] == "cancelled"
    await asyncio.gather(Scheduler(registry).run_once(due), Scheduler(registry).run_once(due))
    assert await held(registry, "CH-BUYER") == 300 and await held(registry, "TH-CO") == 4700
    transferred = await registry.pool.fetchval(
        "SELECT count(*) FROM events WHERE type = 'tonne.v1.UnitsTransferred' AND stream_id = 'account-TH-CO'"
    )
    assert transferred == 1
    assert (await callers["regulator"].get("/accounts/TH-CO/transfers")).json()["items"] == []

    # Removal is immediate; the account's own limit applies to the venue's reservations too.
    removed = await bob.delete("/accounts/TH-CO/trusted/CH-BUYER")
    assert removed.json()["trusted_account_id"] == "CH-BUYER"
    limited = await alice.put("/accounts/TH-CO/transfer-limit", {"per_transfer": 50})
    assert limited.json()["transfer_limit"] == 50
    refused = await run(registry, pb.ReserveUnits(reservation_id="R-1", account_id="TH-CO", quantity=51))
    assert [r.code for r in refused] == ["TRANSFER_LIMIT_EXCEEDED"]  # type: ignore[attr-defined]


async def test_controls_belong_to_the_account_s_registry(world: tuple[Registry, dict[str, Caller]]) -> None:
    registry, callers = world
    ch, broker, regulator = callers["ch"], callers["broker"], callers["regulator"]
    body = {"transfer_id": "X-9", "to_account_id": "CH-BUYER", "quantity": 1}
    assert (await ch.post("/accounts/TH-CO/transfers", body)).status_code == 404
    assert (await ch.post("/accounts/TH-CO/trusted", {"account_id": "CH-BUYER"})).status_code == 404
    assert (await broker.post("/accounts/TH-CO/transfers", body)).status_code == 403
    assert (await regulator.post("/accounts/TH-CO/transfers", body)).status_code == 403
    assert (await ch.get("/accounts/TH-CO/trusted")).status_code == 404
    assert await held(registry, "TH-CO") == 5000


async def test_retirement_through_the_api(world: tuple[Registry, dict[str, Caller]]) -> None:
    registry, callers = world
    alice, regulator, ch = callers["alice"], callers["regulator"], callers["ch"]
    body = {"retirement_id": "RT-1", "quantity": 400, "beneficiary": "Acme Airlines", "purpose": "CORSIA 2025"}
    unclaimed = await alice.post("/accounts/TH-CO/retirements", body)
    assert (unclaimed.status_code, unclaimed.json()["code"]) == (422, "RETIREMENT_INVALID")  # no use, no year
    body |= {"use": "OIMP", "claim_year": 2025}
    retired = await screened(registry, alice, "/accounts/TH-CO/retirements", body)
    assert retired.status_code == 201, retired.text
    assert retired.json() == {
        "retirement_id": "RT-1",
        "account_id": "TH-CO",
        "quantity": 400,
        "cancelled": False,
        "beneficiary": "Acme Airlines",
        "purpose": "CORSIA 2025",
        "use": "OIMP",
        "claim_year": 2025,
        "requested_by": "alice",
        "cancellation": None,
    }
    cancel = {"retirement_id": "RT-2", "quantity": 100, "purpose": "voluntary cancellation", "cancel": True}
    assert (await screened(registry, alice, "/accounts/TH-CO/retirements", cancel)).status_code == 201
    again = await alice.post("/accounts/TH-CO/retirements", body)
    assert (again.status_code, again.json()["code"]) == (422, "SEQUENCE_DUPLICATE_ID")
    account = (await regulator.get("/accounts/TH-CO")).json()
    assert (account["held"], account["retired"], account["cancelled"], account["reserved"]) == (4500, 400, 100, 0)
    listed = await regulator.get("/accounts/TH-CO/retirements")
    assert [r["retirement_id"] for r in listed.json()["items"]] == ["RT-1", "RT-2"]
    # The retired serials are the account's lowest, and no reservation can take them.
    refused = await run(registry, pb.ReserveUnits(reservation_id="R-1", account_id="TH-CO", quantity=4501))
    assert [r.code for r in refused] == ["HOLDINGS_INSUFFICIENT"]  # type: ignore[attr-defined]
    assert (await ch.post("/accounts/TH-CO/retirements", body | {"retirement_id": "RT-3"})).status_code == 404
    assert (await regulator.post("/accounts/TH-CO/retirements", body | {"retirement_id": "RT-3"})).status_code == 403


async def test_the_transaction_log_completes_refuses_or_times_out_a_retirement(
    world: tuple[Registry, dict[str, Caller]],
) -> None:
    registry, callers = world
    alice, regulator = callers["alice"], callers["regulator"]
    body = {"quantity": 400, "beneficiary": "Acme", "purpose": "NDC 2025", "use": "NDC", "claim_year": 2025}
    refused = await screened(
        registry, alice, "/accounts/TH-CO/retirements", body | {"retirement_id": "RT-1"}, cpb.REJECTED
    )
    assert (refused.status_code, refused.json()["code"]) == (422, "SCREENING_REJECTED"), refused.text
    assert "DOUBLE_USE" in refused.json()["reason"]
    assert await held(registry, "TH-CO") == 5000  # given back
    # Unanswered within the API's wait: 202 and the proposal, which the caller follows.
    registry.screening_wait = 0
    waiting = await alice.post("/accounts/TH-CO/retirements", body | {"retirement_id": "RT-2"})
    assert (waiting.status_code, waiting.json()["state"], waiting.json()["transaction_type"]) == (
        202,
        "screening",
        "05-00",
    )
    assert await held(registry, "TH-CO") == 4600
    # The venue cannot deliver or release the proposal's units meanwhile.
    [taken] = await run(registry, pb.ReleaseReservation(reservation_id="RT-2", quantity=400))
    assert taken.code == "RESERVATION_HELD_FOR_TRANSFER"  # type: ignore[attr-defined]
    expires_at = datetime.fromisoformat(waiting.json()["expires_at"])
    assert await Scheduler(registry).run_once(expires_at - timedelta(seconds=1)) == 0
    assert await Scheduler(registry).run_once(expires_at) == 1
    followed = (await regulator.get("/accounts/TH-CO/proposals/RT-2")).json()
    assert (followed["state"], followed["code"]) == ("rejected", "SCREENING_TIMEOUT")
    assert await held(registry, "TH-CO") == 5000
    assert await screen(registry, "RT-2", "TH-CO") == []  # too late: nothing happens
    assert (await callers["ch"].get("/accounts/TH-CO/proposals/RT-2")).status_code == 404
    # Only compliance's channel answers proposals, and it answers nothing else.
    async with registry.unit_of_work() as uow:
        decision = cpb.ProposalScreened(proposal_id="RT-9", account_id="TH-CO", verdict=cpb.APPROVED)
        [foreign] = await registry.execute(uow, decision, Context.new("th"), channel="TH")
    assert foreign.code == "COMMAND_NOT_ALLOWED_ON_CHANNEL"  # type: ignore[attr-defined]


async def test_mandatory_cancellation_and_expiry_pass_a_frozen_account(
    world: tuple[Registry, dict[str, Caller]],
) -> None:
    registry, callers = world
    alice, regulator, ch = callers["alice"], callers["regulator"], callers["ch"]
    frozen = await regulator.post("/accounts/TH-CO/freeze", {"reason": "reversal under review"})
    assert frozen.status_code == 200, frozen.text
    cancel = {"retirement_id": "C-1", "quantity": 100, "purpose": "reversal", "cancel": True}
    voluntary = await alice.post("/accounts/TH-CO/retirements", cancel)
    assert (voluntary.status_code, voluntary.json()["code"]) == (422, "ACCOUNT_FROZEN")
    mandatory = await screened(registry, alice, "/accounts/TH-CO/retirements", cancel | {"cancellation": "MANDATORY"})
    assert mandatory.status_code == 201, mandatory.text
    assert (mandatory.json()["cancelled"], mandatory.json()["cancellation"]) == (True, "MANDATORY")
    expiry = {"expiry_id": "X-1", "quantity": 50, "reason": "temporary credits: period ended"}
    expired = await screened(registry, alice, "/accounts/TH-CO/expiries", expiry)
    assert expired.status_code == 201, expired.text
    assert expired.json() == {
        "expiry_id": "X-1",
        "account_id": "TH-CO",
        "quantity": 50,
        "reason": "temporary credits: period ended",
        "requested_by": "alice",
    }
    again = await alice.post("/accounts/TH-CO/expiries", expiry)
    assert (again.status_code, again.json()["code"]) == (422, "SEQUENCE_DUPLICATE_ID")
    unexplained = await alice.post("/accounts/TH-CO/expiries", expiry | {"expiry_id": "X-2", "reason": "\x00"})
    assert (unexplained.status_code, unexplained.json()["code"]) == (422, "REQUEST_INVALID")
    account = (await regulator.get("/accounts/TH-CO")).json()
    assert (account["held"], account["cancelled"], account["expired"]) == (4850, 100, 50)
    listed = (await regulator.get("/accounts/TH-CO/retirements")).json()["items"]
    assert [(r["retirement_id"], r["cancellation"]) for r in listed] == [("C-1", "MANDATORY")]
    assert (await ch.post("/accounts/TH-CO/expiries", expiry | {"expiry_id": "X-3"})).status_code == 404
    assert (await regulator.post("/accounts/TH-CO/expiries", expiry | {"expiry_id": "X-3"})).status_code == 403


async def test_an_empty_account_closes_and_takes_nothing_after(world: tuple[Registry, dict[str, Caller]]) -> None:
    registry, callers = world
    alice, ch, regulator = callers["alice"], callers["ch"], callers["regulator"]
    reason = {"reason": "holder left the scheme"}
    full = await alice.post("/accounts/TH-CO/close", reason)
    assert (full.status_code, full.json()["code"]) == (422, "ACCOUNT_NOT_EMPTY")
    assert (await regulator.post("/accounts/CH-BUYER/close", reason)).status_code == 403
    assert (await alice.post("/accounts/CH-BUYER/close", reason)).status_code == 404  # not alice's registry
    closed = await ch.post("/accounts/CH-BUYER/close", reason)
    assert closed.status_code == 200, closed.text
    assert closed.json()["closed"] is True
    await run(registry, pb.ReserveUnits(reservation_id="R-1", account_id="TH-CO", quantity=10))
    into = pb.TransferUnits(transfer_id="T-1", reservation_id="R-1", to_account_id="CH-BUYER", quantity=10)
    assert [r.code for r in await run(registry, into)] == ["ACCOUNT_CLOSED"]  # type: ignore[attr-defined]
    assert await held(registry, "TH-CO") == 4990  # still reserved, nothing moved


async def test_a_transfer_id_is_used_once(world: tuple[Registry, dict[str, Caller]]) -> None:
    registry, _ = world
    for reservation in ("R-1", "R-2"):
        await run(registry, pb.ReserveUnits(reservation_id=reservation, account_id="TH-CO", quantity=10))
    first = pb.TransferUnits(transfer_id="T-1", reservation_id="R-1", to_account_id="CH-BUYER", quantity=10)
    [moved] = await run(registry, first)
    assert isinstance(moved, pb.UnitsTransferred)
    again = pb.TransferUnits(transfer_id="T-1", reservation_id="R-2", to_account_id="CH-BUYER", quantity=10)
    assert [r.code for r in await run(registry, again)] == ["SEQUENCE_DUPLICATE_ID"]  # type: ignore[attr-defined]
    assert await held(registry, "CH-BUYER") == 10


async def test_the_index_keeps_units_out_of_a_closing_account(world: tuple[Registry, dict[str, Caller]]) -> None:
    """What a decision read can be stale: the index's functions check a closing again under
    the account's lock, so a transfer and a closing that race never both commit."""
    registry, callers = world
    await run(registry, pb.ReserveUnits(reservation_id="R-1", account_id="TH-CO", quantity=10))
    assert (await callers["ch"].post("/accounts/CH-BUYER/close", {"reason": "left"})).status_code == 200
    moves = [Move("JCM-TH", 1, 10, Holding("TH-CO", Status.RESERVED, "R-1"), Holding("CH-BUYER"))]
    call = sql_index.moved("transferred", "R-1", "TH-CO", 10, moves, "T-1")
    async with registry.pool.acquire() as conn:
        with pytest.raises(asyncpg.PostgresError) as into_closed:
            await conn.execute(f"SELECT {call.sql(1)}", *call.args)
        assert into_closed.value.sqlstate == "TN001"
        with pytest.raises(asyncpg.PostgresError) as holding:
            await conn.execute("SELECT registry_account_closed($1)", "TH-CO")
        assert holding.value.sqlstate == "TN001"
        assert await conn.fetchval("SELECT closed FROM accounts WHERE account_id = 'TH-CO'") is False
        assert await conn.fetchval("SELECT count(*) FROM transfers") == 0


async def from_registry(registry: Registry, party: str, command: Message) -> list[Message]:
    """`command` as it arrives on registry.inbound.<party>."""
    async with registry.unit_of_work() as uow:
        return await registry.execute(uow, command, Context.new(f"registry-{party}"), channel=party)


async def test_external_transfers_complete_on_the_answer_or_return_at_expiry(
    world: tuple[Registry, dict[str, Caller]],
) -> None:
    registry, callers = world
    alice, regulator = callers["alice"], callers["regulator"]
    body = {"transfer_id": "X-1", "to_registry": "JP", "to_account": "JP-100-7", "quantity": 300}
    proposed = await screened(registry, alice, "/accounts/TH-CO/external-transfers", body)
    assert proposed.status_code == 201, proposed.text
    assert (proposed.json()["state"], proposed.json()["quantity"]) == ("proposed", 300)
    assert (await regulator.post("/accounts/TH-CO/external-transfers", body)).status_code == 403
    foreign = await from_registry(registry, "CH", pb.AnswerExternalTransfer(transfer_id="X-1", accepted=True))
    assert [r.code for r in foreign] == ["CHANNEL_JURISDICTION_MISMATCH"]  # type: ignore[attr-defined]
    [completed] = await from_registry(registry, "JP", pb.AnswerExternalTransfer(transfer_id="X-1", accepted=True))
    assert isinstance(completed, pb.ExternalTransferCompleted)
    again = await from_registry(registry, "JP", pb.AnswerExternalTransfer(transfer_id="X-1", accepted=True))
    assert [r.code for r in again] == ["EXTERNAL_TRANSFER_UNKNOWN"]  # type: ignore[attr-defined]
    account = (await regulator.get("/accounts/TH-CO")).json()
    assert (account["held"], account["reserved"]) == (4700, 0)
    exported = await registry.pool.fetchval(
        "SELECT sum(quantity) FROM holdings WHERE account_id = 'TH-CO' AND status = 'exported'"
    )
    assert exported == 300

    second = await screened(registry, alice, "/accounts/TH-CO/external-transfers", body | {"transfer_id": "X-2"})
    expires_at = datetime.fromisoformat(second.json()["expires_at"])
    assert await Scheduler(registry).run_once(expires_at - timedelta(seconds=1)) == 0
    assert await Scheduler(registry).run_once(expires_at) == 1
    late = await from_registry(registry, "JP", pb.AnswerExternalTransfer(transfer_id="X-2", accepted=True))
    assert [r.code for r in late] == ["EXTERNAL_TRANSFER_UNKNOWN"]  # type: ignore[attr-defined]
    listed = (await regulator.get("/accounts/TH-CO/external-transfers")).json()["items"]
    assert [(t["transfer_id"], t["state"], t["code"]) for t in listed] == [
        ("X-1", "completed", ""),
        ("X-2", "returned", "EXTERNAL_TRANSFER_EXPIRED"),
    ]
    assert await held(registry, "TH-CO") == 4700


async def test_a_registry_that_disagrees_with_its_digest_gets_the_disputed_units_frozen(
    world: tuple[Registry, dict[str, Caller]],
) -> None:
    registry, callers = world
    await run(registry, pb.ReserveUnits(reservation_id="R-1", account_id="TH-CO", quantity=100))
    assert await Scheduler(registry).run_once() == 0  # no transfer due; the digests issued
    digest = await registry.pool.fetchval(
        "SELECT envelope FROM events WHERE stream_id = 'reconciliation-TH' ORDER BY version DESC LIMIT 1"
    )
    _, issued = unwrap(digest)
    assert isinstance(issued, pb.HoldingsDigestIssued)
    # Held and reserved together: reservations are the venue's, not the registry's books.
    assert [(r.account_id, r.status, r.quantity) for r in issued.rows] == [("TH-CO", "holding", 5000)]
    assert await Scheduler(registry).run_once() == 0
    assert await registry.pool.fetchval("SELECT count(*) FROM events WHERE stream_id = 'reconciliation-TH'") == 1

    theirs = pb.HoldingRow()
    theirs.CopyFrom(issued.rows[0])
    theirs.quantity = 4000
    answer = pb.AnswerHoldingsDigest(digest_id=issued.digest_id, theirs=[theirs])
    # Another registry's answer is looked up among its own digests: none is TH-1.
    assert [r.code for r in await from_registry(registry, "CH", answer)] == ["DIGEST_UNKNOWN"]  # type: ignore[attr-defined]
    [mismatch] = await from_registry(registry, "TH", answer)
    assert isinstance(mismatch, pb.ReconciliationMismatch) and list(mismatch.accounts) == ["TH-CO"]
    # 100 of the disputed kind are reserved (an order's): a block freeze would not stop
    # their settlement, so the whole account is frozen, in the mismatch's transaction.
    account = (await callers["regulator"].get("/accounts/TH-CO")).json()
    assert account["frozen"] is True
    frozen = await registry.pool.fetchval(
        "SELECT envelope FROM events WHERE stream_id = 'account-TH-CO' ORDER BY version DESC LIMIT 1"
    )
    assert "reconciliation TH-1" in unwrap(frozen)[1].reason  # type: ignore[attr-defined]
    late = await from_registry(registry, "TH", pb.AnswerHoldingsDigest(digest_id=issued.digest_id, matches=True))
    assert [r.code for r in late] == ["DIGEST_UNKNOWN"]  # type: ignore[attr-defined]


async def test_a_dispute_over_held_units_freezes_those_blocks_alone(
    world: tuple[Registry, dict[str, Caller]],
) -> None:
    registry, callers = world
    assert await Scheduler(registry).run_once() == 0
    _, issued = unwrap(
        await registry.pool.fetchval(
            "SELECT envelope FROM events WHERE stream_id = 'reconciliation-TH' ORDER BY version DESC LIMIT 1"
        )
    )
    assert isinstance(issued, pb.HoldingsDigestIssued)
    theirs = pb.HoldingRow()
    theirs.CopyFrom(issued.rows[0])
    theirs.vintage += 1  # the registry books the account's units under another vintage
    gone = pb.HoldingRow()
    gone.CopyFrom(issued.rows[0])
    gone.quantity = 0
    answer = pb.AnswerHoldingsDigest(digest_id=issued.digest_id, theirs=[gone, theirs])
    [mismatch] = await from_registry(registry, "TH", answer)
    assert isinstance(mismatch, pb.ReconciliationMismatch)
    account = (await callers["regulator"].get("/accounts/TH-CO")).json()
    assert (account["frozen"], account["held"]) == (False, 0)  # the account stays open; its units do not
    blocks = await registry.pool.fetch("SELECT serial_start, serial_end, status, reservation_id FROM blocks")
    assert [tuple(b) for b in blocks] == [(1, 5000, "frozen", f"!TH-CO:reconciliation-{issued.digest_id}")]
    refused = await run(registry, pb.ReserveUnits(reservation_id="R-1", account_id="TH-CO", quantity=1))
    assert [r.code for r in refused] == ["HOLDINGS_INSUFFICIENT"]  # type: ignore[attr-defined]
    released = await callers["regulator"].post(
        f"/accounts/TH-CO/block-freezes/reconciliation-{issued.digest_id}/release", {"reason": "books corrected"}
    )
    assert (released.status_code, released.json()["state"]) == (200, "unfrozen")
    assert await held(registry, "TH-CO") == 5000


async def test_a_regulator_freezes_serials_under_review_and_lifts_the_freeze(
    world: tuple[Registry, dict[str, Caller]],
) -> None:
    registry, callers = world
    regulator, broker = callers["regulator"], callers["broker"]
    body = {"freeze_id": "F-1", "namespace": "JCM-TH", "start": 1, "end": 100, "reason": "issuance under review"}
    assert (await broker.post("/accounts/TH-CO/block-freezes", body)).status_code == 403
    frozen = await regulator.post("/accounts/TH-CO/block-freezes", body)
    assert frozen.status_code == 201, frozen.text
    assert frozen.json()["blocks"] == [["JCM-TH", 1, 100]]
    assert await held(registry, "TH-CO") == 4900
    again = await regulator.post("/accounts/TH-CO/block-freezes", body | {"freeze_id": "F-2", "start": 50})
    assert (again.status_code, again.json()["code"]) == (422, "UNITS_NOT_HELD")
    [reserved] = await run(registry, pb.ReserveUnits(reservation_id="R-1", account_id="TH-CO", quantity=10))
    assert isinstance(reserved, pb.UnitsReserved) and [(b.start, b.end) for b in reserved.blocks] == [(101, 110)]
    lifted = await regulator.post("/accounts/TH-CO/block-freezes/F-1/release", {"reason": "cleared"})
    assert (lifted.status_code, lifted.json()["state"]) == (200, "unfrozen")
    assert await held(registry, "TH-CO") == 4990
    unknown = await regulator.post("/accounts/TH-CO/block-freezes/F-1/release", {"reason": "again"})
    assert (unknown.status_code, unknown.json()["code"]) == (404, "FREEZE_UNKNOWN")
    blocks = await registry.pool.fetch("SELECT serial_start, serial_end, status FROM blocks ORDER BY serial_start")
    assert [tuple(b) for b in blocks] == [(1, 100, "held"), (101, 110, "reserved"), (111, 5000, "held")]


async def test_a_digest_of_more_rows_than_a_part_comes_in_parts_and_is_answered_whole(
    world: tuple[Registry, dict[str, Caller]],
    kernel: Kernel,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, _ = world
    await run(registry, open_account("TH-CO-2", "TH"))
    await issued(registry, issuance("I-2", "TH-CO-2", 6001, 6100))
    monkeypatch.setenv("TONNE_DIGEST_PART_ROWS", "1")
    parted = Registry(kernel, POLICY)  # an instance configured for one row a part
    assert await Scheduler(parted).run_once() == 0
    rows = await parted.pool.fetch("SELECT envelope FROM events WHERE stream_id = 'reconciliation-TH' ORDER BY version")
    parts = [unwrap(r["envelope"])[1] for r in rows]
    assert [(p.part, p.parts, p.total_rows, [r.account_id for r in p.rows]) for p in parts] == [  # type: ignore[attr-defined]
        (1, 2, 2, ["TH-CO"]),
        (2, 2, 2, ["TH-CO-2"]),
    ]
    assert await parted.pool.fetchval("SELECT count(*) FROM digest_rows WHERE digest_id = 'TH-1'") == 2
    # The registry disagrees on the second part's row: tonne's figure comes from the stored rows.
    theirs = pb.HoldingRow()
    theirs.CopyFrom(parts[1].rows[0])  # type: ignore[attr-defined]
    theirs.quantity = 99
    [mismatch] = await from_registry(parted, "TH", pb.AnswerHoldingsDigest(digest_id="TH-1", theirs=[theirs]))
    assert isinstance(mismatch, pb.ReconciliationMismatch)
    assert [(r.account_id, r.quantity) for r in mismatch.ours] == [("TH-CO-2", 100)]
    assert list(mismatch.accounts) == ["TH-CO-2"]
