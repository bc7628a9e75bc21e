"""Helpers for tests that talk to the running stack: waiting on conditions, Kafka I/O,
and the venue's users with their development tokens (docs/trust.md)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from google.protobuf.message import Message

from services.common import topics
from services.common.auth import DevIssuer
from services.common.envelope import Context, wrap
from services.common.kafka import KafkaAccess
from tonne.v1 import registry_pb2 as rpb

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 60.0) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)  # poll interval inside a deadline, not a readiness guess
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


async def publish(bootstrap: str, topic: str, key: str, message: Message, actor: str) -> str:
    """Publish one enveloped message as a national registry or another service would."""
    envelope = wrap(message, aggregate_id=key, context=Context.new(actor), occurred_at=datetime.now(UTC))
    await publish_raw(bootstrap, topic, key.encode(), envelope.SerializeToString())
    return envelope.event_id


def kafka(bootstrap: str) -> KafkaAccess:
    """`bootstrap` as the session's Kafka super user (TONNE_KAFKA_*, set by tests/conftest.py)."""
    return KafkaAccess.from_env(bootstrap)


async def publish_raw(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(**kafka(bootstrap).options(), enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str, topic: str, until: Callable[[list[ConsumerRecord]], bool], timeout: float = 60.0
) -> list[ConsumerRecord]:
    """Read `topic` from the beginning until `until(records)` holds."""
    consumer = AIOKafkaConsumer(
        topic,
        **kafka(bootstrap).options(),
        group_id=f"test-{uuid.uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout
        while not until(records):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out reading {topic}: {len(records)} records seen")
            batch = await consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
            for partition_records in batch.values():
                records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


def jcm_th_block(namespace: str, end: int, project_id: str, authorization_id: str = "") -> rpb.SerialBlock:
    """Units 1..`end` of a 2024 JCM floating-solar style project in Thailand."""
    attributes = rpb.UnitAttributes(
        standard=rpb.JCM,
        issuing_registry="TH-JCM-registry",
        host_party="TH",
        project_id=project_id,
        methodology="JCM_TH_AM014",
        vintage=2024,
        mitigation_type=rpb.REDUCTION,
        authorization_id=authorization_id,
    )
    return rpb.SerialBlock(namespace=namespace, start=1, end=end, attributes=attributes)


def bearer(issuer: DevIssuer, subject: str, roles: list[str], broker_id: str = "") -> dict[str, str]:
    return {"authorization": f"Bearer {issuer.mint(subject, roles, broker_id)}"}


class Venue:
    """The running stack as its users see it: national registries, brokers, APIs.

    broker-a places the sell orders (`seller`), broker-b the buys (`buyer`); each acts only
    for the accounts it holds a mandate for (`grant_mandate`). Reads default to the operator."""

    def __init__(self, stack: Any, client: httpx.AsyncClient, issuer: DevIssuer) -> None:
        self.stack = stack
        self.client = client
        self.issuer = issuer
        self.registry, self.matching, self.settlement, self.compliance = (
            stack.urls[name] for name in ("registry", "matching", "settlement", "compliance")
        )
        self.brokers = {name: bearer(issuer, name, ["broker"], name) for name in ("broker-a", "broker-b")}
        self.seller, self.buyer = self.brokers["broker-a"], self.brokers["broker-b"]
        self.operator = bearer(issuer, "venue-operator", ["operator"])

    def regulator(self, jurisdiction: str) -> dict[str, str]:
        return bearer(self.issuer, f"regulator-{jurisdiction}", [f"regulator:{jurisdiction}"])

    async def from_national_registry(self, party: str, key: str, message: Message) -> None:
        topic = self.stack.topic_prefix + topics.registry_inbound(party)
        await publish(self.stack.bootstrap, topic, key, message, f"registry-{party}")

    async def open_national_account(
        self, party: str, account_id: str, holder: str, type: rpb.AccountType.ValueType = rpb.HOLDING
    ) -> None:
        command = rpb.OpenAccount(account_id=account_id, holder=holder, jurisdiction=party, type=type)
        await self.from_national_registry(party, account_id, command)

    async def authorize_thai_itmos(self, loa_id: str, quantity: int) -> None:
        await self.from_national_registry("TH", "TH", self.thai_itmos(loa_id, quantity))

    @staticmethod
    def thai_itmos(loa_id: str, quantity: int) -> rpb.RecordAuthorization:
        """Thailand's Letter of Authorization for 2024 JCM outcomes, NDC use, first
        transfer at the first international transfer (DOMAIN.md scenario 1)."""
        return rpb.RecordAuthorization(
            authorization_id=loa_id,
            host_party="TH",
            quantity=quantity,
            use=rpb.NDC,
            first_transfer=rpb.AT_FIRST_INTERNATIONAL_TRANSFER,
            vintage_from=2024,
            vintage_to=2024,
            cooperative_approach="JCM-JP-TH",
            authorized_entities=["Swiss buyer AG", "Singapore buyer Pte"],
        )

    async def issue(self, party: str, account_id: str, issuance_id: str, block: rpb.SerialBlock) -> None:
        command = rpb.RecordIssuance(issuance_id=issuance_id, account_id=account_id, block=block)
        await self.from_national_registry(party, account_id, command)

    async def open_account(self, account_id: str, holder: str, jurisdiction: str) -> httpx.Response:
        """Through the registry's API, as the jurisdiction's registry operator."""
        body = {"account_id": account_id, "holder": holder, "jurisdiction": jurisdiction, "type": "HOLDING"}
        headers = bearer(self.issuer, f"registry-{jurisdiction}", [f"registry-operator:{jurisdiction}", "operator"])
        return await self.client.post(f"{self.registry}/accounts", json=body, headers=headers)

    async def grant_mandate(self, party: str, account_id: str, broker_id: str) -> None:
        """The account's national registry mandates the broker (GrantMandate on its channel);
        returns once matching lists the mandate, so the broker's orders are taken."""
        command = rpb.GrantMandate(mandate_id=f"{account_id}:{broker_id}", account_id=account_id, broker_id=broker_id)
        await self.from_national_registry(party, account_id, command)

        async def listed() -> Any:
            async for mandate in self.pages(f"{self.matching}/mandates", headers=self.brokers[broker_id]):
                if mandate["account_id"] == account_id:
                    return mandate
            return None

        await eventually(listed, f"{broker_id}'s mandate for {account_id} to reach matching")

    async def fund(self, account_id: str, currency: str, amount: int) -> Any:
        """The operator deposits cash for the account (buys are paid from it); waits until
        settlement knows the registry's account. The reference makes a retry idempotent."""
        body: dict[str, Any] = {"movement_id": f"fund-{account_id}-{currency}-{amount}", "account_id": account_id}
        body |= {"currency": currency, "amount": amount}

        async def deposited() -> Any:
            response = await self.client.post(f"{self.settlement}/cash/deposits", json=body, headers=self.operator)
            if response.status_code == 404:  # the registry's AccountOpened is still on its way
                return None
            assert response.status_code in (200, 201), response.text
            return response.json()

        return await eventually(deposited, f"a deposit for {account_id}")

    async def cash(self, account_id: str, currency: str) -> tuple[int, int] | None:
        """(available, held) as the operator reads it."""
        balances = await self.get(f"{self.settlement}/cash/{account_id}")
        found = (balances or {}).get(currency)
        return (found["available"], found["held"]) if found else None

    async def get(self, url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        """The JSON of a 200, else None; as the operator unless `headers` say otherwise."""
        response = await self.client.get(url, headers=self.operator if headers is None else headers, **kwargs)
        return response.json() if response.status_code == 200 else None

    async def account(self, account_id: str) -> Any:
        return await self.get(f"{self.registry}/accounts/{account_id}")

    async def wait_held(self, account_id: str, held: int, reserved: int = 0) -> Any:
        async def probe() -> Any:
            found = await self.account(account_id)
            return found if found and (found["held"], found["reserved"]) == (held, reserved) else None

        return await eventually(probe, f"{account_id} to hold {held} (reserved {reserved})")

    async def place(
        self,
        headers: dict[str, str],
        instrument: str,
        side: str,
        price: int,
        quantity: int,
        account_id: str,
        client_order_id: str,
    ) -> str:
        body = {
            "instrument_id": instrument,
            "side": side,
            "price": price,
            "quantity": quantity,
            "account_id": account_id,
            "client_order_id": client_order_id,
        }
        response = await self.client.post(f"{self.matching}/orders", headers=headers, json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["order_id"])

    async def wait_order(self, order_id: str, headers: dict[str, str], status: str) -> Any:
        async def probe() -> Any:
            order = await self.get(f"{self.matching}/orders/{order_id}", headers=headers)
            return order if order and order["status"] == status else None

        return await eventually(probe, f"order {order_id} to be {status}")

    async def pages(self, url: str, headers: dict[str, str] | None = None, **params: Any) -> AsyncIterator[Any]:
        """Every item of a paginated list endpoint, following its `next` cursor."""
        after = None
        while True:
            query = {**params, **({"after": after} if after is not None else {})}
            page = await self.get(url, headers=headers, params=query)
            if page is None:
                return
            for item in page["items"]:
                yield item
            if page["next"] is None:
                return
            after = page["next"]

    async def wait_trade(self, instrument: str, buy_order_id: str) -> Any:
        async def probe() -> Any:
            async for trade in self.pages(f"{self.matching}/trades", instrument_id=instrument):
                if trade["buy_order_id"] == buy_order_id:
                    return trade
            return None

        return await eventually(probe, f"the trade of buy order {buy_order_id}")

    async def verify_chain(self, jurisdiction: str) -> tuple[bool, int]:
        """Walk a jurisdiction's audit chain window by window: (intact, records checked)."""
        after, checked = 0, 0
        while True:
            window = await self.get(
                f"{self.compliance}/audit/{jurisdiction}/verify",
                headers=self.regulator(jurisdiction),
                params={"after": after},
            )
            checked += window["checked"]
            if not window["intact"] or window["next"] is None:
                return window["intact"], checked
            after = window["next"]

    async def wait_settlement(self, trade_id: str) -> Any:
        async def probe() -> Any:
            found = await self.get(f"{self.settlement}/settlements/{trade_id}")
            return found if found and found["phase"] in ("settled", "failed") else None

        return await eventually(probe, f"trade {trade_id} to settle or fail")
