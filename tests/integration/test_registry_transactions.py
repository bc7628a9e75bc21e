"""An account's transaction history on a real PostgreSQL through the registry's HTTP API:
issuance, a venue's delivery (projected inside its append statement), a retirement and a
cancellation, each an entry with its type code, paged and filtered, read only by whoever
may read the account."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from services.registry.service import Registry
from tests.integration.test_registry_controls import Caller, screened, world  # noqa: F401 (fixture)
from tests.integration.test_registry_state import kernel, run  # noqa: F401 (fixture)
from tonne.v1 import registry_pb2 as pb


def rows(page: dict[str, Any]) -> list[tuple[str, str, str, int, str]]:
    return [
        (t["transaction_id"], t["transaction_type"], t["direction"], t["quantity"], t["counterparty"])
        for t in page["items"]
    ]


async def test_an_account_s_history_lists_its_transactions_by_type(
    world: tuple[Registry, dict[str, Caller]],  # noqa: F811
) -> None:
    registry, callers = world
    alice, regulator = callers["alice"], callers["regulator"]
    await run(registry, pb.ReserveUnits(reservation_id="R-1", account_id="TH-CO", quantity=300))
    await run(
        registry, pb.TransferUnits(transfer_id="T-1", reservation_id="R-1", to_account_id="CH-BUYER", quantity=300)
    )
    body = {"retirement_id": "RT-1", "quantity": 400, "beneficiary": "Acme", "purpose": "claim", "use": "VOLUNTARY"}
    retired = await screened(registry, alice, "/accounts/TH-CO/retirements", body | {"claim_year": 2025})
    assert retired.status_code == 201, retired.text
    cancel = {"retirement_id": "RT-2", "quantity": 100, "purpose": "voluntary cancellation", "cancel": True}
    assert (await screened(registry, alice, "/accounts/TH-CO/retirements", cancel)).status_code == 201

    history = (await regulator.get("/accounts/TH-CO/transactions")).json()
    assert rows(history) == [
        ("I-1", "01-00", "in", 5000, ""),
        ("T-1", "10-00", "out", 300, "CH-BUYER"),
        ("RT-1", "05-00", "out", 400, ""),
        ("RT-2", "04-01", "out", 100, ""),
    ]
    assert history["items"][1]["blocks"] == "JCM-TH:1-300" and history["next"] is None
    received = (await callers["ch"].get("/accounts/CH-BUYER/transactions")).json()
    assert rows(received) == [("T-1", "10-00", "in", 300, "TH-CO")]

    # Filtered and paged.
    retirements = (await regulator.get("/accounts/TH-CO/transactions?type=05-00")).json()
    assert rows(retirements) == [("RT-1", "05-00", "out", 400, "")]
    seen, after = [], None
    while True:
        query = "?limit=3" + (f"&after={after}" if after else "")
        page = (await regulator.get(f"/accounts/TH-CO/transactions{query}")).json()
        seen += [t["transaction_id"] for t in page["items"]]
        if (after := page["next"]) is None:
            break
    assert seen == ["I-1", "T-1", "RT-1", "RT-2"]
    when = history["items"][1]["recorded_at"]
    since = (await regulator.get(f"/accounts/TH-CO/transactions?since={quote(when)}")).json()
    until = (await regulator.get(f"/accounts/TH-CO/transactions?until={quote(when)}")).json()
    assert [t["transaction_id"] for t in since["items"]] == ["T-1", "RT-1", "RT-2"]
    assert [t["transaction_id"] for t in until["items"]] == ["I-1"]
    assert (await regulator.get("/accounts/TH-CO/transactions?type=10")).status_code == 422
    assert (await regulator.get("/accounts/TH-CO/transactions?after=x")).status_code == 422

    # Read as the account's blocks are: another party's registry and a broker without a mandate get nothing.
    for caller in (callers["ch"], callers["broker"]):
        blocks = await caller.get("/accounts/TH-CO/blocks")
        listed = await caller.get("/accounts/TH-CO/transactions")
        assert listed.status_code == blocks.status_code and listed.status_code in (403, 404)
