"""Carbon-inclusion manifests on a real PostgreSQL through the registry's HTTP API
(DOMAIN.md scenario 4): a registry operator uploads the records, a participant gets their
record's inclusion proof and checks it against the root, and the block issued from the
manifest carries that root; a manifest issues once, even to two racing instances."""

from __future__ import annotations

import asyncio

from google.protobuf.message import Message

from services.common.runtime import Kernel
from services.registry import sql_index
from services.registry.domain.manifest import verify
from services.registry.service import Registry
from tests.integration.test_registry_controls import Caller, world  # noqa: F401 (fixture)
from tests.integration.test_registry_state import issued, kernel, run, screen  # noqa: F401 (fixture)
from tests.unit.factories import issuance, open_account
from tonne.v1 import registry_pb2 as pb
from tonne.v1.envelope_pb2 import CommandRejected

HEADER = "record_id,participant_id,activity,factor_mg"
# 3,000 rides of 1 to 4 km at 450 g CO2e a km: 3.375 t, 3 issued.
RIDES = [f"BKK-{i:05d},card-{i % 101},{1 + i % 4},450000" for i in range(3000)]
UPLOAD = "/manifests/BKK-METRO-2025?jurisdiction=TH&methodology=TH-METRO-01"


async def upload(caller: Caller, path: str, lines: list[str]) -> tuple[int, dict[str, object]]:
    response = await caller.client.put(
        path, content="\n".join([HEADER, *lines]).encode(), headers={**caller.headers, "content-type": "text/csv"}
    )
    return response.status_code, response.json()


def metro(issuance_id: str, account_id: str, start: int, tonnes: int) -> pb.RecordIssuance:
    command = issuance(issuance_id, account_id, start, start + tonnes - 1, namespace="PHCER-TH")
    command.block.attributes.methodology = "TH-METRO-01"
    command.manifest_id = "BKK-METRO-2025"
    return command


async def test_a_participant_proves_their_ride_is_in_the_issued_block(
    world: tuple[Registry, dict[str, Caller]],  # noqa: F811
) -> None:
    registry, callers = world
    alice, ch, broker = callers["alice"], callers["ch"], callers["broker"]
    # Only the operator or the party's registry operator uploads; a bad line stores nothing.
    assert (await upload(ch, UPLOAD, RIDES))[0] == 403
    assert (await upload(broker, UPLOAD, RIDES))[0] == 403
    status, refused = await upload(alice, UPLOAD, [*RIDES[:10], "BKK-X,card-1,1,4.5e5", *RIDES[10:]])
    assert (status, refused["code"], refused["evidence"]) == (422, "MANIFEST_INVALID", ["line 12"])
    unknown = await alice.get("/manifests/BKK-METRO-2025")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "MANIFEST_UNKNOWN")

    status, stored = await upload(alice, UPLOAD, RIDES)
    assert status == 201, stored
    total = sum((1 + i % 4) * 450_000 for i in range(3000))
    assert (stored["size"], stored["total_mg"], stored["tonnes"]) == (3000, str(total), total // 10**9)
    assert stored["remainder_mg"] == total % 10**9
    # The same manifest again is the stored one; other records under its id are not.
    assert await upload(alice, UPLOAD, list(reversed(RIDES))) == (201, stored)
    status, exists = await upload(alice, UPLOAD, RIDES[1:])
    assert (status, exists["code"]) == (409, "MANIFEST_EXISTS")

    # Issued: the block carries the root, and the manifest issues once.
    tonnes = int(stored["tonnes"])  # type: ignore[call-overload]
    wrong = await issued(registry, metro("PH-0", "TH-CO", 1, tonnes + 1))
    assert [(e.code, list(e.evidence)) for e in wrong if isinstance(e, CommandRejected)] == [
        ("MANIFEST_MISMATCH", [f"tonnes: {tonnes + 1} here, {tonnes} in the manifest"])
    ]
    [done] = await issued(registry, metro("PH-1", "TH-CO", 1, tonnes))
    assert isinstance(done, pb.UnitsIssued) and done.block.attributes.manifest_root.hex() == stored["root"]
    blocks = (await alice.get("/accounts/TH-CO/blocks")).json()["items"]
    assert [b["manifest_root"] for b in blocks if b["namespace"] == "PHCER-TH"] == [stored["root"]]
    [again] = await issued(registry, metro("PH-2", "TH-CO", 101, tonnes))
    assert isinstance(again, CommandRejected) and (again.code, list(again.evidence)) == ("MANIFEST_ISSUED", ["PH-1"])

    # A rider's proof checks against the block's root; another card gets nothing.
    proof = await broker.get("/manifests/BKK-METRO-2025/proof?record_id=BKK-01234&participant_id=card-22")
    assert proof.status_code == 200, proof.text
    body = proof.json()
    assert (body["activity"], body["size"], len(body["path"])) == (3, 3000, 12)
    path = [bytes.fromhex(h) for h in body["path"]]
    assert verify(bytes.fromhex(body["encoded"]), body["index"], body["size"], path, bytes.fromhex(stored["root"]))
    assert not verify(
        bytes.fromhex(body["encoded"]), body["index"] + 1, body["size"], path, bytes.fromhex(body["root"])
    )
    stranger = await broker.get("/manifests/BKK-METRO-2025/proof?record_id=BKK-01234&participant_id=card-23")
    assert (stranger.status_code, stranger.json()["code"]) == (404, "MANIFEST_RECORD_UNKNOWN")


async def test_two_instances_issue_a_manifest_once(
    world: tuple[Registry, dict[str, Caller]],  # noqa: F811
    kernel: Kernel,  # noqa: F811
) -> None:
    registry, callers = world
    status, stored = await upload(callers["alice"], UPLOAD, RIDES)
    assert status == 201
    await run(registry, open_account("TH-CO-2", "TH"))
    tonnes = int(stored["tonnes"])  # type: ignore[call-overload]
    # Two instances (own caches) and two account streams: only the manifest's row is shared.
    # Both are proposed (nothing is issued yet), then approved at once: decided again, one wins.
    other = Registry(kernel)
    await run(registry, metro("PH-A", "TH-CO", 1, tonnes))
    await run(other, metro("PH-B", "TH-CO-2", 1001, tonnes))

    async def approved(instance: Registry, proposal_id: str, account_id: str) -> list[Message]:
        """As the consumer does: a decision whose facts moved under it is decided again."""
        for _ in range(5):
            try:
                return await screen(instance, proposal_id, account_id)
            except Exception as exc:
                if not sql_index.conflicted(exc):
                    raise
        raise AssertionError("never decided")

    outcomes = await asyncio.gather(approved(registry, "PH-A", "TH-CO"), approved(other, "PH-B", "TH-CO-2"))
    kinds = sorted(type(events[0]).__name__ for events in outcomes)
    assert kinds == ["ProposalRejected", "UnitsIssued"]
    rejected = next(events[0] for events in outcomes if isinstance(events[0], pb.ProposalRejected))
    assert rejected.code == "MANIFEST_ISSUED"
    assert await registry.pool.fetchval("SELECT count(*) FROM manifest_issuances") == 1
