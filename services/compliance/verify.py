"""Check an exported audit chain offline: python -m services.compliance.verify RECORDS
[--checkpoints FILE --public-key KEY]

RECORDS: the chain's records as NDJSON, one record per line as the API gives them (the
`items` of GET /audit/{jur} pages, or the lines of its NDJSON stream; heartbeats are
skipped), from the first record on. FILE: the checkpoints as GET
/audit/{jur}/checkpoints gives them (its pages' `items`, as a JSON list). KEY: the public
key of GET /audit-signing-key. Prints the verdict; exits 1 naming the first bad sequence
when a record does not follow from the one before it, or a checkpoint's signature or
hash does not hold.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated, Any

import typer

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


def main(
    records: Path,
    checkpoints: Annotated[Path | None, typer.Option(help="the checkpoints, a JSON list")] = None,
    public_key: Annotated[str | None, typer.Option(help="the Ed25519 public key, base64")] = None,
) -> None:
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
