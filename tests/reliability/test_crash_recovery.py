"""Kill a service hard in the middle of a flow: nothing acknowledged is lost or doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from typing import Any

import httpx

from services.common import topics
from services.common.envelope import unwrap
from tests.support import eventually, publish, read_topic
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb

SELLER = {"authorization": "Bearer dev-token-a"}
BUYER = {"authorization": "Bearer dev-token-b"}


async def test_settlement_killed_mid_flow_settles_each_trade_exactly_once(running_stack: Any) -> None:
    stack, run = running_stack, uuid.uuid4().hex[:6]
    registry, matching, settlement = (stack.urls[n] for n in ("registry", "matching", "settlement"))
    seller, buyer = f"SZ-METRO-{run}", f"SZ-BUYER-{run}"
    inbound = stack.topic_prefix + topics.registry_inbound("CN")
    # Scenario 4: one PHCER block aggregating 1.2 million metro rides, sold locally.
    await publish(
        stack.bootstrap,
        inbound,
        seller,
        rpb.OpenAccount(
            account_id=seller, holder="Shenzhen carbon inclusion platform", jurisdiction="CN", type=rpb.HOLDING
        ),
        "registry-CN",
    )
    await publish(
        stack.bootstrap,
        inbound,
        seller,
        rpb.RecordIssuance(
            issuance_id=f"PHCER-{run}",
            account_id=seller,
            block=rpb.SerialBlock(
                namespace=f"PHCER-SZ-{run}",
                start=1,
                end=900,
                attributes=rpb.UnitAttributes(
                    standard=rpb.PHCER,
                    host_party="CN",
                    project_id="SZ-METRO-RIDES-2025",
                    methodology="SZ-LOW-CARBON-TRAVEL-V1",
                    vintage=2025,
                ),
            ),
        ),
        "registry-CN",
    )
    async with httpx.AsyncClient(timeout=10) as client:
        opened = await client.post(
            f"{registry}/accounts",
            json={"account_id": buyer, "holder": "Shenzhen manufacturer Ltd", "jurisdiction": "CN"},
        )
        assert opened.status_code == 201, opened.text

        async def holds(account: str, quantity: int) -> Any:
            found = await client.get(f"{registry}/accounts/{account}")
            return found.status_code == 200 and found.json()["held"] == quantity

        await eventually(lambda: holds(seller, 900), "the PHCER issuance")

        # Settlement dies without a chance to commit or say goodbye.
        os.kill(stack.processes.pids["settlement"], signal.SIGKILL)
        await eventually(
            lambda: asyncio.to_thread(lambda: not stack.processes.is_alive("settlement")), "settlement to die"
        )

        trades = 3
        for n in range(trades):
            for side, headers, account in (("SELL", SELLER, seller), ("BUY", BUYER, buyer)):
                placed = await client.post(
                    f"{matching}/orders",
                    headers=headers,
                    json={
                        "instrument_id": "PHCER-SZ-2025",
                        "side": side,
                        "price": 50,
                        "quantity": 100,
                        "account_id": account,
                        "client_order_id": f"{side}-{n}-{run}",
                    },
                )
                assert placed.status_code == 202, placed.text
                order_id = placed.json()["order_id"]

                async def settled_in_engine(
                    order_id: str = order_id, side: str = side, headers: dict[str, str] = headers
                ) -> Any:
                    order = (await client.get(f"{matching}/orders/{order_id}", headers=headers)).json()
                    return order["status"] == ("resting" if side == "SELL" else "filled")

                await eventually(settled_in_engine, f"{side} order {n} through the engine")

        respawned = await asyncio.to_thread(stack.processes.start)
        assert respawned == ["settlement"]

        await eventually(lambda: holds(buyer, trades * 100), "every unit to reach the buyer after the restart")
        assert (await client.get(f"{registry}/accounts/{seller}")).json()["held"] == 900 - trades * 100

        async def paid() -> Any:
            cash = (await client.get(f"{settlement}/cash/{buyer}")).json()
            return cash == {"CNY": -trades * 100 * 50} or None

        await eventually(paid, "every trade's cash leg to settle")

    def completions(records: list[Any]) -> list[str]:
        found = []
        for record in records:
            payload = unwrap(record.value)[1]
            if isinstance(payload, spb.SettlementCompleted) and payload.buyer_account_id == buyer:
                found.append(payload.trade_id)
        return found

    records = await read_topic(
        stack.bootstrap, stack.topic_prefix + topics.SETTLEMENT_EVENTS, lambda rs: len(completions(rs)) >= trades
    )
    assert len(completions(records)) == len(set(completions(records))) == trades
