"""Check an audit chain offline: python -m services.compliance.verify (RECORDS | --topic
audit.<JUR> [--bootstrap HOST:PORT]) [--checkpoints FILE --public-key KEY]

RECORDS: the chain's records as NDJSON, one record per line as the API gives them (the
`items` of GET /audit/{jur} pages, or the lines of its NDJSON stream; heartbeats are
skipped), from the first record on. --topic: the chain as the `audit.<JUR>` Kafka topic
carries it, read from its beginning to its end as of the start (credentials from
TONNE_KAFKA_*, the broker from --bootstrap or KAFKA_BOOTSTRAP_SERVERS). FILE: the checkpoints as GET
/audit/{jur}/checkpoints gives them (its pages' `items`, as a JSON list). KEY: the public
key of GET /audit-signing-key. Prints the verdict; exits 1 naming the first bad sequence
when a record does not follow from the one before it, or a checkpoint's signature or
hash does not hold.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaConsumer

from services.common.envelope import UndecodableRecord, unwrap
from services.common.kafka import KafkaAccess
from services.compliance.chain import record
from services.compliance.domain import audit, signing
from tonne.v1.compliance_pb2 import AuditRecord


def record_of(view: dict[str, Any]) -> AuditRecord:
    """A record as the API shows it (its envelope as hex) back into the chain's form."""
    return record(view | {"envelope": bytes.fromhex(view["envelope_hex"])})


def first_bad(
    records: list[AuditRecord], checkpoints: list[dict[str, Any]], public_key: str | None
) -> tuple[int, str] | None:
    """(sequence, why) of the first fault, or None when the chain and its checkpoints hold."""
    broken = audit.first_break(records)
    faults = [] if broken is None else [(broken, "does not follow from the record before it")]
    by_sequence = {r.sequence: r for r in records}
    for checkpoint in checkpoints:
        sequence, chain_hash = checkpoint["sequence"], checkpoint["hash"]
        record = by_sequence.get(sequence)
        if record is not None and record.hash != chain_hash:
            faults.append((sequence, "differs from the signed checkpoint"))
        signature = base64.b64decode(checkpoint["signature"])
        jurisdiction = record.jurisdiction if record else (records[0].jurisdiction if records else "")
        if public_key is not None and not signing.verify(public_key, jurisdiction, sequence, chain_hash, signature):
            faults.append((sequence, "checkpoint signature does not verify"))
    return min(faults) if faults else None


async def from_topic(access: KafkaAccess, topic: str) -> list[AuditRecord]:
    """Every record on `topic` up to its end as of now, in chain order. A message that is
    not an audit record is a broken chain: UndecodableRecord."""
    # No group: every partition of the topic is this reader's, from the earliest offset.
    consumer = AIOKafkaConsumer(
        topic, **access.options(), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = sorted(consumer.assignment())
        if not partitions:
            raise typer.BadParameter(f"no topic {topic!r} on the broker (or not readable with these credentials)")
        ends = await consumer.end_offsets(partitions)
        found: list[AuditRecord] = []
        while [p for p in partitions if await consumer.position(p) < ends[p]]:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                for message in batch:
                    _, payload = unwrap(message.value)
                    if not isinstance(payload, AuditRecord):
                        raise UndecodableRecord(f"offset {message.offset} holds a {payload.DESCRIPTOR.name}")
                    found.append(payload)
    finally:
        await consumer.stop()
    return sorted(found, key=lambda r: r.sequence)


def main(
    records: Annotated[Path | None, typer.Argument(help="the records, NDJSON")] = None,
    topic: Annotated[str | None, typer.Option(help="read the chain from this audit topic instead")] = None,
    bootstrap: Annotated[str, typer.Option(envvar="KAFKA_BOOTSTRAP_SERVERS")] = "127.0.0.1:9092",
    checkpoints: Annotated[Path | None, typer.Option(help="the checkpoints, a JSON list")] = None,
    public_key: Annotated[str | None, typer.Option(help="the Ed25519 public key, base64")] = None,
) -> None:
    if (records is None) == (topic is None):
        raise typer.BadParameter("give the records' file or --topic, one of them")
    if topic is not None:
        chain = asyncio.run(from_topic(KafkaAccess.from_env(bootstrap), topic))
    else:
        assert records is not None
        chain = [
            record_of(view)
            for line in records.read_text().splitlines()
            if line.strip() and "sequence" in (view := json.loads(line))
        ]
    signed = json.loads(checkpoints.read_text()) if checkpoints else []
    fault = first_bad(chain, signed, public_key)
    if fault is not None:
        typer.echo(f"broken at sequence {fault[0]}: {fault[1]}")
        raise typer.Exit(1)
    typer.echo(f"intact: {len(chain)} records, {len(signed)} signed checkpoints")


if __name__ == "__main__":
    typer.run(main)
