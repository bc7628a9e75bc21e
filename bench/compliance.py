"""The transaction log's serial index at scale: screening decisions against 1M and 10M
indexed blocks.

For each size: a fresh database from compliance's own migrations; the index of used
serials bulk-loaded with COPY (blocks of 5 serials with gaps of 5, across 100 namespaces);
then retirement proposals on the gaps screened one at a time through the service's path
(`Compliance.decide_proposal` in a unit of work of its own: the namespace lock, the index
lookup, the rules, the decision appended with its outbox row and the approved serials
recorded, committed), the index lookup alone, and the rules alone (the pure core, no I/O).
Bytes per block: the index table and its primary key on disk, per row.

    .venv/bin/python bench/compliance.py [--sizes 1000000 10000000] [--decisions 2000]

Uses DATABASE_URL (an admin DSN) or starts its own pgserver under a temporary directory.
Writes bench/results/compliance.json: {"<indexed blocks>": {"decisions_per_s", "p99_ms",
"bytes_per_block", ...}}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

from deploy.postgres import admin_dsn, fresh_database
from services.common.db import connect_pool, migrate
from services.common.envelope import Context
from services.common.runtime import Kernel
from services.common.settings import Settings
from services.compliance.domain.screening import Policies, screen_proposal
from services.compliance.service import Compliance, ComplianceSettings, overlapping, proposal_facts
from tonne.v1 import registry_pb2 as rpb

RESULTS = Path(__file__).parent / "results" / "compliance.json"
NAMESPACES = 100
STRIDE = 10  # a used block of 5 serials, then a gap of 5
ACCOUNT = "CH-BENCH"
ATTRIBUTES = rpb.UnitAttributes(standard=rpb.JCM, host_party="TH", vintage=2024, project_id="TH-FS-1")


def namespace(j: int) -> str:
    return f"JCM-TH-{j:03d}"


def used_rows(size: int) -> Iterator[tuple[str, int, int, str]]:
    per_namespace = size // NAMESPACES
    for j in range(NAMESPACES):
        for i in range(per_namespace):
            start = i * STRIDE + 1
            yield namespace(j), start, start + 4, f"RT-LOAD-{j}-{i}"


def proposals(count: int, size: int, rng: random.Random) -> list[rpb.ScreenProposal]:
    """Voluntary retirements of distinct random gaps, spread over the namespaces."""
    per_namespace = -(-count // NAMESPACES)
    gaps = [rng.sample(range(size // NAMESPACES), per_namespace) for _ in range(NAMESPACES)]
    return [proposal(n, gaps[n % NAMESPACES][n // NAMESPACES]) for n in range(count)]


def proposal(n: int, i: int) -> rpb.ScreenProposal:
    """A voluntary retirement of gap `i`'s 5 serials: nothing used there, so it is approved."""
    block = rpb.SerialBlock(namespace=namespace(n % NAMESPACES), start=i * STRIDE + 6, end=i * STRIDE + 10)
    block.attributes.CopyFrom(ATTRIBUTES)
    retired = rpb.UnitsRetired(
        retirement_id=f"RT-BENCH-{n}",
        account_id=ACCOUNT,
        jurisdiction="CH",
        quantity=5,
        blocks=[block],
        beneficiary="bench",
        purpose="voluntary",
        use=rpb.CLAIM_VOLUNTARY,
        claim_year=2026,
    )
    return rpb.ScreenProposal(
        proposal_id=f"RT-BENCH-{n}",
        transaction_type="05-00",
        account_id=ACCOUNT,
        jurisdiction="CH",
        quantity=5,
        blocks=[block],
        retirement=retired,
    )


def figures(latencies: list[float]) -> tuple[float, float, float]:
    """(per second, p50 ms, p99 ms)."""
    q = statistics.quantiles(latencies, n=100)
    return round(len(latencies) / sum(latencies), 1), round(q[49] * 1000, 3), round(q[98] * 1000, 3)


async def measure(dsn: str, size: int, count: int) -> dict[str, float]:
    await migrate(dsn, "compliance")
    settings = Settings.model_validate({"service": "compliance", "kafka_bootstrap": "127.0.0.1:1", "database_url": dsn})
    pool = await connect_pool(dsn, "compliance", size=2)
    try:
        begin = time.perf_counter()
        async with pool.acquire() as conn:
            await conn.copy_records_to_table(
                "used_serials",
                columns=["namespace", "serial_start", "serial_end", "proposal_id"],
                records=used_rows(size),
            )
            await conn.execute("INSERT INTO accounts (account_id, jurisdiction) VALUES ($1, 'CH')", ACCOUNT)
            await conn.execute("VACUUM ANALYZE used_serials")
            on_disk = await conn.fetchval("SELECT pg_total_relation_size('used_serials')")
        load_s = time.perf_counter() - begin
        compliance = Compliance(Kernel(settings, pool), Policies.load(), ComplianceSettings())
        policies = Policies.load()
        rng = random.Random(size)
        screened = proposals(count, size, rng)

        lookups: list[float] = []
        async with pool.acquire() as conn:
            for p in screened:
                t = time.perf_counter()
                await overlapping(conn, p.blocks)
                lookups.append(time.perf_counter() - t)
            facts = await proposal_facts(conn, screened[0])
        rules: list[float] = []
        for p in screened:
            t = time.perf_counter()
            screen_proposal(p, facts, [], policies)
            rules.append(time.perf_counter() - t)

        decisions: list[float] = []
        approved = 0
        for p in screened:
            t = time.perf_counter()
            async with compliance.unit_of_work() as uow:
                await compliance.decide_proposal(uow, p, facts, Context.new("bench"))
            decisions.append(time.perf_counter() - t)
        async with pool.acquire() as conn:
            approved = await conn.fetchval("SELECT count(*) FROM proposal_decisions WHERE verdict = $1", "APPROVED")
        if approved != count:
            raise RuntimeError(f"{count - approved} of the bench's proposals were not approved")
    finally:
        await pool.close()
    per_s, p50, p99 = figures(decisions)
    lookup_per_s, _, lookup_p99 = figures(lookups)
    rules_per_s, _, _ = figures(rules)
    return {
        "decisions_per_s": per_s,
        "p50_ms": p50,
        "p99_ms": p99,
        "index_lookups_per_s": lookup_per_s,
        "index_lookup_p99_ms": lookup_p99,
        "rules_per_s": rules_per_s,
        "bytes_per_block": round(on_disk / size, 1),
        "load_s": round(load_s, 1),
        "decisions": count,
    }


async def run(admin: str, sizes: list[int], count: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for size in sizes:
        async with fresh_database(admin, f"bench_compliance_{size}") as dsn:
            results[str(size)] = await measure(dsn, size, count)
        print(json.dumps({str(size): results[str(size)]}, indent=2), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--decisions", type=int, default=2000)
    args = parser.parse_args()
    with admin_dsn() as admin:
        results = asyncio.run(run(admin, args.sizes, args.decisions))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
