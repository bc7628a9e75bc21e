"""Two instances of each service in one consumer group with a crossing-order flow running;
one instance of each service is SIGKILLed in turn; every accepted order must be in the
journal once, every trade settle once, units and cash be conserved and the audit chains
verify.

It once failed about one run in two or three: a trade never settled after a kill. The
survivor's consumer loop asked for the lag of a partition a rebalance had just taken
away, aiokafka raised, and the loop (all of that service's consuming) ended
(services/common/consumer.py now asks only about partitions it still holds).
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import uuid
from typing import Any

import asyncpg
import httpx

from deploy.stack import SERVICES
from services.common import topics
from services.common.auth import DevIssuer
from services.common.envelope import unwrap
from tests.support import Venue, eventually, read_topic
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb

INSTRUMENTS = {"CCER-2025": rpb.CCER, "PHCER-SZ-2025": rpb.PHCER}  # on two partitions of matching.orders
SELLERS = BUYERS = 4
UNITS = 10_000  # per seller and instrument
PRICE = 500
FUNDS = 10**12  # each buyer's deposit: more than any run can spend
LANES = 3  # brokers' connections placing pairs side by side
AFTER_KILL = 6  # pairs placed after a kill that must trade and settle before the restart


class Flow:
    """Crossing pairs (a SELL, then a BUY of one tonne at one price), each lane waiting for
    its buy order to fill before the next pair. Orders go to both matching instances in
    turn; a request an instance does not answer goes to the other with the same client
    order id, so it is placed once (intake is idempotent per client order id)."""

    def __init__(self, venue: Venue, matching: list[str], run: str) -> None:
        self.venue, self.matching, self.run = venue, matching, run
        self.sellers = [f"CN-S{i}-{run}" for i in range(SELLERS)]
        self.buyers = [f"CN-B{i}-{run}" for i in range(BUYERS)]
        self.accepted: set[str] = set()
        self.filled: list[tuple[str, str]] = []  # (buy order id, its trade id), in fill order
        self._n = 0
        self.stop = asyncio.Event()

    async def open_market(self) -> None:
        venue = self.venue
        for account in self.sellers:
            await venue.open_national_account("CN", account, f"seller {account}")
            for instrument, standard in INSTRUMENTS.items():
                attributes = rpb.UnitAttributes(
                    standard=standard, host_party="CN", project_id=f"P-{instrument}", methodology="M", vintage=2025
                )
                block = rpb.SerialBlock(namespace=f"{instrument}-{account}", start=1, end=UNITS, attributes=attributes)
                await venue.issue("CN", account, f"I-{instrument}-{account}", block)
        for account in self.buyers:
            await venue.open_national_account("CN", account, f"buyer {account}")
        for account in self.sellers:
            await venue.wait_held(account, UNITS * len(INSTRUMENTS))
            await venue.grant_mandate("CN", account, "broker-a")
        for account in self.buyers:
            await venue.grant_mandate("CN", account, "broker-b")
            await venue.fund(account, "CNY", FUNDS)

    async def _call(self, n: int, method: str, path: str, headers: dict[str, str], body: Any = None) -> Any:
        """The JSON answer of whichever matching instance answers first, starting at the n-th."""

        async def attempt() -> Any:
            for i in range(len(self.matching)):
                url = self.matching[(n + i) % len(self.matching)]
                try:
                    response = await self.venue.client.request(method, url + path, headers=headers, json=body)
                except httpx.TransportError:
                    continue  # killed or restarting: the other instance serves the same API
                assert response.status_code in (200, 202), response.text
                return response.json()
            return None

        return await eventually(attempt, f"a matching instance to answer {method} {path}")

    async def _place(self, n: int, side: str, account: str, instrument: str, headers: dict[str, str]) -> str:
        body = {
            "instrument_id": instrument,
            "side": side,
            "price": PRICE,
            "quantity": 1,
            "account_id": account,
            "client_order_id": f"{self.run}-{n}-{side}",
        }
        order_id = str((await self._call(n, "POST", "/orders", headers, body))["order_id"])
        self.accepted.add(order_id)
        return order_id

    async def lane(self) -> None:
        while not self.stop.is_set():
            n = self._n
            self._n += 1
            instrument = list(INSTRUMENTS)[n % len(INSTRUMENTS)]
            venue = self.venue
            await self._place(n, "SELL", self.sellers[n % SELLERS], instrument, venue.seller)
            buy_id = await self._place(n, "BUY", self.buyers[n % BUYERS], instrument, venue.buyer)

            order = await eventually(lambda: self._filled(n, buy_id), f"buy order {buy_id} to fill")  # noqa: B023
            self.filled.append((buy_id, order["fills"][0]["trade_id"]))

    async def _filled(self, n: int, order_id: str) -> Any:
        order = await self._call(n, "GET", f"/orders/{order_id}", self.venue.buyer)
        return order if order["status"] == "filled" else None


async def kill(stack: Any, name: str) -> None:
    os.kill(stack.processes.pids[name], signal.SIGKILL)
    await eventually(lambda: asyncio.to_thread(lambda: not stack.processes.is_alive(name)), f"{name} to die")


async def test_killing_an_instance_of_each_service_loses_and_doubles_nothing(
    two_instance_stack: Any, dev_issuer: DevIssuer
) -> None:
    stack, run = two_instance_stack, uuid.uuid4().hex[:6]
    async with httpx.AsyncClient(timeout=10) as client:
        venue = Venue(stack, client, dev_issuer)  # reads from the first instances, never killed
        flow = Flow(venue, [stack.urls["matching"], stack.urls["matching-2"]], run)
        await flow.open_market()
        lanes = [asyncio.create_task(flow.lane()) for _ in range(LANES)]
        try:
            for service in SERVICES:
                victim = f"{service}-2"
                placed_before = len(flow.filled)
                await kill(stack, victim)

                async def went_on(before: int = placed_before) -> bool:
                    return len(flow.filled) >= before + AFTER_KILL

                # The survivor takes the victim's partitions over: pairs placed from now on
                # trade, and their trades settle, without the victim.
                await eventually(went_on, f"the flow to go on without {victim}")
                for _, trade_id in flow.filled[placed_before : placed_before + AFTER_KILL]:
                    done = await venue.wait_settlement(trade_id)
                    if done["phase"] != "settled":  # the screening's evidence, to tell why
                        done["decision"] = await venue.get(f"{venue.compliance}/decisions/{trade_id}")
                    assert done["phase"] == "settled", (victim, done)
                assert await asyncio.to_thread(stack.processes.start) == [victim]
        finally:
            flow.stop.set()
            await asyncio.gather(*lanes)
        pairs = len(flow.filled)
        buys = {buy for buy, _ in flow.filled}
        assert len(flow.accepted) == 2 * pairs  # no lane stopped between the sell and the buy

        # Every accepted order is in the journal once: one OrderAccepted (one event id,
        # however often the relay published it), and nothing refused.
        accepted: dict[str, set[str]] = collections.defaultdict(set)
        executed: dict[str, set[str]] = collections.defaultdict(set)
        trades: dict[str, mpb.TradeExecuted] = {}
        refused: list[str] = []

        def journal(records: list[Any]) -> bool:
            for found in (accepted, executed, trades):
                found.clear()
            refused.clear()
            for record in records:
                envelope, payload = unwrap(record.value)
                if isinstance(payload, mpb.OrderAccepted) and payload.order.order_id in flow.accepted:
                    accepted[payload.order.order_id].add(envelope.event_id)
                elif isinstance(payload, mpb.TradeExecuted) and payload.buy_order_id in flow.accepted:
                    executed[payload.trade_id].add(envelope.event_id)
                    trades[payload.trade_id] = payload
                elif isinstance(payload, mpb.OrderRejected) and payload.order_id in flow.accepted:
                    refused.append(payload.order_id)
            return set(accepted) == flow.accepted

        await read_topic(stack.bootstrap, stack.topic_prefix + topics.MATCHING_EVENTS, journal)
        assert refused == []
        assert all(len(ids) == 1 for ids in accepted.values()), {o: ids for o, ids in accepted.items() if len(ids) > 1}
        assert all(len(ids) == 1 for ids in executed.values())
        assert len(trades) == pairs and {t.buy_order_id for t in trades.values()} == buys
        assert {t.sell_order_id for t in trades.values()} == flow.accepted - buys

        # Every trade settles once.
        completed: dict[str, set[str]] = collections.defaultdict(set)
        failed: dict[str, str] = {}

        def settlements(records: list[Any]) -> bool:
            completed.clear()
            failed.clear()
            for record in records:
                envelope, payload = unwrap(record.value)
                if isinstance(payload, spb.SettlementCompleted) and payload.trade_id in trades:
                    completed[payload.trade_id].add(envelope.event_id)
                elif isinstance(payload, spb.SettlementFailed) and payload.trade_id in trades:
                    failed[payload.trade_id] = f"{payload.code}: {payload.reason}"
            return set(completed) | set(failed) == set(trades)

        try:
            await read_topic(stack.bootstrap, stack.topic_prefix + topics.SETTLEMENT_EVENTS, settlements)
        except AssertionError:
            missing = sorted(set(trades) - set(completed) - set(failed))
            conn = await asyncpg.connect(stack.database_url)
            try:
                phases = await conn.fetch(
                    "SELECT trade_id, phase FROM settlement.settlements WHERE trade_id = ANY($1)", missing
                )
                deferred = await conn.fetch("SELECT request_id, reservation_id FROM compliance.deferred_screens")
                decided = await conn.fetch(
                    "SELECT request_id, verdict FROM compliance.decisions WHERE request_id = ANY($1)", missing
                )
            finally:
                await conn.close()
            raise AssertionError(f"unsettled {missing}: {phases} deferred {deferred} decided {decided}") from None
        assert failed == {}
        assert all(len(ids) == 1 for ids in completed.values())

        # Units and cash are conserved: what each seller sold, its buyers hold and paid for.
        settled = [trades[t] for t in completed]
        sold = collections.Counter(t.seller_account_id for t in settled)
        bought = collections.Counter(t.buyer_account_id for t in settled)
        for account in flow.sellers:
            await venue.wait_held(account, UNITS * len(INSTRUMENTS) - sold[account])
            assert await venue.cash(account, "CNY") == (PRICE * sold[account], 0)
        for account in flow.buyers:
            await venue.wait_held(account, bought[account])
            assert await venue.cash(account, "CNY") == (FUNDS - PRICE * bought[account], 0)
        assert sum(sold.values()) == sum(bought.values()) == len(completed)

        intact, checked = await venue.verify_chain("CN")
        assert intact and checked > 0
