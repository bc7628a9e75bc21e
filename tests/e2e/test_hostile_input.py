"""Hostile input against the running stack: oversize bodies, out-of-range integers,
control characters and lone surrogates, wrong types, megabyte ids (in a body and on Kafka;
URLs up to 60 KB, near the HTTP client's limit), and forged records
published raw to Kafka (a national registry's channel touching another jurisdiction,
undecodable bytes, malformed facts). Each gets a clear 4xx or a dead letter; afterwards
every service is still ready and a valid trade still settles."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from services.common import topics
from services.common.auth import DevIssuer
from services.common.envelope import Context, wrap
from tests.support import Venue, publish, publish_raw, read_topic
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1.envelope_pb2 import DeadLetter

INT64_MAX = 2**63 - 1
MEGABYTE = 1024 * 1024


def order(**change: Any) -> dict[str, Any]:
    body = {
        "instrument_id": "CCER-2025",
        "side": "BUY",
        "price": 1000,
        "quantity": 1,
        "account_id": "acct-h",
        "client_order_id": "h",
    }
    return body | change


async def http_cases(venue: Venue) -> list[tuple[str, httpx.Response]]:
    m, s, c = venue.matching, venue.settlement, venue.compliance
    broker, operator = venue.seller, venue.operator
    sent: list[tuple[str, httpx.Response]] = []

    async def post(name: str, content: str | bytes) -> None:
        headers = broker | {"content-type": "application/json"}
        sent.append((name, await venue.client.post(f"{m}/orders", headers=headers, content=content)))

    async def get(name: str, url: str, headers: dict[str, str]) -> None:
        sent.append((name, await venue.client.get(url, headers=headers)))

    await post("a 1 MB body", json.dumps(order(account_id="x" * MEGABYTE)))
    # As escaped JSON text, which is how NUL, escapes and lone surrogates travel.
    for name, change in (
        ("price beyond int64", {"price": 2**63}),
        ("quantity beyond uint64", {"quantity": 2**64}),
        ("negative price", {"price": -1}),
        ("zero quantity", {"quantity": 0}),
        ("a string quantity", {"quantity": "ten"}),
        ("a fractional price", {"price": 1.5}),
        ("an unknown side", {"side": "HOLD"}),
        ("a null account", {"account_id": None}),
        ("NUL in an id", {"account_id": "a\x00b"}),
        ("an escape sequence in an id", {"client_order_id": "\x1b[31mred"}),
        ("a lone surrogate in an id", {"client_order_id": "\ud800"}),
        ("a 65-character instrument", {"instrument_id": "x" * 65}),
        ("price x quantity beyond int64", {"price": 100_000, "quantity": 2**62}),
    ):
        await post(name, json.dumps(order(**change)))
    await post("a JSON array", "[]")
    await post("not JSON", b"\xff\xfe{")
    for name, url, headers in (
        ("a limit beyond int64", f"{m}/orders?limit={2**70}", broker),
        ("NUL in a cursor", f"{m}/orders?after=%00", broker),
        ("invalid UTF-8 in a query", f"{m}/trades?instrument_id=%ED%A0%80", broker),
        ("a 16 KB order id", f"{m}/orders/{'o' * 16384}", broker),
        ("a 60 KB order id", f"{m}/orders/{'o' * 60000}", broker),
        ("NUL in a trade id", f"{s}/settlements/a%00b", operator),
        ("a negative limit", f"{s}/adjustments?limit=-1", operator),
        ("a lower-case party", f"{s}/adjustments?party=th", operator),
        ("a forged cursor", f"{s}/adjustments?after=!!!", operator),
        ("a 60 KB account id", f"{s}/cash/{'a' * 60000}", operator),
        ("a quote in a jurisdiction", f"{c}/audit/T%27H", operator),
        ("a sequence beyond int64", f"{c}/audit/TH?after={2**64}", operator),
        ("a zero window", f"{c}/audit/TH/verify?limit=0", operator),
        ("a negative stream cursor", f"{c}/audit/TH/stream?after=-1", operator),
        ("invalid UTF-8 in a path", f"{c}/decisions/%ED%A0%80", operator),
    ):
        await get(name, url, headers)
    return sent


async def test_hostile_input_gets_a_clear_refusal_and_the_stack_keeps_settling(
    running_stack: Any, dev_issuer: DevIssuer
) -> None:
    stack, run = running_stack, uuid.uuid4().hex[:6]
    prefix = stack.topic_prefix
    cn_seller, cn_buyer = f"CN-HI-S-{run}", f"CN-HI-B-{run}"
    forged_cn, barrier = f"CN-HI-F-{run}", f"TH-HI-{run}"
    async with httpx.AsyncClient(timeout=60) as client:
        venue = Venue(stack, client, dev_issuer)

        # --- HTTP: every case a 4xx with a code (long URLs may be refused by the server's parser) ---
        cases = await http_cases(venue)
        for name, response in cases:
            assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:300])
            if response.status_code not in (400, 414, 431):  # answered by the application
                assert response.json()["code"], name
        codes = {name: r.status_code for name, r in cases}
        assert codes["a 1 MB body"] == 413
        assert codes["price x quantity beyond int64"] == 422
        placed = [o async for o in venue.pages(f"{venue.matching}/orders", headers=venue.seller)]
        assert "h" not in {o["client_order_id"] for o in placed}  # nothing hostile was stored

        # --- Kafka: a national registry's channel touching another jurisdiction ---
        await venue.open_national_account("CN", cn_seller, "Shenzhen wind power Co")
        await venue.open_national_account("CN", cn_buyer, "Shenzhen manufacturer Ltd")
        ccer = rpb.SerialBlock(
            namespace=f"HI-CCER-{run}",
            start=1,
            end=100,
            attributes=rpb.UnitAttributes(
                standard=rpb.CCER, host_party="CN", project_id="CN-WIND-9", methodology="CCER-14-001-V01", vintage=2025
            ),
        )
        await venue.issue("CN", cn_seller, f"HI-ISS-{run}", ccer)
        await venue.wait_held(cn_seller, 100)
        forged = [
            rpb.OpenAccount(account_id=forged_cn, holder="squatter", jurisdiction="CN", type=rpb.HOLDING),
            rpb.GrantMandate(mandate_id=f"HI-F-{run}", account_id=cn_seller, broker_id="broker-b"),
            rpb.RecordIssuance(
                issuance_id=f"HI-FISS-{run}",
                account_id=cn_seller,
                block=rpb.SerialBlock(namespace=f"HI-FORGED-{run}", start=1, end=1000, attributes=ccer.attributes),
            ),
        ]
        for message in forged:
            await venue.from_national_registry("TH", cn_seller, message)
        # One partition per channel: once a later TH command is applied, the forged ones were handled.
        await venue.open_national_account("TH", barrier, "Bangkok barrier Co")
        await venue.wait_held(barrier, 0)
        assert await venue.account(forged_cn) is None
        assert (await venue.account(cn_seller))["held"] == 100
        # Mandates of one account share a registry.events partition: once broker-a's (granted
        # after the forged one was handled) reached matching, a forged grant would have too.
        await venue.grant_mandate("CN", cn_seller, "broker-a")
        await venue.grant_mandate("CN", cn_buyer, "broker-b")
        await venue.fund(cn_buyer, "CNY", 777 * 10)
        mandates = [m async for m in venue.pages(f"{venue.matching}/mandates", headers=venue.buyer)]
        assert cn_seller not in {m["account_id"] for m in mandates}
        stolen = order(instrument_id="CCER-2025", side="SELL", account_id=cn_seller, client_order_id=f"hi-{run}")
        refused = await client.post(f"{venue.matching}/orders", headers=venue.buyer, json=stolen)
        assert (refused.status_code, refused.json()["code"]) == (403, "BROKER_NOT_MANDATED")

        # --- Kafka: undecodable bytes, a megabyte-ish id, a malformed fact: dead letters, not 503s ---
        garbage = b"\x00\xffnot an envelope" + uuid.uuid4().bytes
        await publish_raw(stack.bootstrap, prefix + topics.MATCHING_ORDERS, b"CCER-2025", garbage)
        huge = mpb.SubmitOrder(
            order_id=f"HI-O-{run}",
            instrument_id="CCER-2025",
            broker_id="broker-a",
            account_id="x" * 500_000,
            side=mpb.BUY,
            price=1000,
            quantity=1,
        )
        await publish(stack.bootstrap, prefix + topics.MATCHING_ORDERS, "CCER-2025", huge, "forger")
        bad_fact = rpb.MandateGranted(
            mandate_id=f"HI-M-{run}", account_id="y" * 100_000, broker_id="b", jurisdiction="CN"
        )
        envelope = wrap(bad_fact, aggregate_id="y", context=Context.new("forger"), occurred_at=datetime.now(UTC))
        await publish_raw(stack.bootstrap, prefix + topics.REGISTRY_EVENTS, b"y", envelope.SerializeToString())

        def letters(records: list[Any]) -> list[DeadLetter]:
            return [DeadLetter.FromString(r.value) for r in records]

        parked = await read_topic(
            stack.bootstrap,
            prefix + topics.dead_letter(topics.MATCHING_ORDERS),
            lambda rs: any(letter.origin_value == garbage for letter in letters(rs)),
        )
        assert any(letter.origin_value == garbage and letter.error_code for letter in letters(parked))
        facts = await read_topic(
            stack.bootstrap,
            prefix + topics.dead_letter(topics.REGISTRY_EVENTS),
            lambda rs: (
                {"matching", "settlement"} <= {x.consumer for x in letters(rs) if x.error_code == "MANDATE_INVALID"}
            ),
        )
        assert all(len(x.error) < 5000 for x in letters(facts))

        # --- still ready, and a valid trade still settles ---
        for name in ("registry", "matching", "settlement", "compliance"):
            ready = await client.get(f"{stack.urls[name]}/readyz")
            assert ready.status_code == 200, (name, ready.text)
        sell_id = await venue.place(venue.seller, "CCER-2025", "SELL", 777, 10, cn_seller, f"hi-s-{run}")
        await venue.wait_order(sell_id, venue.seller, "resting")
        buy_id = await venue.place(venue.buyer, "CCER-2025", "BUY", 777, 10, cn_buyer, f"hi-b-{run}")
        trade = await venue.wait_trade("CCER-2025", buy_id)
        settled = await venue.wait_settlement(trade["trade_id"])
        assert settled["phase"] == "settled", settled["failure"]
        await venue.wait_held(cn_buyer, 10)
    print(f"\nhostile input: {len(cases)} HTTP cases refused 4xx, {len(forged)} forged channel commands without effect")
