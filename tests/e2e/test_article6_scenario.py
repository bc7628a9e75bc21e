"""DOMAIN.md scenario 1 carried on, end to end through the running stack: after the first
transfer TH -> CH, the CH -> SG resale of the ITMOs moves freely (no second adjustment, the
authorization not consumed again); two more sales from Thailand that together exceed what
is left of its authorization: one settles, the other is refused; Switzerland uses ITMOs
toward its NDC only once the transaction log approved the retirement, and a claim the
authorization does not cover (OIMP) is refused with its rule and the units held again; the
parties' AEF reports for the year show First Transfer, Transfer, Acquisition and use rows
and pass their checks. Then Thailand raises the authorization (a sale it could not cover
before settles) and revokes it: a new first transfer is refused, a resale of ITMOs
first-transferred before still settles, and table 2 shows the terms' version and the
revocation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from services.common.auth import DevIssuer
from tests.support import Venue, bearer, eventually, jcm_th_block
from tonne.v1 import registry_pb2 as rpb

JCM = "JCM-TH-2024-NDC"
PRICE = 1500


async def test_itmos_are_resold_freely_claimed_once_and_reported(running_stack: Any, dev_issuer: DevIssuer) -> None:
    stack, run = running_stack, uuid.uuid4().hex[:6]
    th_gov, ch, sg, loa_id = f"TH-GOV6-{run}", f"CH-ITMO-{run}", f"SG-ITMO-{run}", f"LOA-TH6-{run}"
    async with httpx.AsyncClient(timeout=10) as client:
        venue = Venue(stack, client, dev_issuer)
        await venue.open_national_account("TH", th_gov, "Government of Thailand", rpb.GOVERNMENT)
        await venue.authorize_thai_itmos(loa_id, 4000)
        block = jcm_th_block(f"JCM-TH6-{run}", 5000, "TH-FLOATING-SOLAR-6", loa_id)
        await venue.issue("TH", th_gov, f"JC-TH6-{run}", block)
        for account, holder, party in ((ch, "Swiss buyer AG", "CH"), (sg, "Singapore buyer Pte", "SG")):
            assert (await venue.open_account(account, holder, party)).status_code == 201
        await venue.wait_held(th_gov, 5000)
        await venue.grant_mandate("TH", th_gov, "broker-a")
        await venue.grant_mandate("CH", ch, "broker-a")  # it resells
        await venue.grant_mandate("CH", ch, "broker-b")  # it buys
        await venue.grant_mandate("SG", sg, "broker-b")
        await venue.grant_mandate("SG", sg, "broker-a")  # it resells, after the revocation
        await venue.fund(ch, "USD", PRICE * 5000)
        await venue.fund(sg, "USD", PRICE * 2000)

        async def trade(seller: str, buyer: str, quantity: int, tag: str) -> Any:
            sell = await venue.place(venue.seller, JCM, "SELL", PRICE, quantity, seller, f"s-{tag}-{run}")
            await venue.wait_order(sell, venue.seller, "resting")
            buy = await venue.place(venue.buyer, JCM, "BUY", PRICE, quantity, buyer, f"b-{tag}-{run}")
            return await venue.wait_trade(JCM, buy)

        first = await venue.wait_settlement((await trade(th_gov, ch, 3000, "first"))["trade_id"])
        assert first["phase"] == "settled", first["failure"]
        assert [a["quantity"] for a in first["corresponding_adjustments"]] == ["3000"]

        resale = await venue.wait_settlement((await trade(ch, sg, 2000, "resale"))["trade_id"])
        assert resale["phase"] == "settled", resale["failure"]
        assert resale["corresponding_adjustments"] == []  # first-transferred already: no second adjustment
        await venue.wait_held(sg, 2000)

        # 1,000 t of the authorization are left: of two sales of 800 t, one is refused.
        late = await asyncio.gather(*(trade(th_gov, ch, 800, f"late{n}") for n in range(2)))
        outcomes = [await venue.wait_settlement(t["trade_id"]) for t in late]
        assert sorted(o["phase"] for o in outcomes) == ["failed", "settled"]
        [refused] = [o for o in outcomes if o["phase"] == "failed"]
        assert refused["failure"] == "COMPLIANCE_REJECTED: DOUBLE_CLAIMING_AUTHORIZATION"
        await venue.wait_held(th_gov, 1200)  # 5,000 - 3,000 - 800; the refused 800 are back

        year = datetime.now(UTC).year
        # Switzerland uses 1,000 t toward its NDC: compliance screens the retirement first.
        ch_registry = bearer(dev_issuer, "ch-registry-operator", ["registry-operator:CH"])
        claim = {"beneficiary": "Swiss Confederation", "purpose": "NDC 2021-2030", "claim_year": year}

        async def retire(retirement_id: str, quantity: int, use: str) -> httpx.Response:
            body = claim | {"retirement_id": retirement_id, "quantity": quantity, "use": use}
            return await client.post(f"{venue.registry}/accounts/{ch}/retirements", json=body, headers=ch_registry)

        used = await retire(f"RT-NDC-{run}", 1000, "NDC")
        assert used.status_code == 201, used.text
        assert (used.json()["use"], used.json()["quantity"]) == ("NDC", 1000)
        # The LoA covers NDC use only: CORSIA (OIMP) use of its ITMOs is double claiming.
        corsia = await retire(f"RT-OIMP-{run}", 100, "OIMP")
        assert (corsia.status_code, corsia.json()["code"]) == (422, "SCREENING_REJECTED"), corsia.text
        assert "USE_AUTHORIZED" in corsia.json()["reason"]
        account = await venue.wait_held(ch, 800)
        assert account["retired"] == 1000

        # The transaction log's answers reach the Swiss regulator's audit chain.
        async def audited() -> dict[str, str] | None:
            answers: dict[str, str] = {}
            async for record in venue.pages(f"{venue.compliance}/audit/CH", venue.regulator("CH")):
                if record["event_type"] == "tonne.v1.ProposalScreened":
                    answers[record["payload"]["proposal_id"]] = record["payload"]["verdict"]
            return answers if len(answers) == 2 else None

        answers = await eventually(audited, "both answers on CH's audit chain")
        assert answers == {f"RT-NDC-{run}": "APPROVED", f"RT-OIMP-{run}": "REJECTED"}

        async def report(party: str) -> Any:
            found = await venue.get(f"{venue.settlement}/aef/{party}/{year}")
            assert found is not None
            ours = [a for a in found["actions"] if a.get("authorization_id") == loa_id]
            return found, ours

        th_report, th_actions = await report("TH")
        first_transfers = [a for a in th_actions if a["action"] == "ITMO_FIRST_TRANSFER"]
        assert sum(int(a["quantity"]) for a in first_transfers) == 3800
        assert th_report["consistent"], th_report["findings"]
        [loa] = [a for a in th_report["authorizations"] if a["authorization_id"] == loa_id]  # table 2
        assert loa["cooperative_approach"] == "JCM-JP-TH"
        entities = [e["entity"] for e in th_report["authorized_entities"] if e["authorization_id"] == loa_id]
        assert entities == ["Swiss buyer AG", "Singapore buyer Pte"]  # table 5
        ch_report, ch_actions = await report("CH")
        kinds = {a["action"]: 0 for a in ch_actions}
        for action in ch_actions:
            kinds[action["action"]] += int(action["quantity"])
        assert kinds == {"ITMO_ACQUISITION": 3800, "ITMO_TRANSFER": 2000, "ITMO_USE": 1000}
        assert ch_report["consistent"], ch_report["findings"]
        _, sg_actions = await report("SG")
        assert [(a["action"], int(a["quantity"])) for a in sg_actions] == [("ITMO_ACQUISITION", 2000)]

        # Thailand raises the authorization by 500 t: 700 t are left, a 300 t sale settles.
        raised = rpb.ChangeAuthorization(
            authorization=venue.thai_itmos(loa_id, 4500), reason="Joint Committee decision 2"
        )
        await venue.from_national_registry("TH", "TH", raised)
        await on_th_chain(venue, "tonne.v1.AuthorizationChanged", loa_id)
        more = await venue.wait_settlement((await trade(th_gov, ch, 300, "raised"))["trade_id"])
        assert more["phase"] == "settled", more["failure"]
        # Revoked: no new first transfer, but ITMOs first-transferred before still resell.
        revoke = rpb.RevokeAuthorization(authorization_id=loa_id, host_party="TH", reason="project withdrawn")
        await venue.from_national_registry("TH", "TH", revoke)
        await on_th_chain(venue, "tonne.v1.AuthorizationRevoked", loa_id)
        fresh = await venue.wait_settlement((await trade(th_gov, ch, 100, "revoked"))["trade_id"])
        assert fresh["failure"] == "COMPLIANCE_REJECTED: DOUBLE_CLAIMING_AUTHORIZATION"
        resold = await venue.wait_settlement((await trade(sg, ch, 100, "resold"))["trade_id"])
        assert resold["phase"] == "settled", resold["failure"]
        th_report, _ = await report("TH")
        [loa] = [a for a in th_report["authorizations"] if a["authorization_id"] == loa_id]
        assert (loa["quantity"], loa["version"], loa["revoked"]) == ("4500", 2, True)
        assert th_report["consistent"], th_report["findings"]


async def on_th_chain(venue: Venue, event_type: str, loa_id: str) -> None:
    """Wait until compliance, the transaction log, recorded the change on Thailand's chain."""

    async def seen() -> bool | None:
        async for record in venue.pages(f"{venue.compliance}/audit/TH", venue.regulator("TH")):
            if record["event_type"] == event_type and loa_id in str(record["payload"]):
                return True
        return None

    await eventually(seen, f"{event_type} of {loa_id} on TH's audit chain")
