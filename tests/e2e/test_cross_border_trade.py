"""Scenario 1 of the domain brief, end to end through the running stack:

Thailand's registry issues JCM credits (4,000 t authorized as ITMOs for NDC use, first
transfer = first international transfer); a Swiss buyer's broker buys 3,000 t from the
Thai government's broker; compliance screens, settlement moves the units and applies
Thailand's corresponding adjustment; both regulators see an intact audit chain.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common import topics
from services.common.envelope import unwrap
from tests.support import eventually, publish, read_topic
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1.envelope_pb2 import Envelope

SELLER = {"authorization": "Bearer dev-token-a"}
BUYER = {"authorization": "Bearer dev-token-b"}
INSTRUMENT = "JCM-TH-2024-NDC"


async def get_json(client: httpx.AsyncClient, url: str, **kwargs: Any) -> Any:
    response = await client.get(url, **kwargs)
    return response.json() if response.status_code == 200 else None


async def test_jcm_itmo_from_thailand_to_switzerland(running_stack: Any) -> None:
    stack, run = running_stack, uuid.uuid4().hex[:6]
    registry, matching, settlement, compliance = (
        stack.urls[name] for name in ("registry", "matching", "settlement", "compliance")
    )
    th_gov, ch_buyer, loa_id = f"TH-GOV-{run}", f"CH-BUYER-{run}", f"LOA-TH-{run}"
    inbound_th = stack.topic_prefix + topics.registry_inbound("TH")

    # Thailand's national registry speaks over its inbound topic.
    await publish(
        stack.bootstrap,
        inbound_th,
        th_gov,
        rpb.OpenAccount(account_id=th_gov, holder="Government of Thailand", jurisdiction="TH", type=rpb.GOVERNMENT),
        "registry-TH",
    )
    await publish(
        stack.bootstrap,
        inbound_th,
        "TH",
        rpb.RecordAuthorization(
            authorization_id=loa_id,
            host_party="TH",
            quantity=4000,
            use=rpb.NDC,
            first_transfer=rpb.AT_FIRST_INTERNATIONAL_TRANSFER,
            vintage_from=2024,
            vintage_to=2024,
        ),
        "registry-TH",
    )
    await publish(
        stack.bootstrap,
        inbound_th,
        th_gov,
        rpb.RecordIssuance(
            issuance_id=f"JC-TH-2024-{run}",
            account_id=th_gov,
            block=rpb.SerialBlock(
                namespace=f"JCM-TH-{run}",
                start=1,
                end=5000,
                attributes=rpb.UnitAttributes(
                    standard=rpb.JCM,
                    issuing_registry="TH-JCM-registry",
                    host_party="TH",
                    project_id="TH-FLOATING-SOLAR-1",
                    methodology="JCM_TH_AM014",
                    vintage=2024,
                    mitigation_type=rpb.REDUCTION,
                    authorization_id=loa_id,
                ),
            ),
        ),
        "registry-TH",
    )

    async with httpx.AsyncClient(timeout=10) as client:
        opened = await client.post(
            f"{registry}/accounts",
            json={"account_id": ch_buyer, "holder": "Swiss buyer AG", "jurisdiction": "CH", "type": "HOLDING"},
        )
        assert opened.status_code == 201, opened.text
        again = await client.post(
            f"{registry}/accounts",
            json={"account_id": ch_buyer, "holder": "Swiss buyer AG", "jurisdiction": "CH", "type": "HOLDING"},
        )
        assert again.status_code == 409 and again.json()["code"] == "ACCOUNT_EXISTS"

        async def seller_holds() -> Any:
            account = await get_json(client, f"{registry}/accounts/{th_gov}")
            return account if account and account["held"] == 5000 else None

        await eventually(seller_holds, "the issuance to reach the Thai government account")

        sell = await client.post(
            f"{matching}/orders",
            headers=SELLER,
            json={
                "instrument_id": INSTRUMENT,
                "side": "SELL",
                "price": 1500,
                "quantity": 3000,
                "account_id": th_gov,
                "client_order_id": f"sell-{run}",
            },
        )
        assert sell.status_code == 202, sell.text
        sell_id = sell.json()["order_id"]

        async def order_status(order_id: str, headers: dict[str, str], status: str) -> Any:
            order = await get_json(client, f"{matching}/orders/{order_id}", headers=headers)
            return order if order and order["status"] == status else None

        await eventually(lambda: order_status(sell_id, SELLER, "resting"), "the covered sell order to rest")
        reserved = await get_json(client, f"{registry}/accounts/{th_gov}")
        assert (reserved["held"], reserved["reserved"]) == (2000, 3000)

        buy = await client.post(
            f"{matching}/orders",
            headers=BUYER,
            json={
                "instrument_id": INSTRUMENT,
                "side": "BUY",
                "price": 1500,
                "quantity": 3000,
                "account_id": ch_buyer,
                "client_order_id": f"buy-{run}",
            },
        )
        assert buy.status_code == 202, buy.text
        buy_id = buy.json()["order_id"]
        filled = await eventually(lambda: order_status(buy_id, BUYER, "filled"), "the buy order to fill")
        assert filled["filled"] == 3000

        trades = await get_json(client, f"{matching}/trades", params={"instrument_id": INSTRUMENT})
        [trade] = [t for t in trades if t["buy_order_id"] == buy_id]
        assert (trade["sell_order_id"], trade["quantity"], trade["price"]) == (sell_id, 3000, 1500)

        async def settled() -> Any:
            found = await get_json(client, f"{settlement}/settlements/{trade['trade_id']}")
            return found if found and found["phase"] in ("settled", "failed") else None

        done = await eventually(settled, "the trade to settle")
        assert done["phase"] == "settled", done["failure"]
        [adjustment] = done["corresponding_adjustments"]
        assert (adjustment["party"], adjustment["vintage"], adjustment["quantity"]) == ("TH", 2024, "3000")
        assert adjustment["side"] == "FIRST_TRANSFERRING"

        decision = await get_json(client, f"{compliance}/decisions/{trade['trade_id']}")
        assert decision["verdict"] == "APPROVED"
        assert {r["code"] for r in decision["results"]} >= {"DOUBLE_CLAIMING_AUTHORIZATION", "HOLDINGS_RESERVED"}

        buyer_account = await eventually(
            lambda: get_json(client, f"{registry}/accounts/{ch_buyer}"), "the buyer's account view"
        )
        assert buyer_account["held"] == 3000
        assert [(b["start"], b["end"]) for b in buyer_account["holdings"]] == [(1, 3000)]
        seller_account = await get_json(client, f"{registry}/accounts/{th_gov}")
        assert (seller_account["held"], seller_account["reserved"]) == (2000, 0)
        assert (await get_json(client, f"{settlement}/cash/{ch_buyer}")) == {"USD": -4_500_000}

        # Regulators: the Thai chain over HTTP streaming, then both chains verified.
        seen: list[str] = []
        async with client.stream("GET", f"{compliance}/audit/TH/stream", timeout=60) as stream:
            async for line in stream.aiter_lines():
                record = json.loads(line)
                if "heartbeat" in record:
                    continue
                if record["payload"].get("trade_id") == trade["trade_id"] or record["event_type"].endswith(
                    "UnitsTransferred"
                ):
                    seen.append(record["event_type"])
                if "tonne.v1.SettlementCompleted" in seen:
                    break
        assert {
            "tonne.v1.TradeExecuted",
            "tonne.v1.ScreeningDecision",
            "tonne.v1.UnitsTransferred",
            "tonne.v1.CorrespondingAdjustmentApplied",
            "tonne.v1.SettlementCompleted",
        } <= set(seen)
        for party in ("TH", "CH"):
            verdict = await get_json(client, f"{compliance}/audit/{party}/verify")
            assert verdict["intact"] and verdict["length"] > 0, verdict

    # The same facts on the topics: the trade on matching.events, the settlement on settlement.events.
    def find(records: list[Any], type_name: str) -> Envelope | None:
        for record in records:
            envelope, payload = unwrap(record.value)
            if envelope.type == type_name and getattr(payload, "trade_id", "") == trade["trade_id"]:
                return envelope
        return None

    journal = await read_topic(
        stack.bootstrap,
        stack.topic_prefix + topics.MATCHING_EVENTS,
        lambda rs: find(rs, "tonne.v1.TradeExecuted") is not None,
    )
    settlements = await read_topic(
        stack.bootstrap,
        stack.topic_prefix + topics.SETTLEMENT_EVENTS,
        lambda rs: find(rs, "tonne.v1.SettlementCompleted") is not None,
    )
    executed = find(journal, "tonne.v1.TradeExecuted")
    completed = find(settlements, "tonne.v1.SettlementCompleted")
    assert executed is not None and completed is not None
    assert executed.correlation_id  # one flow, traced from the buy order onwards
    audit_th = await read_topic(stack.bootstrap, stack.topic_prefix + topics.audit("TH"), lambda rs: len(rs) >= 5)
    assert all(isinstance(unwrap(r.value)[1], cpb.AuditRecord) for r in audit_th)

    latency = (completed.occurred_at.ToDatetime() - executed.occurred_at.ToDatetime()).total_seconds()
    Path(".run").mkdir(exist_ok=True)
    Path(".run/e2e-latency.json").write_text(json.dumps({"trade_to_settled_seconds": latency}))
    print(f"trade-to-settled latency: {latency * 1000:.0f} ms")
    assert latency > 0


@pytest.mark.parametrize("buyer_party", ["JP"])
async def test_unauthorized_ccer_export_is_refused(running_stack: Any, buyer_party: str) -> None:
    """Scenario 3: a CCER block without a Chinese authorization bought for a Japanese
    account trades, but its cross-border settlement is refused and the units go back."""
    stack, run = running_stack, uuid.uuid4().hex[:6]
    registry, matching, settlement = (stack.urls[n] for n in ("registry", "matching", "settlement"))
    cn_seller, jp_buyer = f"CN-CO-{run}", f"{buyer_party}-CO-{run}"
    inbound_cn = stack.topic_prefix + topics.registry_inbound("CN")
    await publish(
        stack.bootstrap,
        inbound_cn,
        cn_seller,
        rpb.OpenAccount(account_id=cn_seller, holder="Shenzhen Metro Carbon Co", jurisdiction="CN", type=rpb.HOLDING),
        "registry-CN",
    )
    await publish(
        stack.bootstrap,
        inbound_cn,
        cn_seller,
        rpb.RecordIssuance(
            issuance_id=f"CCER-{run}",
            account_id=cn_seller,
            block=rpb.SerialBlock(
                namespace=f"CCER-{run}",
                start=1,
                end=1000,
                attributes=rpb.UnitAttributes(
                    standard=rpb.CCER,
                    host_party="CN",
                    project_id="CN-WIND-7",
                    methodology="CCER-14-001-V01",
                    vintage=2025,
                ),
            ),
        ),
        "registry-CN",
    )
    async with httpx.AsyncClient(timeout=10) as client:
        assert (
            await client.post(
                f"{registry}/accounts",
                json={"account_id": jp_buyer, "holder": "Tokyo buyer KK", "jurisdiction": buyer_party},
            )
        ).status_code == 201

        async def seller_holds() -> Any:
            account = await get_json(client, f"{registry}/accounts/{cn_seller}")
            return account if account and account["held"] == 1000 else None

        await eventually(seller_holds, "the CCER issuance")

        # Selling more than is held: refused before the order rests, with the code.
        short = await client.post(
            f"{matching}/orders",
            headers=SELLER,
            json={
                "instrument_id": "CCER-2025",
                "side": "SELL",
                "price": 8000,
                "quantity": 5000,
                "account_id": cn_seller,
                "client_order_id": f"short-{run}",
            },
        )
        short_id = short.json()["order_id"]

        async def rejected() -> Any:
            order = await get_json(client, f"{matching}/orders/{short_id}", headers=SELLER)
            return order if order and order["status"] == "rejected" else None

        assert (await eventually(rejected, "the uncovered sell order to be refused"))["reject_code"] == (
            "HOLDINGS_INSUFFICIENT"
        )

        sell = await client.post(
            f"{matching}/orders",
            headers=SELLER,
            json={
                "instrument_id": "CCER-2025",
                "side": "SELL",
                "price": 8000,
                "quantity": 400,
                "account_id": cn_seller,
                "client_order_id": f"sell-{run}",
            },
        )
        sell_id = sell.json()["order_id"]

        async def resting() -> Any:
            order = await get_json(client, f"{matching}/orders/{sell_id}", headers=SELLER)
            return order if order and order["status"] == "resting" else None

        await eventually(resting, "the CCER sell order to rest")
        buy = await client.post(
            f"{matching}/orders",
            headers=BUYER,
            json={
                "instrument_id": "CCER-2025",
                "side": "BUY",
                "price": 8000,
                "quantity": 400,
                "account_id": jp_buyer,
                "client_order_id": f"buy-{run}",
            },
        )
        buy_id = buy.json()["order_id"]

        async def trade() -> Any:
            trades = await get_json(client, f"{matching}/trades", params={"instrument_id": "CCER-2025"})
            return next((t for t in trades or [] if t["buy_order_id"] == buy_id), None)

        trade_id = (await eventually(trade, "the domestic-venue trade"))["trade_id"]

        async def finished() -> Any:
            found = await get_json(client, f"{settlement}/settlements/{trade_id}")
            return found if found and found["phase"] in ("settled", "failed") else None

        outcome = await eventually(finished, "the settlement outcome")
        assert outcome["phase"] == "failed"
        assert outcome["failure"] == "COMPLIANCE_REJECTED: DOUBLE_CLAIMING_AUTHORIZATION"

        async def units_back() -> Any:
            account = await get_json(client, f"{registry}/accounts/{cn_seller}")
            return account if account and account["held"] == 1000 and account["reserved"] == 0 else None

        await eventually(units_back, "the refused trade's units to return to the seller")
        assert (await get_json(client, f"{registry}/accounts/{jp_buyer}"))["held"] == 0
