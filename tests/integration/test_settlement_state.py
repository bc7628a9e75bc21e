"""Settlement on the new kernel against a real PostgreSQL: trades driven through the real
handlers and units of work, reads from the projections, failures that roll back, and the
live state hash equal to replay from zero and from snapshots."""

from __future__ import annotations

import io
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import openpyxl
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from google.protobuf.message import Message

from services.common import topics
from services.common.auth import DevIssuer
from services.common.db import connect_pool, migrate
from services.common.envelope import Context, unwrap, wrap
from services.common.errors import DomainError
from services.common.inputs import INT64_MAX
from services.common.replay import replay
from services.common.runtime import Kernel
from services.common.settings import Settings
from services.settlement.api import router
from services.settlement.projections import overlapping
from services.settlement.service import Settlement
from tests.unit.factories import loa
from tests.unit.test_settlement_index import Index
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb
from tonne.v1.envelope_pb2 import CommandRejected, Envelope

OCCURRED = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


@dataclass
class Rig:
    service: Settlement
    settings: Settings
    api: httpx.AsyncClient
    deposits: int = 0

    async def deliver(self, topic: str, message: Message, key: str = "k") -> Envelope:
        """Hand one record to the service's handler in its own unit of work, as the consumer does."""
        envelope = wrap(message, aggregate_id=key, context=Context.new("test"), occurred_at=OCCURRED)
        async with self.service.unit_of_work() as uow:
            await self.service.handlers[topic](uow, envelope, message)
        return envelope

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        return list(await self.service.pool.fetch(query, *args))

    async def outbox(self) -> list[tuple[str, str, Message]]:
        rows = await self.fetch("SELECT topic, key, value FROM outbox ORDER BY id")
        return [(r["topic"], r["key"].decode(), unwrap(r["value"])[1]) for r in rows]

    async def commands(self) -> list[tuple[str, str, Message]]:
        """What the service asked other services to do (the outbox minus its own events)."""
        news = (
            topics.SETTLEMENT_EVENTS,
            topics.SETTLEMENT_COVERS,
            *map(topics.registry_outbound, topics.JURISDICTIONS),
        )
        return [row for row in await self.outbox() if row[0] not in news]

    async def events(self) -> int:
        return int(await self.service.pool.fetchval("SELECT count(*) FROM events"))

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.api.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def fund(self, account_id: str, amount: int, currency: str = "USD") -> Any:
        """The registry's account (as settlement observes it) and the operator's deposit."""
        opened = rpb.AccountOpened(account_id=account_id, jurisdiction=account_id[:2])
        await self.deliver(topics.REGISTRY_EVENTS, opened)
        self.deposits += 1
        body = {"movement_id": f"D{self.deposits}", "account_id": account_id, "currency": currency, "amount": amount}
        response = await self.api.post("/cash/deposits", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    async def cash(self, account_id: str) -> tuple[int, int]:
        """(available, held) in USD."""
        balance = (await self.get(f"/cash/{account_id}")).get("USD", {"available": 0, "held": 0})
        assert balance.get("reserved", 0) == 0  # no resting buy orders in these tests
        return balance["available"], balance["held"]


@pytest.fixture
async def rig(fresh_database_url: str, dev_issuer: DevIssuer) -> AsyncIterator[Rig]:
    await migrate(fresh_database_url, "settlement")
    settings = Settings(
        service="settlement",
        kafka_bootstrap="127.0.0.1:9",  # never contacted: handlers only write the outbox
        database_url=fresh_database_url,
        TONNE_SNAPSHOT_EVERY=2,
    )
    pool = await connect_pool(fresh_database_url, "settlement")
    service = Settlement(Kernel(settings, pool))
    app = FastAPI()
    app.include_router(router(service))

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(status_code=exc.http_status, content=exc.body())

    # The operator reads everything; tenancy has its own test below.
    operator = {"authorization": f"Bearer {dev_issuer.mint('venue-ops', ['operator'])}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://settlement", headers=operator) as api:
        yield Rig(service, settings, api)
    await pool.close()


def trade(trade_id: str, price: int = 1500, quantity: int = 3000, seller: str = "TH-GOV") -> mpb.TradeExecuted:
    return mpb.TradeExecuted(
        trade_id=trade_id,
        instrument_id="JCM-TH-2024-NDC",
        price=price,
        quantity=quantity,
        currency="USD",
        buy_order_id=f"B-{trade_id}",
        sell_order_id=f"S-{trade_id}",
        buyer_account_id="CH-BUYER",
        seller_account_id=seller,
        buyer_broker_id="broker-b",
        seller_broker_id="broker-a",
    )


def decision(trade_id: str, approve: bool = True) -> cpb.ScreeningDecision:
    return cpb.ScreeningDecision(
        request_id=trade_id,
        trade_id=trade_id,
        verdict=cpb.APPROVED if approve else cpb.REJECTED,
        results=[] if approve else [cpb.RuleResult(code="DOUBLE_CLAIMING_AUTHORIZATION", passed=False)],
    )


def moved(
    transfer_id: str, *serials: tuple[int, int], to: str = "CH", namespace: str = "JCM-TH", seller: str = "TH-GOV"
) -> rpb.UnitsTransferred:
    return rpb.UnitsTransferred(
        transfer_id=transfer_id,
        reservation_id=f"S-{transfer_id}",
        from_account_id=seller,
        to_account_id="CH-BUYER",
        from_jurisdiction="TH",
        to_jurisdiction=to,
        quantity=sum(end - start + 1 for start, end in serials),
        blocks=[
            rpb.SerialBlock(
                namespace=namespace,
                start=start,
                end=end,
                attributes=rpb.UnitAttributes(host_party="TH", vintage=2024, authorization_id="LOA-TH-1"),
            )
            for start, end in serials
        ],
    )


async def settle(rig: Rig, trade_id: str, *serials: tuple[int, int], **terms: Any) -> None:
    """A trade of exactly the serials delivered (the registry moves what was traded), its
    buyer funded first."""
    terms.setdefault("quantity", sum(end - start + 1 for start, end in serials))
    await rig.fund("CH-BUYER", terms.get("price", 1500) * terms["quantity"])
    await rig.deliver(topics.MATCHING_EVENTS, trade(trade_id, **terms))
    await rig.deliver(topics.COMPLIANCE_DECISIONS, decision(trade_id))
    await rig.deliver(topics.REGISTRY_EVENTS, moved(trade_id, *serials, seller=terms.get("seller", "TH-GOV")))


async def hashes(rig: Rig) -> tuple[str, str, str]:
    async with rig.service.pool.acquire() as conn:
        live = (await rig.service.state.hash(conn)).state
    zero = (await replay(rig.settings, Settlement, "zero")).state
    from_snapshot = (await replay(rig.settings, Settlement, "snapshot")).state
    return live, zero, from_snapshot


async def test_a_cross_border_trade_settles_through_the_real_handlers(rig: Rig) -> None:
    await rig.deliver(topics.REGISTRY_EVENTS, rpb.AuthorizationRecorded(authorization=loa()))
    # Serials 1..1000 crossed a border earlier (another venue's transfer): adjusted then.
    await rig.deliver(topics.REGISTRY_EVENTS, moved("EARLIER", (1, 1000)))
    assert [tuple(r) for r in await rig.fetch('SELECT start, "end" FROM first_transferred')] == [(1, 1000)]

    await rig.fund("CH-BUYER", 5_000_000)
    await rig.deliver(topics.MATCHING_EVENTS, trade("T1"))
    assert (await rig.get("/settlements/T1"))["phase"] == "screening"
    assert await rig.cash("CH-BUYER") == (500_000, 4_500_000)  # the payment is held
    [(topic, key, screen)] = await rig.commands()
    assert (topic, key) == (topics.COMPLIANCE_REQUESTS, "T1") and isinstance(screen, cpb.ScreenTransfer)

    await rig.deliver(topics.COMPLIANCE_DECISIONS, decision("T1"))
    assert (await rig.get("/settlements/T1"))["phase"] == "transferring"
    *_, (topic, key, command) = await rig.commands()
    assert (topic, key) == (topics.REGISTRY_COMMANDS, "TH-GOV") and isinstance(command, rpb.TransferUnits)

    # A duplicate of the decision (another envelope, the same verdict) does nothing.
    events, outbox = await rig.events(), await rig.outbox()
    await rig.deliver(topics.COMPLIANCE_DECISIONS, decision("T1"))
    await rig.deliver(topics.COMPLIANCE_DECISIONS, decision("T1", approve=False))
    assert (await rig.events(), await rig.outbox()) == (events, outbox)

    # The units moved, but the handler's transaction fails after deciding: nothing shows.
    before = (await rig.get("/settlements/T1"), await rig.get("/cash/CH-BUYER"), await rig.get("/adjustments"))
    envelope = wrap(moved("T1", (1, 3000)), aggregate_id="k", context=Context.new("test"), occurred_at=OCCURRED)
    with pytest.raises(RuntimeError, match="connection lost"):
        async with rig.service.unit_of_work() as uow:
            await rig.service.on_registry(uow, envelope, moved("T1", (1, 3000)))
            raise RuntimeError("connection lost mid-transaction")
    after = (await rig.get("/settlements/T1"), await rig.get("/cash/CH-BUYER"), await rig.get("/adjustments"))
    assert after == before and after[0]["phase"] == "transferring"
    assert after[1] == {"USD": {"available": 500_000, "reserved": 0, "held": 4_500_000}}
    assert await rig.events() == events
    assert [tuple(r) for r in await rig.fetch('SELECT start, "end" FROM first_transferred')] == [(1, 1000)]

    # The retry (the consumer's next attempt) settles: 2,000 serials are first-transferred now.
    async with rig.service.unit_of_work() as uow:
        await rig.service.on_registry(uow, envelope, moved("T1", (1, 3000)))
    done = await rig.get("/settlements/T1")
    assert (done["phase"], done["failure"], done["quantity"], done["price"]) == ("settled", "", 3000, 1500)
    [adjustment] = done["corresponding_adjustments"]
    assert adjustment == {
        "adjustment_id": "T1:TH:2024:LOA-TH-1",
        "trade_id": "T1",
        "party": "TH",
        "side": "FIRST_TRANSFERRING",
        "vintage": 2024,
        "quantity": "2000",
        "authorization_id": "LOA-TH-1",
    }
    assert await rig.cash("CH-BUYER") == (500_000, 0)
    assert await rig.cash("TH-GOV") == (4_500_000, 0)
    # Every posting's legs sum to zero; the venue's bank owes what was deposited.
    assert await rig.fetch("SELECT posting_id FROM cash_legs GROUP BY posting_id HAVING sum(amount) <> 0") == []
    assert await rig.service.pool.fetchval("SELECT sum(available) FROM cash_accounts") == 0
    assert [tuple(r) for r in await rig.fetch('SELECT start, "end" FROM first_transferred')] == [(1, 3000)]
    # The earlier transfer abroad, outside any trade, owed its own adjustment (1,000 t).
    page = await rig.get("/adjustments", party="TH")
    assert page["items"][0] == adjustment and page["next"] is None
    assert [(a["trade_id"], a["quantity"]) for a in page["items"][1:]] == [("transfer:EARLIER", "1000")]
    assert await rig.get("/adjustments", party="CH") == {"items": [], "next": None}
    # Each adjustment went to Thailand's national registry too.
    notices = [m for t, _, m in await rig.outbox() if t == topics.registry_outbound("TH")]
    assert [n.adjustment_id for n in notices if isinstance(n, spb.CorrespondingAdjustmentApplied)] == [
        "transfer:EARLIER:TH:2024:LOA-TH-1",
        "T1:TH:2024:LOA-TH-1",
    ]

    live, zero, from_snapshot = await hashes(rig)
    assert live == zero == from_snapshot
    assert await rig.service.pool.fetchval("SELECT count(*) FROM snapshots WHERE stream_id = 'settlement-T1'") == 1


async def test_refusals_release_the_sellers_units_and_the_buyers_cash(rig: Rig) -> None:
    # No cash for the payment: failed before screening, units released.
    await rig.deliver(topics.MATCHING_EVENTS, trade("T1"))
    failed = await rig.get("/settlements/T1")
    assert (failed["phase"], failed["failure"].split(":")[0]) == ("failed", "CASH_INSUFFICIENT")
    [(_, _, release)] = await rig.commands()
    assert release == rpb.ReleaseReservation(reservation_id="S-T1", quantity=3000)

    # Screening rejected.
    await rig.fund("CH-BUYER", 4_500_000)
    await rig.deliver(topics.MATCHING_EVENTS, trade("T2"))
    assert await rig.cash("CH-BUYER") == (0, 4_500_000)
    await rig.deliver(topics.COMPLIANCE_DECISIONS, decision("T2", approve=False))
    failed = await rig.get("/settlements/T2")
    assert (failed["phase"], failed["failure"]) == ("failed", "COMPLIANCE_REJECTED: DOUBLE_CLAIMING_AUTHORIZATION")
    *_, (_, _, release) = await rig.commands()
    assert release == rpb.ReleaseReservation(reservation_id="S-T2", quantity=3000)
    assert await rig.cash("CH-BUYER") == (4_500_000, 0)  # given back

    # price * quantity beyond int64: failed at start, never screened, units released.
    await rig.deliver(topics.MATCHING_EVENTS, trade("T3", price=2**62, quantity=4))
    failed = await rig.get("/settlements/T3")
    assert (failed["phase"], failed["failure"].split(":")[0]) == ("failed", "CASH_AMOUNT_OVERFLOW")
    *_, (topic, key, release) = await rig.commands()
    assert (topic, key) == (topics.REGISTRY_COMMANDS, "TH-GOV")
    assert release == rpb.ReleaseReservation(reservation_id="S-T3", quantity=4)
    assert not any(isinstance(m, cpb.ScreenTransfer) and m.trade_id == "T3" for _, _, m in await rig.commands())

    # The registry refused the transfer.
    await rig.deliver(topics.MATCHING_EVENTS, trade("T4"))
    await rig.deliver(topics.COMPLIANCE_DECISIONS, decision("T4"))
    refused = CommandRejected(command_id="T4", command_type="tonne.v1.TransferUnits", code="RESERVATION_UNKNOWN")
    await rig.deliver(topics.REGISTRY_EVENTS, refused)
    assert (await rig.get("/settlements/T4"))["failure"] == "RESERVATION_UNKNOWN: "
    assert await rig.cash("CH-BUYER") == (4_500_000, 0)

    live, zero, from_snapshot = await hashes(rig)
    assert live == zero == from_snapshot


async def test_a_balance_that_would_leave_int64_fails_the_settlement_before_the_units_move(rig: Rig) -> None:
    await rig.deliver(topics.REGISTRY_EVENTS, rpb.AuthorizationRecorded(authorization=loa()))
    await settle(rig, "BIG", (1, 1), price=INT64_MAX, quantity=1, seller="SELLER")
    assert await rig.cash("SELLER") == (INT64_MAX, 0)
    await settle(rig, "ONE-MORE", (2, 2), price=1, quantity=1, seller="SELLER")
    failed = await rig.get("/settlements/ONE-MORE")
    assert (failed["phase"], failed["failure"].split(":")[0]) == ("failed", "CASH_BALANCE_OVERFLOW")
    assert failed["corresponding_adjustments"] == []  # never instructed: no unit crossed
    assert not any(isinstance(m, rpb.TransferUnits) and m.transfer_id == "ONE-MORE" for _, _, m in await rig.commands())
    assert await rig.cash("SELLER") == (INT64_MAX, 0)
    assert await rig.cash("CH-BUYER") == (1, 0)


async def test_hostile_records_and_requests_are_refused_with_a_code(rig: Rig) -> None:
    for bad in (trade("x" * 1_000_000), trade("T5", quantity=2**63), trade("T6", price=-1)):
        with pytest.raises(DomainError) as refused:
            await rig.deliver(topics.MATCHING_EVENTS, bad)
        assert refused.value.code == "TRADE_INVALID"
    forged = rpb.RecordAuthorization(authorization_id="L" * 100_000, host_party="TH")
    with pytest.raises(DomainError, match="AUTHORIZATION_INVALID"):
        await rig.deliver(topics.REGISTRY_EVENTS, rpb.AuthorizationRecorded(authorization=forged))
    with pytest.raises(DomainError, match="TRANSFER_INVALID"):
        await rig.deliver(topics.REGISTRY_EVENTS, moved("T7", (5, 2**63)))
    await rig.deliver(topics.COMPLIANCE_DECISIONS, decision("y" * 100_000))  # no such settlement: ignored
    assert await rig.events() == 0 and await rig.outbox() == []

    cases: list[tuple[str, dict[str, Any]]] = [
        ("/settlements/" + "x" * 65, {}),
        ("/settlements/a%00b", {}),
        ("/cash/%ED%A0%80", {}),
        ("/adjustments", {"limit": 2**64}),
        ("/adjustments", {"limit": 0}),
        ("/adjustments", {"party": "T'"}),
        ("/adjustments", {"after": "not a cursor!"}),
        ("/adjustments", {"after": "bm90IGpzb24"}),  # base64 of "not json"
    ]
    for path, params in cases:
        response = await rig.api.get(path, params=params)
        assert response.status_code == 422, (path, params, response.text)
    response = await rig.api.get("/settlements/NOPE")
    assert response.status_code == 404 and response.json()["code"] == "SETTLEMENT_UNKNOWN"


async def test_adjustments_are_paged_by_cursor(rig: Rig) -> None:
    await rig.deliver(topics.REGISTRY_EVENTS, rpb.AuthorizationRecorded(authorization=loa()))
    for n in range(7):
        await settle(rig, f"P{n}", (n * 10 + 1, n * 10 + 5))
    seen, after, pages = [], None, 0
    while True:
        page = await rig.get("/adjustments", limit=3, **({"after": after} if after else {}))
        seen += [item["trade_id"] for item in page["items"]]
        pages += 1
        after = page["next"]
        if after is None:
            break
    assert seen == [f"P{n}" for n in range(7)] and pages == 3


async def test_the_interval_index_matches_its_model(rig: Rig) -> None:
    """Random cross-border transfers (seeded) into the SQL index, against the pure model."""
    await rig.deliver(topics.REGISTRY_EVENTS, rpb.AuthorizationRecorded(authorization=loa()))
    rng = random.Random(6_2)
    model = Index()
    for n in range(60):
        serials = [(start, start + rng.randrange(40)) for start in rng.sample(range(1, 1500), 2)]
        await rig.deliver(topics.REGISTRY_EVENTS, moved(f"X{n}", *serials))
        for interval in serials:
            model.mark(interval)
    rows = await rig.fetch("SELECT start, \"end\" FROM first_transferred WHERE namespace = 'JCM-TH' ORDER BY start")
    assert [tuple(r) for r in rows] == model.runs
    async with rig.service.pool.acquire() as conn:
        for _ in range(200):
            start = rng.randrange(0, 1600)
            query = (start, start + rng.randrange(100))
            assert await overlapping(conn, "JCM-TH", query) == model.overlapping(query)
    # Domestic or unauthorized transfers owe nothing and are not recorded at all.
    await rig.deliver(topics.REGISTRY_EVENTS, moved("DOMESTIC", (5000, 5100), to="TH"))
    assert await rig.fetch("SELECT * FROM first_transferred WHERE start >= 5000") == []


async def test_live_and_replay_agree_after_many_trades_with_snapshots_and_a_cold_cache(rig: Rig) -> None:
    await rig.deliver(topics.REGISTRY_EVENTS, rpb.AuthorizationRecorded(authorization=loa()))
    for n in range(12):
        await settle(rig, f"H{n}", (n * 7 + 1, n * 7 + 9), price=100 + n, quantity=9)
    await rig.fund("CH-BUYER", 1500 * 3000)
    await rig.deliver(topics.MATCHING_EVENTS, trade("PENDING"))  # one still screening
    live, zero, from_snapshot = await hashes(rig)
    assert live == zero == from_snapshot
    rig.service.settlements._cache.clear()  # a restart: aggregates come back from snapshot + tail
    rig.service.cash_accounts._cache.clear()
    async with rig.service.pool.acquire() as conn:
        assert (await rig.service.state.hash(conn)).state == live
    await rig.deliver(topics.COMPLIANCE_DECISIONS, decision("PENDING"))
    assert (await rig.get("/settlements/PENDING"))["phase"] == "transferring"


async def test_each_reader_sees_only_its_tenancy(rig: Rig, dev_issuer: DevIssuer) -> None:
    """Settlements: the operator, a broker of either side, a regulator of either account's
    jurisdiction. Cash: the operator and a broker with a mandate. Adjustments: the operator
    and the party's supervisors. Everyone else gets what an unknown object gets."""
    for account, jurisdiction in (("TH-GOV", "TH"), ("CH-BUYER", "CH")):
        await rig.deliver(topics.REGISTRY_EVENTS, rpb.AccountOpened(account_id=account, jurisdiction=jurisdiction))
    await rig.deliver(topics.REGISTRY_EVENTS, rpb.AuthorizationRecorded(authorization=loa()))
    await settle(rig, "T1", (1, 3000))
    grant = rpb.MandateGranted(mandate_id="M1", account_id="CH-BUYER", broker_id="broker-b", jurisdiction="CH")
    await rig.deliver(topics.REGISTRY_EVENTS, grant)

    def token(subject: str, *roles: str, broker_id: str = "") -> dict[str, str]:
        return {"authorization": f"Bearer {dev_issuer.mint(subject, list(roles), broker_id)}"}

    readers = {
        "anonymous": {"authorization": ""},
        "broker-a": token("broker-a", "broker", broker_id="broker-a"),
        "broker-b": token("broker-b", "broker", broker_id="broker-b"),
        "broker-c": token("broker-c", "broker", broker_id="broker-c"),
        "regulator:TH": token("th", "regulator:TH"),
        "regulator:CN": token("cn", "regulator:CN"),
        "registry-operator:TH": token("th-reg", "registry-operator:TH"),
        "national-registry:CH": token("ch-nat", "national-registry:CH"),
    }
    expected = {
        # reader: (settlement T1, cash of CH-BUYER, adjustments of TH, adjustments of CH)
        "anonymous": (401, 401, 401, 401),
        "broker-a": (200, 404, 403, 403),
        "broker-b": (200, 200, 403, 403),
        "broker-c": (404, 404, 403, 403),
        "regulator:TH": (200, 403, 200, 403),
        "regulator:CN": (404, 403, 403, 403),
        "registry-operator:TH": (403, 403, 200, 403),
        "national-registry:CH": (403, 403, 403, 200),
    }
    for name, headers in readers.items():
        statuses = []
        for path, params in (
            ("/settlements/T1", {}),
            ("/cash/CH-BUYER", {}),
            ("/adjustments", {"party": "TH"}),
            ("/adjustments", {"party": "CH"}),
        ):
            response = await rig.api.get(path, params=params, headers=headers)
            statuses.append(response.status_code)
            if response.status_code != 200:  # a refusal carries none of the object's data
                assert set(response.json()) == {"code", "reason", "evidence"}
                assert "4500000" not in response.text and "TH-GOV" not in response.text
        assert tuple(statuses) == expected[name], name
    # An unknown settlement and another's answer alike; a supervisor must name its party.
    unknown = await rig.api.get("/settlements/NOPE", headers=readers["broker-c"])
    hidden = await rig.api.get("/settlements/T1", headers=readers["broker-c"])
    assert unknown.json()["code"] == hidden.json()["code"] == "SETTLEMENT_UNKNOWN"
    assert (await rig.api.get("/adjustments", headers=readers["regulator:TH"])).status_code == 403
    assert (await rig.api.get("/cash/TH-GOV", headers=readers["broker-b"])).status_code == 404

    # A revoked mandate ends the broker's view of the cash.
    revoke = rpb.MandateRevoked(mandate_id="M1", account_id="CH-BUYER", broker_id="broker-b", jurisdiction="CH")
    await rig.deliver(topics.REGISTRY_EVENTS, revoke)
    assert (await rig.api.get("/cash/CH-BUYER", headers=readers["broker-b"])).status_code == 404
    for forged in (
        rpb.MandateGranted(mandate_id="M2", account_id="A" * 1000, broker_id="b", jurisdiction="CH"),
        rpb.AccountOpened(account_id="X", jurisdiction="C'H"),
    ):
        with pytest.raises(DomainError):
            await rig.deliver(topics.REGISTRY_EVENTS, forged)


async def test_deposits_and_withdrawals_by_the_operator(rig: Rig, dev_issuer: DevIssuer) -> None:
    """Idempotent by the operator's reference, refused with codes, and every posting nets
    to zero; a statement pages the account's legs."""
    done = await rig.fund("CH-BUYER", 1_000)
    assert done == {
        "movement_id": "D1",
        "account_id": "CH-BUYER",
        "currency": "USD",
        "amount": 1_000,
        "available": 1_000,
        "reserved": 0,
        "held": 0,
    }
    again = await rig.api.post("/cash/deposits", json={**done, "available": None} | {"amount": 1_000})
    assert again.status_code == 422  # unknown fields are refused, not ignored
    body = {"movement_id": "D1", "account_id": "CH-BUYER", "currency": "USD", "amount": 1_000}
    same = await rig.api.post("/cash/deposits", json=body)
    assert (same.status_code, same.json()) == (200, done)  # the same request again: nothing changes
    other = await rig.api.post("/cash/deposits", json=body | {"amount": 999})
    assert (other.status_code, other.json()["code"]) == (409, "CASH_MOVEMENT_ID_REUSED")
    unknown = await rig.api.post("/cash/deposits", json=body | {"movement_id": "D9", "account_id": "NOBODY"})
    assert (unknown.status_code, unknown.json()["code"]) == (404, "ACCOUNT_UNKNOWN")
    for bad in ({"amount": 0}, {"amount": 2**63}, {"currency": "usd"}, {"account_id": "x" * 65}):
        assert (await rig.api.post("/cash/deposits", json=body | {"movement_id": "D8"} | bad)).status_code == 422
    broker = {"authorization": f"Bearer {dev_issuer.mint('b', ['broker'], 'broker-b')}"}
    assert (await rig.api.post("/cash/deposits", json=body | {"movement_id": "D7"}, headers=broker)).status_code == 403

    withdrawal = {"movement_id": "W1", "account_id": "CH-BUYER", "currency": "USD", "amount": 1_001}
    short = await rig.api.post("/cash/withdrawals", json=withdrawal)
    assert (short.status_code, short.json()["code"]) == (422, "CASH_INSUFFICIENT")
    taken = await rig.api.post("/cash/withdrawals", json=withdrawal | {"amount": 400})
    assert (taken.status_code, taken.json()["available"]) == (201, 600)
    assert await rig.cash("CH-BUYER") == (600, 0)

    legs, after = [], 0
    while True:
        page = await rig.get("/cash/CH-BUYER/statement", currency="USD", limit=1, after=after)
        legs += [(leg["posting_id"], leg["amount"]) for leg in page["items"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert legs == [("deposit:D1", 1_000), ("withdrawal:W1", -400)]
    assert await rig.fetch("SELECT posting_id FROM cash_legs GROUP BY posting_id HAVING sum(amount) <> 0") == []
    live, zero, from_snapshot = await hashes(rig)
    assert live == zero == from_snapshot


async def test_a_buy_order_is_covered_before_it_rests_and_its_trades_are_paid_from_the_cover(rig: Rig) -> None:
    """Matching's intake asks settlement.commands to cover a buy; the answer goes out on
    settlement.events; the order's trades hold their payment from the cover; a cancelled
    order gives back what is left; an uncovered buy is refused with a code."""
    await rig.fund("CH-BUYER", 5_000_000)
    cover = spb.ReserveCash(order_id="B-T1", account_id="CH-BUYER", currency="USD", amount=1600 * 3000, quantity=3000)
    await rig.deliver(topics.SETTLEMENT_COMMANDS, cover)
    [(topic, key, reserved)] = [row for row in await rig.outbox() if isinstance(row[2], spb.CashReserved)]
    assert isinstance(reserved, spb.CashReserved)
    assert (topic, key, reserved.amount) == (topics.SETTLEMENT_COVERS, "CH-BUYER", 4_800_000)
    assert await rig.get("/cash/CH-BUYER") == {"USD": {"available": 200_000, "reserved": 4_800_000, "held": 0}}

    too_much = spb.ReserveCash(order_id="B-T9", account_id="CH-BUYER", currency="USD", amount=200_001, quantity=1)
    await rig.deliver(topics.SETTLEMENT_COMMANDS, too_much)
    [refused] = [m for _, _, m in await rig.outbox() if isinstance(m, CommandRejected)]
    assert (refused.command_id, refused.command_type, refused.code) == (
        "B-T9",
        "tonne.v1.ReserveCash",
        "CASH_INSUFFICIENT",
    )

    await rig.deliver(topics.MATCHING_EVENTS, trade("T1", quantity=1000))  # 1,000 of the 3,000 at 1,500
    # 1,500,000 of the cover is now held for T1.
    assert await rig.get("/cash/CH-BUYER") == {"USD": {"available": 200_000, "reserved": 3_300_000, "held": 1_500_000}}
    await rig.deliver(
        topics.MATCHING_EVENTS, mpb.OrderCancelled(order_id="B-T1", side=mpb.BUY, remaining_quantity=2000)
    )
    assert await rig.cash("CH-BUYER") == (3_500_000, 1_500_000)  # the rest of the cover is back
    await rig.deliver(topics.COMPLIANCE_DECISIONS, decision("T1"))
    await rig.deliver(topics.REGISTRY_EVENTS, moved("T1", (1, 1000)))
    assert await rig.cash("CH-BUYER") == (3_500_000, 0) and await rig.cash("TH-GOV") == (1_500_000, 0)
    with pytest.raises(DomainError, match="COVER_INVALID"):
        hostile = spb.ReserveCash(order_id="x" * 100, account_id="CH-BUYER", currency="usd", amount=1, quantity=1)
        await rig.deliver(topics.SETTLEMENT_COMMANDS, hostile)
    assert await rig.fetch("SELECT posting_id FROM cash_legs GROUP BY posting_id HAVING sum(amount) <> 0") == []
    live, zero, from_snapshot = await hashes(rig)
    assert live == zero == from_snapshot


async def test_adjustments_at_the_event_each_loa_names_and_the_parties_ledgers(rig: Rig, dev_issuer: DevIssuer) -> None:
    """An LoA whose first transfer is the issuance is adjusted when the units are issued
    (not again when they cross a border); one whose first transfer is the authorization,
    when it is recorded; the acquiring party adjusts when it retires ITMOs for its NDC."""
    at_issuance = loa("LOA-ISS", 5000)
    at_issuance.first_transfer = rpb.AT_ISSUANCE
    at_authorization = loa("LOA-AUTH", 700)
    at_authorization.first_transfer, at_authorization.vintage_from = rpb.AT_AUTHORIZATION, 2025
    for authorization in (at_issuance, at_authorization):
        await rig.deliver(topics.REGISTRY_EVENTS, rpb.AuthorizationRecorded(authorization=authorization))
    [block] = moved("X", (1, 2000)).blocks
    block.attributes.authorization_id = "LOA-ISS"
    await rig.deliver(topics.REGISTRY_EVENTS, rpb.UnitsIssued(issuance_id="I1", account_id="TH-GOV", block=block))
    abroad = moved("X1", (1, 500))
    abroad.blocks[0].attributes.authorization_id = "LOA-ISS"
    await rig.deliver(topics.REGISTRY_EVENTS, abroad)  # adjusted at issuance: nothing more
    used = rpb.UnitsRetired(retirement_id="R1", account_id="CH-BUYER", jurisdiction="CH", quantity=500,
                            blocks=abroad.blocks, purpose="NDC", use=rpb.CLAIM_NDC)  # fmt: skip
    await rig.deliver(topics.REGISTRY_EVENTS, used)

    rows = await rig.fetch("SELECT trade_id, party, side, vintage, quantity, event FROM adjustments ORDER BY 1, 2")
    assert [tuple(r) for r in rows] == [
        ("authorization:LOA-AUTH", "TH", spb.FIRST_TRANSFERRING, 2025, 700, rpb.AT_AUTHORIZATION),
        ("issuance:I1", "TH", spb.FIRST_TRANSFERRING, 2024, 2000, rpb.AT_ISSUANCE),
        ("retirement:R1", "CH", spb.ACQUIRING, 2024, 500, rpb.AT_USE_OR_CANCELLATION),
    ]
    thailand = await rig.get("/adjustments/ledger", party="TH")
    assert thailand["years"] == [
        {"vintage": 2024, "first_transferring": 2000, "acquiring": 0, "net": 2000},
        {"vintage": 2025, "first_transferring": 700, "acquiring": 0, "net": 700},
    ]
    swiss = await rig.get("/adjustments/ledger", party="CH")
    assert swiss["years"] == [{"vintage": 2024, "first_transferring": 0, "acquiring": 500, "net": -500}]
    regulator = {"authorization": f"Bearer {dev_issuer.mint('ch', ['regulator:CH'])}"}
    assert (await rig.api.get("/adjustments/ledger", params={"party": "TH"}, headers=regulator)).status_code == 403
    assert (await rig.api.get("/adjustments/ledger", params={"party": "CH"}, headers=regulator)).status_code == 200
    live, zero, from_snapshot = await hashes(rig)
    assert live == zero == from_snapshot


async def test_aef_reports_of_scenario_one_pass_their_checks(rig: Rig, dev_issuer: DevIssuer) -> None:
    """TH first-transfers 3,000 of a 4,000 t LoA to CH (a trade), CH resells 2,000 to SG,
    SG uses 500 toward its NDC: each party's 2026 report holds its actions and holdings,
    and its consistency checks find nothing."""
    await rig.deliver(topics.REGISTRY_EVENTS, rpb.AuthorizationRecorded(authorization=loa()))
    await settle(rig, "T1", (1, 3000))
    resale = moved("T2", (1, 2000))
    resale.from_jurisdiction, resale.to_jurisdiction = "CH", "SG"
    await rig.deliver(topics.REGISTRY_EVENTS, resale)
    used = rpb.UnitsRetired(retirement_id="R1", account_id="SG-1", jurisdiction="SG", quantity=500,
                            blocks=[moved("R", (1, 500)).blocks[0]], purpose="NDC", use=rpb.CLAIM_NDC)  # fmt: skip
    await rig.deliver(topics.REGISTRY_EVENTS, used)

    thailand = await rig.get("/aef/TH/2026")
    assert sorted((a["action"], a["quantity"]) for a in thailand["actions"]) == [
        ("ITMO_AUTHORIZATION", "4000"),
        ("ITMO_FIRST_TRANSFER", "3000"),
    ]
    assert [a["authorization_id"] for a in thailand["authorizations"]] == ["LOA-TH-1"]
    assert (thailand["consistent"], thailand["findings"]) == (True, [])
    swiss = await rig.get("/aef/CH/2026")
    assert sorted(a["action"] for a in swiss["actions"]) == ["ITMO_ACQUISITION", "ITMO_TRANSFER"]
    assert swiss["holdings"] == [{"namespace": "JCM-TH", "vintage": 2024, "quantity": 1000}] and swiss["consistent"]
    singapore = await rig.get("/aef/SG/2026")
    assert sorted(a["action"] for a in singapore["actions"]) == ["ITMO_ACQUISITION", "ITMO_USE"]
    assert singapore["holdings"] == [{"namespace": "JCM-TH", "vintage": 2024, "quantity": 1500}]
    assert (singapore["consistent"], singapore["findings"]) == (True, [])
    csv_report = await rig.api.get("/aef/SG/2026", params={"format": "csv"})
    assert csv_report.headers["content-type"].startswith("text/csv")
    assert "actions,action,ITMO_USE" in csv_report.text and csv_report.text.rstrip().endswith(
        "report,consistent,True,0"
    )
    # The workbook: one sheet per AEF table, the same rows, quantities as numbers.
    workbook = await rig.api.get("/aef/TH/2026", params={"format": "xlsx"})
    assert workbook.headers["content-disposition"] == 'attachment; filename="AEF-TH-2026.xlsx"'
    book = openpyxl.load_workbook(io.BytesIO(workbook.content), read_only=True)
    assert book.sheetnames == [
        "Submission",
        "T2 Authorizations",
        "T3 Actions",
        "T4 Holdings",
        "T5 Authorized entities",
        "Findings",
        "Consistency",
    ]
    header, *actions = [list(r) for r in book["T3 Actions"].iter_rows(values_only=True)]
    rows = [dict(zip(header, r, strict=True)) for r in actions]
    assert sorted((r["action"], r["quantity"]) for r in rows) == [
        ("ITMO_AUTHORIZATION", 4000),
        ("ITMO_FIRST_TRANSFER", 3000),
    ]
    assert {"serials.namespace", "serials.start", "serials.end"} <= set(header)
    assert [list(r) for r in book["Consistency"].iter_rows(values_only=True)][1] == ["TH", 2026, True]
    regulator = {"authorization": f"Bearer {dev_issuer.mint('sg', ['regulator:SG'])}"}
    assert (await rig.api.get("/aef/TH/2026", headers=regulator)).status_code == 403
    assert (await rig.api.get("/aef/SG/2026", headers=regulator)).status_code == 200
    assert (await rig.get("/aef/TH/2025"))["actions"] == []
    live, zero, from_snapshot = await hashes(rig)
    assert live == zero == from_snapshot
