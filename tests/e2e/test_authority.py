"""Who may do what (docs/trust.md), against the running stack: for every role, the HTTP
operations of matching, settlement, compliance and the registry are tried on the objects
of one settled trade; what the role may do succeeds, what it may not
is refused (401 without a token, else 403 or 404) and the refusal carries none of the
object's data. The suite prints the counts: attempts, successes = 0.

A one-shot registry command (opening an account, a proposal, a transfer) succeeds once:
one allowed role tries it, the others allowed are tabled in process
(tests/integration/test_registry_trust.py, test_registry_controls.py). The Kafka ACLs
are in tests/e2e/test_kafka_acl.py; the national-registry channel's binding to its
jurisdiction is attempted in tests/e2e/test_hostile_input.py.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.common.auth import DevIssuer
from tests.support import Venue, bearer, jcm_th_block
from tonne.v1 import registry_pb2 as rpb

JCM = "JCM-TH-2024-NDC"
# What a retirement claims: a use and a year.
CLAIM = {"use": "VOLUNTARY", "claim_year": 2025}
ROLES = (
    "anonymous",
    "broker-a",
    "broker-b",
    "regulator:TH",
    "regulator:CN",
    "registry-operator:TH",
    "national-registry:TH",
    "operator",
)
AUTHENTICATED = frozenset(ROLES) - {"anonymous"}


def tokens(issuer: DevIssuer) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {"anonymous": {}}
    for role in ROLES[1:]:
        if role.startswith("broker-"):
            found[role] = bearer(issuer, role, ["broker"], role)
        else:
            found[role] = bearer(issuer, f"test-{role}", [role])
    return found


@dataclass
class Action:
    """One HTTP operation on one object. `allowed` roles succeed (2xx); `filtered` roles get
    a 2xx page that must not hold `secret`; every other role is refused and the refusal
    must not hold `secret` (a string only the object's own data contains)."""

    name: str
    method: str
    url: str
    allowed: frozenset[str]
    secret: str
    filtered: frozenset[str] = frozenset()
    json: dict[str, Any] | None = None
    # Also allowed, not tried: a one-shot command succeeds once (the tried role shows it);
    # tests/integration/test_registry_trust.py tables these roles in process.
    untried: frozenset[str] = frozenset()
    params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False


@dataclass
class Tally:
    attempts: int = 0  # forbidden actions tried
    successes: int = 0  # of them, answered 2xx or with the object's data
    allowed: int = 0  # allowed actions that succeeded
    breaches: list[str] = field(default_factory=list)

    def breach(self, text: str) -> None:
        self.successes += 1
        self.breaches.append(text)


async def attempt(client: httpx.AsyncClient, action: Action, headers: dict[str, str]) -> tuple[int, str]:
    if action.stream:
        # A granted stream never ends: its first line is enough.
        async with client.stream(action.method, action.url, headers=headers, params=action.params) as response:
            if response.status_code == 200:
                return 200, await anext(response.aiter_lines())
            return response.status_code, (await response.aread()).decode()
    response = await client.request(action.method, action.url, headers=headers, params=action.params, json=action.json)
    return response.status_code, response.text


async def judge(client: httpx.AsyncClient, action: Action, role: str, headers: dict[str, str], tally: Tally) -> None:
    status, body = await attempt(client, action, headers)
    where = f"{role} {action.name}: {status} {body[:200]}"
    if role in action.allowed:
        assert 200 <= status < 300, where
        tally.allowed += 1
        return
    tally.attempts += 1
    if role in action.filtered:
        if not 200 <= status < 300 or action.secret in body:
            tally.breach(where)
        return
    refused = (401,) if role == "anonymous" else (403, 404)
    if 200 <= status < 300 or action.secret in body:
        tally.breach(where)
    assert status in refused, where
    assert set(json.loads(body)) == {"code", "reason", "evidence"}, where


def one_shot(r: str, run: str, th_gov: str, ch_buyer: str) -> list[Action]:
    """The registry's commands that succeed once: TH's registry operator places each (the
    approval of its own proposal is the operator's: four eyes), the rest are refused."""
    operator, th = frozenset({"operator"}), frozenset({"registry-operator:TH"})
    holder = "Government of Thailand"  # in no refusal
    other, mandate, transfer = f"TH-AU2-{run}", f"au-m2-{run}", f"au-x2-{run}"
    account = {"account_id": other, "holder": "Thai company", "jurisdiction": "TH"}
    retirement = {
        "retirement_id": f"au-rt2-{run}",
        "quantity": 1,
        "beneficiary": "b",
        "purpose": "p",
        **CLAIM,
    }
    at = f"{r}/accounts/{th_gov}"
    return [
        Action("open a Thai account", "POST", f"{r}/accounts", th, holder, json=account, untried=operator),
        Action(
            "grant a mandate",
            "POST",
            f"{at}/mandates",
            th,
            holder,
            json={"mandate_id": mandate, "broker_id": "broker-z"},
            untried=operator,
        ),
        Action("revoke it", "DELETE", f"{at}/mandates/{mandate}", th, holder, untried=operator),
        Action(
            "propose a trusted account",
            "POST",
            f"{at}/trusted",
            th,
            holder,
            json={"account_id": other},
            untried=operator,
        ),
        Action("approve it", "POST", f"{at}/trusted/{other}/approval", operator, holder, untried=th),
        Action("remove it", "DELETE", f"{at}/trusted/{other}", th, holder, untried=operator),
        Action(
            "request a transfer",
            "POST",
            f"{at}/transfers",
            th,
            holder,
            json={"transfer_id": transfer, "to_account_id": ch_buyer, "quantity": 1},
            untried=operator,
        ),
        Action(
            "cancel it",
            "POST",
            f"{at}/transfers/{transfer}/cancellation",
            th,
            holder,
            json={"reason": "authority test"},
            untried=operator,
        ),
        Action("retire a unit", "POST", f"{at}/retirements", th, holder, json=retirement, untried=operator),
    ]


async def test_every_role_may_do_only_what_its_authority_allows(running_stack: Any, dev_issuer: DevIssuer) -> None:
    stack, run = running_stack, uuid.uuid4().hex[:6]
    th_gov, ch_buyer, loa_id = f"TH-AU-{run}", f"CH-AU-{run}", f"AU-LOA-{run}"
    async with httpx.AsyncClient(timeout=30) as client:
        venue = Venue(stack, client, dev_issuer)
        # A settled JCM trade from a Thai account (broker-a) to a Swiss one (broker-b).
        await venue.open_national_account("TH", th_gov, "Government of Thailand", rpb.GOVERNMENT)
        await venue.open_national_account("CH", ch_buyer, "Swiss buyer AG")
        await venue.authorize_thai_itmos(loa_id, 1000)
        block = jcm_th_block(f"AU-{run}", 1000, "TH-SOLAR-AU", loa_id)
        await venue.issue("TH", th_gov, f"AU-ISS-{run}", block)
        await venue.wait_held(th_gov, 1000)
        await venue.grant_mandate("TH", th_gov, "broker-a")
        await venue.grant_mandate("CH", ch_buyer, "broker-b")
        await venue.fund(ch_buyer, "USD", 432100)
        sell_id = await venue.place(venue.seller, JCM, "SELL", 4321, 100, th_gov, f"au-sell-{run}")
        await venue.wait_order(sell_id, venue.seller, "resting")
        buy_id = await venue.place(venue.buyer, JCM, "BUY", 4321, 100, ch_buyer, f"au-buy-{run}")
        trade = await venue.wait_trade(JCM, buy_id)
        assert (await venue.wait_settlement(trade["trade_id"]))["phase"] == "settled"
        # broker-a's resting order, at a price nobody crosses.
        rest_id = await venue.place(venue.seller, JCM, "SELL", 100000, 1, th_gov, f"au-rest-{run}")
        await venue.wait_order(rest_id, venue.seller, "resting")

        # The registry's controls leave traces to read: a transfer scheduled outside the
        # trusted list, a proposal to trust the Swiss account, a retirement.
        r = venue.registry
        th_operator = bearer(dev_issuer, "th-rep-1", ["registry-operator:TH"])
        scheduled = f"au-x-{run}"
        for path, body in (
            ("transfers", {"transfer_id": scheduled, "to_account_id": ch_buyer, "quantity": 1}),
            ("trusted", {"account_id": ch_buyer}),
            (
                "retirements",
                {"retirement_id": f"au-rt-{run}", "quantity": 1, "beneficiary": "b", "purpose": "p"} | CLAIM,
            ),
        ):
            answer = await client.post(f"{r}/accounts/{th_gov}/{path}", json=body, headers=th_operator)
            assert answer.status_code == 201, answer.text

        m, s, c = venue.matching, venue.settlement, venue.compliance
        order = {"instrument_id": JCM, "price": 100000, "quantity": 1}
        everyone = AUTHENTICATED
        # The account's readers: its jurisdiction's registry operator and regulator, the
        # broker it mandates, the operator.
        th_readers = frozenset({"operator", "registry-operator:TH", "regulator:TH", "broker-a"})
        th_keepers = frozenset({"operator", "registry-operator:TH"})
        th_freezers = frozenset({"operator", "registry-operator:TH", "regulator:TH"})
        actions = [
            # matching: orders are the broker's own; the account needs the broker's mandate
            Action(
                "place a SELL from the Thai account",
                "POST",
                f"{m}/orders",
                frozenset({"broker-a"}),
                secret=rest_id,
                json=order | {"side": "SELL", "account_id": th_gov, "client_order_id": f"au-s2-{run}"},
            ),
            Action(
                "place a BUY for the Swiss account",
                "POST",
                f"{m}/orders",
                frozenset({"broker-b"}),
                secret=sell_id,
                json=order | {"side": "BUY", "price": 100, "account_id": ch_buyer, "client_order_id": f"au-b2-{run}"},
            ),
            Action(
                "list broker-a's orders",
                "GET",
                f"{m}/orders",
                frozenset({"broker-a"}),
                sell_id,
                frozenset({"broker-b"}),
            ),
            Action("read broker-a's order", "GET", f"{m}/orders/{rest_id}", frozenset({"broker-a"}), th_gov),
            Action(
                "list broker-a's mandates",
                "GET",
                f"{m}/mandates",
                frozenset({"broker-a"}),
                th_gov,
                frozenset({"broker-b"}),
            ),
            Action("list instruments", "GET", f"{m}/instruments", everyone, secret=JCM),
            Action("read a book", "GET", f"{m}/instruments/{JCM}/book", everyone, secret='"asks"'),
            Action(
                "list trades", "GET", f"{m}/trades", everyone, secret=trade["trade_id"], params={"instrument_id": JCM}
            ),
            # settlement: the trade's brokers, the operator, a regulator of either account
            Action(
                "read the settlement",
                "GET",
                f"{s}/settlements/{trade['trade_id']}",
                frozenset({"operator", "broker-a", "broker-b", "regulator:TH"}),
                secret=th_gov,
            ),
            Action(
                "list Thailand's adjustments",
                "GET",
                f"{s}/adjustments",
                frozenset({"operator", "regulator:TH", "registry-operator:TH", "national-registry:TH"}),
                secret=trade["trade_id"],
                params={"party": "TH"},
            ),
            Action("list every party's adjustments", "GET", f"{s}/adjustments", frozenset({"operator"}), '"items"'),
            Action(
                "read the Thai account's cash",
                "GET",
                f"{s}/cash/{th_gov}",
                frozenset({"operator", "broker-a"}),
                "432100",
            ),
            Action(
                "read the Swiss account's cash",
                "GET",
                f"{s}/cash/{ch_buyer}",
                frozenset({"operator", "broker-b"}),
                "available",
            ),
            Action(
                "read the Thai account's cash statement",
                "GET",
                f"{s}/cash/{th_gov}/statement",
                frozenset({"operator", "broker-a"}),
                "432100",
                params={"currency": "USD"},
            ),
            # The venue's bank side is the operator's to confirm.
            Action(
                "deposit cash for the Swiss account",
                "POST",
                f"{s}/cash/deposits",
                frozenset({"operator"}),
                "available",
                json={"movement_id": f"au-dep-{run}", "account_id": ch_buyer, "currency": "USD", "amount": 1},
            ),
            Action(
                "withdraw cash from the Thai account",
                "POST",
                f"{s}/cash/withdrawals",
                frozenset({"operator"}),
                "available",
                json={"movement_id": f"au-wd-{run}", "account_id": th_gov, "currency": "USD", "amount": 1},
            ),
            # compliance: the operator and the regulators of the jurisdictions concerned
            Action(
                "read the screening decision",
                "GET",
                f"{c}/decisions/{trade['trade_id']}",
                frozenset({"operator", "regulator:TH"}),
                secret=th_gov,
            ),
            Action(
                "page Thailand's audit chain",
                "GET",
                f"{c}/audit/TH",
                frozenset({"operator", "regulator:TH"}),
                '"items"',
            ),
            Action(
                "verify Thailand's audit chain",
                "GET",
                f"{c}/audit/TH/verify",
                frozenset({"operator", "regulator:TH"}),
                '"head"',
            ),
            Action(
                "stream Thailand's audit chain",
                "GET",
                f"{c}/audit/TH/stream",
                frozenset({"operator", "regulator:TH"}),
                secret='"sequence"',
                stream=True,
            ),
            Action(
                "page China's audit chain", "GET", f"{c}/audit/CN", frozenset({"operator", "regulator:CN"}), '"items"'
            ),
            # registry: reads by the account's readers, controls by its keepers
            Action("read the Thai account", "GET", f"{r}/accounts/{th_gov}", th_readers, "Government of Thailand"),
            Action("page its blocks", "GET", f"{r}/accounts/{th_gov}/blocks", th_readers, "TH-SOLAR-AU"),
            Action("page its trusted list", "GET", f"{r}/accounts/{th_gov}/trusted", th_readers, ch_buyer),
            Action("page its scheduled transfers", "GET", f"{r}/accounts/{th_gov}/transfers", th_readers, scheduled),
            Action("page its retirements", "GET", f"{r}/accounts/{th_gov}/retirements", th_readers, f"au-rt-{run}"),
            Action(
                "set its transfer limit",
                "PUT",
                f"{r}/accounts/{th_gov}/transfer-limit",
                th_keepers,
                "Government of Thailand",
                json={"per_transfer": 0},
            ),
            Action(
                "freeze it",
                "POST",
                f"{r}/accounts/{th_gov}/freeze",
                th_freezers,
                "Government of Thailand",
                json={"reason": "authority test"},
            ),
            Action(
                "unfreeze it",
                "POST",
                f"{r}/accounts/{th_gov}/unfreeze",
                th_freezers,
                "Government of Thailand",
                json={"reason": "authority test"},
            ),
            Action(
                "freeze its project",
                "POST",
                f"{r}/projects/TH-SOLAR-AU/freeze",
                th_freezers,
                '"frozen"',
                json={"host_party": "TH", "reason": "authority test"},
            ),
            Action(
                "unfreeze its project",
                "POST",
                f"{r}/projects/TH-SOLAR-AU/unfreeze",
                th_freezers,
                '"frozen"',
                json={"host_party": "TH", "reason": "authority test"},
            ),
            # registry: one-shot commands, each tried by one of the roles that may
            *one_shot(r, run, th_gov, ch_buyer),
            # last: the allowed cancel takes the resting order away
            Action("cancel broker-a's order", "DELETE", f"{m}/orders/{rest_id}", frozenset({"broker-a"}), th_gov),
        ]
        tally = Tally()
        headers = tokens(dev_issuer)
        for action in actions:
            # Forbidden roles first, so an allowed change (a cancel) cannot hide a refusal.
            for role in sorted(set(ROLES) - action.untried, key=lambda r: r in action.allowed):
                await judge(client, action, role, headers[role], tally)

        # Public trades never name an account or a broker; the order is still broker-a's.
        trades = await venue.get(f"{m}/trades", venue.buyer, params={"instrument_id": JCM, "limit": 1000})
        assert th_gov not in str(trades) and "broker-a" not in str(trades)
        assert (await venue.wait_order(rest_id, venue.seller, "cancelled"))["account_id"] == th_gov

    print(
        f"\nauthority: {len(ROLES)} roles x {len(actions)} operations; forbidden attempts: {tally.attempts}, "
        f"successes: {tally.successes}; allowed actions that succeeded: {tally.allowed}"
    )
    assert tally.successes == 0, tally.breaches
    assert tally.attempts >= 180
