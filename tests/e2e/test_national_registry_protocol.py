"""The national-registry protocol over the running stack's real broker
(docs/national-registry-protocol.md): an external transfer proposed through the API goes
out on the acquiring registry's channel; its answer comes back on that registry's channel,
redelivered, duplicated, early and from the wrong registry, and takes effect once; units
transferred in by a registry arrive once, however often it sends them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from services.common import topics
from services.common.auth import DevIssuer
from services.common.envelope import Context, unwrap, wrap
from tests.support import Venue, bearer, eventually, publish, publish_raw, read_topic
from tonne.v1 import registry_pb2 as rpb


async def test_an_external_transfer_is_proposed_answered_once_and_returned_when_refused(
    running_stack: Any, dev_issuer: DevIssuer
) -> None:
    stack, run = running_stack, uuid.uuid4().hex[:6]
    th_co, accepted_id, refused_id, inbound_id = f"TH-EXT-{run}", f"xt-a-{run}", f"xt-r-{run}", f"xt-i-{run}"
    returned_id = f"xt-b-{run}"
    async with httpx.AsyncClient(timeout=10) as client:
        venue = Venue(stack, client, dev_issuer)
        await venue.open_national_account("TH", th_co, "Thai exporter")
        await venue.issue(
            "TH",
            th_co,
            f"I-EXT-{run}",
            rpb.SerialBlock(
                namespace=f"VCU-TH-{run}",
                start=1,
                end=1000,
                attributes=rpb.UnitAttributes(
                    standard=rpb.VCU, issuing_registry="verra", host_party="TH", project_id="TH-W-1", vintage=2024
                ),
            ),
        )
        await venue.wait_held(th_co, 1000)
        keeper = bearer(dev_issuer, "th-rep", ["registry-operator:TH"])
        proposals = f"{venue.registry}/accounts/{th_co}/external-transfers"

        # Early: an answer before its proposal is refused and changes nothing.
        early = rpb.AnswerExternalTransfer(transfer_id=refused_id, accepted=True)
        inbound = stack.topic_prefix + topics.registry_inbound("JP")
        early_id = await publish(stack.bootstrap, inbound, refused_id, early, "registry-JP")

        body = {"transfer_id": accepted_id, "to_registry": "JP", "to_account": "JP-100-7", "quantity": 300}
        proposed = await client.post(proposals, json=body, headers=keeper)
        assert proposed.status_code == 201, proposed.text
        outbound = stack.topic_prefix + topics.registry_outbound("JP")
        records = await read_topic(stack.bootstrap, outbound, lambda rs: proposal_in(rs, accepted_id) is not None)
        proposal = proposal_in(records, accepted_id)
        assert proposal is not None and [(b.start, b.end) for b in proposal.blocks] == [(1, 300)]

        # The wrong registry's answer is refused; the right one's is delivered twice (the
        # same message redelivered) and sent again as a new message: it takes effect once.
        await venue.from_national_registry("CH", accepted_id, rpb.AnswerExternalTransfer(transfer_id=accepted_id))
        answer = wrap(
            rpb.AnswerExternalTransfer(transfer_id=accepted_id, accepted=True),
            aggregate_id=accepted_id,
            context=Context.new("registry-JP"),
            occurred_at=datetime.now(UTC),
        ).SerializeToString()
        for _ in range(2):
            await publish_raw(stack.bootstrap, inbound, accepted_id.encode(), answer)
        await venue.from_national_registry(
            "JP", accepted_id, rpb.AnswerExternalTransfer(transfer_id=accepted_id, accepted=True)
        )

        async def state(transfer_id: str, wanted: str) -> Any:
            page = await venue.get(proposals, keeper)
            found = [t for t in (page or {}).get("items", []) if t["transfer_id"] == transfer_id]
            return found[0] if found and found[0]["state"] == wanted else None

        await eventually(lambda: state(accepted_id, "completed"), "the accepted transfer to complete")
        await venue.wait_held(th_co, 700)

        refused = await client.post(proposals, json=body | {"transfer_id": refused_id}, headers=keeper)
        assert refused.status_code == 201, refused.text
        await venue.wait_held(th_co, 400, reserved=300)
        no = rpb.AnswerExternalTransfer(transfer_id=refused_id, accepted=False, reason="no such account here")
        await venue.from_national_registry("JP", refused_id, no)
        returned = await eventually(lambda: state(refused_id, "returned"), "the refused transfer to return")
        assert (returned["code"], returned["reason"]) == ("EXTERNAL_TRANSFER_REFUSED", "no such account here")
        await venue.wait_held(th_co, 700)

        # The other way: JP transfers units new to tonne into the account, then sends the
        # same transfer again as a new message (refused: its id is used).
        arriving = rpb.SerialBlock(
            namespace=f"VCU-JP-{run}",
            start=1,
            end=50,
            attributes=rpb.UnitAttributes(standard=rpb.VCU, host_party="JP", project_id="JP-H-2", vintage=2023),
        )
        incoming = rpb.ProposeInboundTransfer(
            transfer_id=inbound_id, from_account="JP-100-7", to_account_id=th_co, blocks=[arriving]
        )
        for _ in range(2):
            await venue.from_national_registry("JP", inbound_id, incoming)
        await venue.wait_held(th_co, 750)

        # And 100 of the units it accepted come back, as they left.
        [left] = proposal.blocks
        back = rpb.SerialBlock(namespace=left.namespace, start=1, end=100, attributes=left.attributes)
        returning = rpb.ProposeInboundTransfer(
            transfer_id=returned_id, from_account="JP-100-7", to_account_id=th_co, blocks=[back]
        )
        await venue.from_national_registry("JP", returned_id, returning)
        await venue.wait_held(th_co, 850)

    # The registry's own record: one completion, one return, and a refusal for every other answer.
    events = stack.topic_prefix + topics.REGISTRY_EVENTS

    def outcomes(records: list[Any]) -> list[str]:
        seen = []
        for record in records:
            envelope, payload = unwrap(record.value)
            ours = (accepted_id, refused_id, inbound_id, returned_id)
            rejected = envelope.type == "tonne.v1.CommandRejected"
            if getattr(payload, "transfer_id", "") in ours or (rejected and getattr(payload, "command_id", "") in ours):
                seen.append(envelope.type.removeprefix("tonne.v1.") + ":" + getattr(payload, "code", ""))
        return seen

    last = "CommandRejected:SEQUENCE_DUPLICATE_ID"
    records = await read_topic(stack.bootstrap, events, lambda rs: last in outcomes(rs))
    seen = outcomes(records)
    # JP heard the answer to each of its messages on its own channel: the early one refused.
    jp = await read_topic(stack.bootstrap, outbound, lambda rs: last in outcomes(rs))
    answers = {unwrap(r.value)[0].causation_id: outcome for r in jp for outcome in outcomes([r])}
    assert answers[early_id] == "CommandRejected:EXTERNAL_TRANSFER_UNKNOWN"
    assert {"ExternalTransferCompleted:", "InboundTransferAccepted:"} <= set(answers.values())
    assert seen.count("ExternalTransferCompleted:") == 1
    assert seen.count("InboundTransferAccepted:") == 2  # new serials, then exported ones back
    assert sorted(s for s in seen if s.startswith("CommandRejected")) == [
        "CommandRejected:CHANNEL_JURISDICTION_MISMATCH",
        "CommandRejected:EXTERNAL_TRANSFER_UNKNOWN",  # the early answer
        "CommandRejected:EXTERNAL_TRANSFER_UNKNOWN",  # the answer sent again as a new message
        "CommandRejected:SEQUENCE_DUPLICATE_ID",  # the inbound transfer sent again
    ]


def proposal_in(records: list[Any], transfer_id: str) -> rpb.ExternalTransferProposed | None:
    for record in records:
        _, payload = unwrap(record.value)
        if isinstance(payload, rpb.ExternalTransferProposed) and payload.transfer_id == transfer_id:
            return payload
    return None
