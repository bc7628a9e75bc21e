"""Kill a service hard in the middle of a flow: nothing acknowledged is lost or doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from typing import Any

import httpx

from services.common import topics
from services.common.auth import DevIssuer
from services.common.envelope import unwrap
from tests.support import Venue, eventually, read_topic
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb

TRADES = 3


async def test_settlement_killed_mid_flow_settles_each_trade_exactly_once(
    running_stack: Any, dev_issuer: DevIssuer
) -> None:
    """Scenario 4's PHCER block (1.2 million metro rides) is sold locally in three trades
    while settlement is dead; after its restart every trade settles once."""
    stack, run = running_stack, uuid.uuid4().hex[:6]
    seller, buyer = f"CN-SZ-METRO-{run}", f"CN-SZ-BUYER-{run}"
    async with httpx.AsyncClient(timeout=10) as client:
        venue = Venue(stack, client, dev_issuer)
        await venue.open_national_account("CN", seller, "Shenzhen carbon inclusion platform")
        await venue.issue(
            "CN",
            seller,
            f"PHCER-{run}",
            rpb.SerialBlock(
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
        )
        assert (await venue.open_account(buyer, "Shenzhen manufacturer Ltd", "CN")).status_code == 201
        await venue.wait_held(seller, 900)
        await venue.grant_mandate("CN", seller, "broker-a")
        await venue.grant_mandate("CN", buyer, "broker-b")
        await venue.fund(buyer, "CNY", TRADES * 100 * 50)
        # The bids rest first: settlement covers a buy's cash before it may rest.
        for n in range(TRADES):
            buy_id = await venue.place(venue.buyer, "PHCER-SZ-2025", "BUY", 50, 100, buyer, f"buy-{n}-{run}")
            await venue.wait_order(buy_id, venue.buyer, "resting")

        # Settlement dies without a chance to commit or say goodbye; then the trades happen.
        os.kill(stack.processes.pids["settlement"], signal.SIGKILL)
        await eventually(
            lambda: asyncio.to_thread(lambda: not stack.processes.is_alive("settlement")), "settlement to die"
        )
        for n in range(TRADES):
            sell_id = await venue.place(venue.seller, "PHCER-SZ-2025", "SELL", 50, 100, seller, f"sell-{n}-{run}")
            await venue.wait_order(sell_id, venue.seller, "filled")

        assert await asyncio.to_thread(stack.processes.start) == ["settlement"]
        await venue.wait_held(buyer, TRADES * 100)
        await venue.wait_held(seller, 900 - TRADES * 100)

        async def paid() -> Any:
            cash = await venue.get(f"{venue.settlement}/cash/{buyer}", venue.buyer)
            return cash == {"CNY": {"available": 0, "reserved": 0, "held": 0}} or None

        await eventually(paid, "every trade's cash leg to settle")

    def completions(records: list[Any]) -> list[str]:
        found = []
        for record in records:
            payload = unwrap(record.value)[1]
            if isinstance(payload, spb.SettlementCompleted) and payload.buyer_account_id == buyer:
                found.append(payload.trade_id)
        return found

    records = await read_topic(
        stack.bootstrap, stack.topic_prefix + topics.SETTLEMENT_EVENTS, lambda rs: len(completions(rs)) >= TRADES
    )
    assert len(completions(records)) == len(set(completions(records))) == TRADES
