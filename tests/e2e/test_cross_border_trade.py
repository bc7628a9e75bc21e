"""The domain brief's scenarios 1, 2, 3 and 4, end to end through the running stack's APIs and topics."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx

from services.common import topics
from services.common.auth import DevIssuer
from services.common.envelope import unwrap
from services.registry.domain.manifest import verify
from tests.support import Venue, bearer, eventually, jcm_th_block, read_topic
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1.envelope_pb2 import Envelope

JCM = "JCM-TH-2024-NDC"
FLOW = {
    "tonne.v1.TradeExecuted",
    "tonne.v1.ScreeningDecision",
    "tonne.v1.UnitsTransferred",
    "tonne.v1.CorrespondingAdjustmentApplied",
    "tonne.v1.SettlementCompleted",
}


async def test_jcm_itmo_from_thailand_to_switzerland(running_stack: Any, dev_issuer: DevIssuer) -> None:
    """Scenario 1: Thailand authorizes 4,000 t of a JCM floating-solar issuance as ITMOs for
    NDC use (first transfer = first international transfer); a Swiss buyer's broker buys
    3,000 t; compliance screens, settlement moves the units and applies Thailand's
    corresponding adjustment; both regulators see it in an intact audit chain."""
    stack, run = running_stack, uuid.uuid4().hex[:6]
    th_gov, ch_buyer, loa_id = f"TH-GOV-{run}", f"CH-BUYER-{run}", f"LOA-TH-{run}"
    async with httpx.AsyncClient(timeout=10) as client:
        venue = Venue(stack, client, dev_issuer)
        await venue.open_national_account("TH", th_gov, "Government of Thailand", rpb.GOVERNMENT)
        await venue.authorize_thai_itmos(loa_id, 4000)
        block = jcm_th_block(f"JCM-TH-{run}", 5000, "TH-FLOATING-SOLAR-1", loa_id)
        await venue.issue("TH", th_gov, f"JC-TH-2024-{run}", block)
        opened = await venue.open_account(ch_buyer, "Swiss buyer AG", "CH")
        assert opened.status_code == 201, opened.text
        again = await venue.open_account(ch_buyer, "Swiss buyer AG", "CH")
        assert again.status_code == 409 and again.json()["code"] == "ACCOUNT_EXISTS"
        await venue.wait_held(th_gov, 5000)
        await venue.grant_mandate("TH", th_gov, "broker-a")
        await venue.grant_mandate("CH", ch_buyer, "broker-b")
        await venue.fund(ch_buyer, "USD", 5_000_000)

        sell_id = await venue.place(venue.seller, JCM, "SELL", 1500, 3000, th_gov, f"sell-{run}")
        await venue.wait_order(sell_id, venue.seller, "resting")
        await venue.wait_held(th_gov, 2000, reserved=3000)  # covered: reserved before it rests

        buy_id = await venue.place(venue.buyer, JCM, "BUY", 1500, 3000, ch_buyer, f"buy-{run}")
        assert (await venue.wait_order(buy_id, venue.buyer, "filled"))["filled"] == 3000
        trade = await venue.wait_trade(JCM, buy_id)
        assert (trade["sell_order_id"], trade["quantity"], trade["price"]) == (sell_id, 3000, 1500)

        done = await venue.wait_settlement(trade["trade_id"])
        assert done["phase"] == "settled", done["failure"]
        [adjustment] = done["corresponding_adjustments"]
        assert (adjustment["party"], adjustment["vintage"], adjustment["quantity"]) == ("TH", 2024, "3000")
        assert adjustment["side"] == "FIRST_TRANSFERRING"

        # The seller's regulator reads the decision; the buyer's broker its account's cash.
        decision = await venue.get(f"{venue.compliance}/decisions/{trade['trade_id']}", venue.regulator("TH"))
        assert decision["verdict"] == "APPROVED"
        assert {r["code"] for r in decision["results"]} >= {"DOUBLE_CLAIMING_AUTHORIZATION", "HOLDINGS_RESERVED"}

        buyer_account = await venue.wait_held(ch_buyer, 3000)
        assert [(b["start"], b["end"]) for b in buyer_account["holdings"]] == [(1, 3000)]
        await venue.wait_held(th_gov, 2000)

        # The registry hears the adjustment on settlement.events: the ITMOs show it applied,
        # the 2,000 t Thailand kept (authorized, not first-transferred) show it pending.
        async def adjustment(account_id: str) -> str | None:
            found = await venue.get(f"{venue.registry}/accounts/{account_id}/blocks")
            return found["items"][0]["adjustment"] if found and found["items"] else None

        async def applied() -> bool | None:
            return await adjustment(ch_buyer) == "APPLIED" or None

        await eventually(applied, "the ITMOs' adjustment on the registry's blocks")
        assert await adjustment(th_gov) == "PENDING"
        cash = await venue.get(f"{venue.settlement}/cash/{ch_buyer}", venue.buyer)
        assert cash == {"USD": {"available": 500_000, "reserved": 0, "held": 0}}  # paid for what it received
        assert await venue.cash(th_gov, "USD") == (4_500_000, 0)

        # Regulators: the Thai chain over HTTP streaming, then both chains verified.
        seen: set[str] = set()
        th_stream = f"{venue.compliance}/audit/TH/stream"
        async with client.stream("GET", th_stream, headers=venue.regulator("TH"), timeout=60) as stream:
            async for line in stream.aiter_lines():
                record = json.loads(line)
                if record.get("payload", {}).get("trade_id") == trade["trade_id"] or record.get(
                    "event_type", ""
                ).endswith("UnitsTransferred"):
                    seen.add(record["event_type"])
                if seen >= FLOW:  # the adjustment and the completion commit together, in either order
                    break
        assert seen >= FLOW
        # The same chain as server-sent events, resumed after the second record.
        headers = venue.regulator("TH") | {"accept": "text/event-stream", "last-event-id": "2"}
        async with client.stream("GET", th_stream, headers=headers, timeout=60) as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            lines = events.aiter_lines()
            assert [await anext(lines) for _ in range(2)] == ["id: 3", "event: record"]
            assert json.loads((await anext(lines)).removeprefix("data: "))["sequence"] == 3
        for party in ("TH", "CH"):
            intact, checked = await venue.verify_chain(party)
            assert intact and checked > 0, (party, checked)

    # The same facts on the topics: the trade on matching.events, the settlement on settlement.events.
    def find(records: list[Any], type_name: str) -> Envelope | None:
        for record in records:
            envelope, payload = unwrap(record.value)
            if envelope.type == type_name and getattr(payload, "trade_id", "") == trade["trade_id"]:
                return envelope
        return None

    async def read_until(topic: str, type_name: str) -> list[Any]:
        return await read_topic(stack.bootstrap, stack.topic_prefix + topic, lambda rs: find(rs, type_name) is not None)

    journal = await read_until(topics.MATCHING_EVENTS, "tonne.v1.TradeExecuted")
    settlements = await read_until(topics.SETTLEMENT_EVENTS, "tonne.v1.SettlementCompleted")
    executed = find(journal, "tonne.v1.TradeExecuted")
    completed = find(settlements, "tonne.v1.SettlementCompleted")
    assert executed is not None and completed is not None
    assert completed.correlation_id == executed.correlation_id  # one flow, traced from the buy order on
    audit_th = await read_topic(stack.bootstrap, stack.topic_prefix + topics.audit("TH"), lambda rs: len(rs) >= 5)
    assert all(isinstance(unwrap(r.value)[1], cpb.AuditRecord) for r in audit_th)
    # The verifier checks the chain as the topic carries it, offline, as a regulator would.
    verified = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.compliance.verify",
        "--topic",
        stack.topic_prefix + topics.audit("TH"),
        "--bootstrap",
        stack.bootstrap,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(verified.communicate(), 60)
    assert verified.returncode == 0 and out.decode().startswith("intact: "), (out, err.decode())
    assert int(out.decode().split()[1]) >= len(audit_th)

    latency = (completed.occurred_at.ToDatetime() - executed.occurred_at.ToDatetime()).total_seconds()
    Path(".run").mkdir(exist_ok=True)
    Path(".run/e2e-latency.json").write_text(json.dumps({"trade_to_settled_seconds": latency}))
    print(f"trade-to-settled latency: {latency * 1000:.0f} ms")
    assert latency > 0


async def refusal_on_stream(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], command_id: str
) -> dict[str, Any]:
    """The refusal of `command_id` as the audit stream shows it (within a deadline)."""
    async with asyncio.timeout(60), client.stream("GET", url, headers=headers, timeout=60) as stream:
        async for line in stream.aiter_lines():
            payload: dict[str, Any] = json.loads(line).get("payload", {})
            if payload.get("command_id") == command_id:
                return payload
    raise AssertionError(f"{command_id}'s refusal never reached {url}")


async def test_unauthorized_ccer_export_is_refused(running_stack: Any, dev_issuer: DevIssuer) -> None:
    """Scenario 3: a CCER block without a Chinese authorization bought for a Japanese account
    trades, but its cross-border settlement is refused and the units go back. Scenario 2's
    gate too: a sell order the seller cannot cover is refused before it rests, with its code."""
    stack, run = running_stack, uuid.uuid4().hex[:6]
    cn_seller, jp_buyer = f"CN-CO-{run}", f"JP-CO-{run}"
    async with httpx.AsyncClient(timeout=10) as client:
        venue = Venue(stack, client, dev_issuer)
        await venue.open_national_account("CN", cn_seller, "Shenzhen wind power Co")
        await venue.issue(
            "CN",
            cn_seller,
            f"CCER-{run}",
            rpb.SerialBlock(
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
        )
        assert (await venue.open_account(jp_buyer, "Tokyo buyer KK", "JP")).status_code == 201
        await venue.wait_held(cn_seller, 1000)
        await venue.grant_mandate("CN", cn_seller, "broker-a")
        await venue.grant_mandate("JP", jp_buyer, "broker-b")
        await venue.fund(jp_buyer, "CNY", 8000 * 400)

        short_id = await venue.place(venue.seller, "CCER-2025", "SELL", 8000, 5000, cn_seller, f"short-{run}")
        refused = await venue.wait_order(short_id, venue.seller, "rejected")
        assert refused["reject_code"] == "HOLDINGS_INSUFFICIENT"
        # China's regulator sees the attempt, with its code and evidence, on its audit stream.
        seen = await refusal_on_stream(client, f"{venue.compliance}/audit/CN/stream", venue.regulator("CN"), short_id)
        assert (seen["code"], seen["jurisdiction"], seen["numeric_code"]) == ("HOLDINGS_INSUFFICIENT", "CN", 7301)

        sell_id = await venue.place(venue.seller, "CCER-2025", "SELL", 8000, 400, cn_seller, f"sell-{run}")
        await venue.wait_order(sell_id, venue.seller, "resting")
        buy_id = await venue.place(venue.buyer, "CCER-2025", "BUY", 8000, 400, jp_buyer, f"buy-{run}")
        trade = await venue.wait_trade("CCER-2025", buy_id)

        outcome = await venue.wait_settlement(trade["trade_id"])
        assert outcome["phase"] == "failed"
        assert outcome["failure"] == "COMPLIANCE_REJECTED: DOUBLE_CLAIMING_AUTHORIZATION"
        await venue.wait_held(cn_seller, 1000)  # the refused trade's units are back, unreserved
        assert (await venue.account(jp_buyer))["held"] == 0
        assert await venue.cash(jp_buyer, "CNY") == (8000 * 400, 0)  # its payment given back


async def test_metro_rides_issued_as_one_block_and_sold(running_stack: Any, dev_issuer: DevIssuer) -> None:
    """Scenario 4: 1.2 million Shenzhen metro rides of a few grams each, uploaded as the
    manifest of one PHCER block, issued and sold to a local company; any rider's record
    is proven to be in the block the company holds, against the root the block carries."""
    stack, run = running_stack, uuid.uuid4().hex[:6]
    platform, company, manifest_id = f"CN-SZ-LCT-{run}", f"CN-SZ-CO-{run}", f"SZ-METRO-2025-{run}"
    # Rides of 1 to 20 km at 650 mg CO2e a km saved: 8.19 t, 8 issued.
    rides = (f"ride-{i:07d},card-{i % 200_000:06d},{1 + i % 20},650" for i in range(1_200_000))
    body = "\n".join(["record_id,participant_id,activity,factor_mg", *rides]).encode()
    async with httpx.AsyncClient(timeout=10) as client:
        venue = Venue(stack, client, dev_issuer)
        shenzhen = bearer(dev_issuer, "registry-CN", ["registry-operator:CN"])
        uploaded = await client.put(
            f"{venue.registry}/manifests/{manifest_id}",
            params={"jurisdiction": "CN", "methodology": "SZ-LCT-METRO-01"},
            content=body,
            headers=shenzhen | {"content-type": "text/csv"},
            timeout=180,
        )
        assert uploaded.status_code == 201, uploaded.text
        manifest = uploaded.json()
        assert (manifest["size"], manifest["tonnes"], manifest["remainder_mg"]) == (1_200_000, 8, 190_000_000)

        await venue.open_national_account("CN", platform, "Shenzhen low-carbon travel platform")
        block = rpb.SerialBlock(
            namespace=f"PHCER-SZ-{run}",
            start=1,
            end=8,
            attributes=rpb.UnitAttributes(
                standard=rpb.PHCER,
                issuing_registry="CN-SZ-carbon-inclusion",
                host_party="CN",
                project_id="SZ-METRO-LCT",
                methodology="SZ-LCT-METRO-01",
                vintage=2025,
                mitigation_type=rpb.REDUCTION,
            ),
        )
        issuance = rpb.RecordIssuance(
            issuance_id=f"PHCER-{run}", account_id=platform, block=block, manifest_id=manifest_id
        )
        await venue.from_national_registry("CN", platform, issuance)
        await venue.wait_held(platform, 8)
        assert (await venue.open_account(company, "Shenzhen Bay logistics Co", "CN")).status_code == 201
        await venue.grant_mandate("CN", platform, "broker-a")
        await venue.grant_mandate("CN", company, "broker-b")
        await venue.fund(company, "CNY", 6000 * 8)

        sell_id = await venue.place(venue.seller, "PHCER-SZ-2025", "SELL", 6000, 8, platform, f"sell-{run}")
        await venue.wait_order(sell_id, venue.seller, "resting")
        buy_id = await venue.place(venue.buyer, "PHCER-SZ-2025", "BUY", 6000, 8, company, f"buy-{run}")
        trade = await venue.wait_trade("PHCER-SZ-2025", buy_id)
        done = await venue.wait_settlement(trade["trade_id"])
        assert done["phase"] == "settled", done["failure"]
        await venue.wait_held(company, 8)

        # The company's block carries the manifest's root; rider card-004242's ride proves against it.
        blocks = await venue.get(f"{venue.registry}/accounts/{company}/blocks", venue.buyer)
        [held] = blocks["items"]
        assert held["manifest_root"] == manifest["root"]
        rider = bearer(dev_issuer, "card-004242", [])
        proof = await venue.get(
            f"{venue.registry}/manifests/{manifest_id}/proof",
            rider,
            params={"record_id": "ride-0204242", "participant_id": "card-004242"},
        )
        assert proof is not None and (proof["activity"], proof["factor_mg"]) == (3, 650)
        path = [bytes.fromhex(h) for h in proof["path"]]
        root = bytes.fromhex(held["manifest_root"])
        assert verify(bytes.fromhex(proof["encoded"]), proof["index"], proof["size"], path, root)
