"""A carbon-inclusion manifest at scale (DOMAIN.md scenario 4): 1.2 million metro rides of
a few grams each, validated and encoded, the Merkle tree built, proofs served and verified
in memory; then the upload's own path (CSV parsed, tree built, stored in PostgreSQL by the
registry's migrations and adapter) and proofs read back from the store one at a time, as
`GET /manifests/{id}/proof` reads them.

    .venv/bin/python bench/manifest.py [--records 1200000] [--proofs 10000]

Uses DATABASE_URL (an admin DSN) or starts its own pgserver under a temporary directory.
Writes bench/results/manifest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path

from deploy.postgres import admin_dsn, fresh_database
from services.common.db import connect_pool, migrate
from services.registry import manifests
from services.registry.domain.manifest import Manifest, Record, verify

RESULTS = Path(__file__).parent / "results" / "manifest.json"
DATABASE = "bench_manifest"


def in_memory(records: list[Record], proofs: int, rng: random.Random) -> tuple[Manifest, dict[str, object]]:
    begin = time.perf_counter()
    manifest = Manifest(records)
    build_s = time.perf_counter() - begin
    picks = [rng.randrange(manifest.size) for _ in range(proofs)]
    begin = time.perf_counter()
    paths = [manifest.proof(i) for i in picks]
    proof_s = time.perf_counter() - begin
    begin = time.perf_counter()
    verified = all(
        verify(manifest.records[i].encode(), i, manifest.size, path, manifest.root)
        for i, path in zip(picks, paths, strict=True)
    )
    verify_s = time.perf_counter() - begin
    if not verified:
        raise RuntimeError("a proof did not verify")
    return manifest, {
        "build_s": round(build_s, 2),
        "proofs_per_s": round(proofs / proof_s),
        "verify_per_s": round(proofs / verify_s),
        "proof_hashes": len(paths[0]),
    }


async def stored(admin: str, body: bytes, root: bytes, proofs: int, rng: random.Random) -> dict[str, object]:
    async with fresh_database(admin, DATABASE) as dsn:
        await migrate(dsn, "registry")
        pool = await connect_pool(dsn, "registry", size=2)
        try:
            begin = time.perf_counter()
            manifest = manifests.build(body)
            parse_build_s = time.perf_counter() - begin
            begin = time.perf_counter()
            async with pool.acquire() as conn:
                summary = await manifests.store(conn, "SZ-METRO-2025", "CN", "CCER-METRO-01", manifest, "bench")
            store_s = time.perf_counter() - begin
            if summary.root != root:
                raise RuntimeError("the stored root is not the in-memory one")
            picks = [manifest.records[rng.randrange(manifest.size)] for _ in range(proofs)]
            del manifest
            latencies: list[float] = []
            async with pool.acquire() as conn:
                for record in picks:
                    begin = time.perf_counter()
                    found = await manifests.inclusion(conn, "SZ-METRO-2025", record.record_id, record.participant_id)
                    latencies.append(time.perf_counter() - begin)
                    if not verify(found.record.encode(), found.index, found.size, found.path, root):
                        raise RuntimeError("a stored proof did not verify")
                on_disk = await conn.fetchval(
                    "SELECT sum(pg_total_relation_size(t)) FROM unnest(ARRAY['manifests', 'manifest_records', "
                    "'manifest_levels']::regclass[]) AS t"
                )
        finally:
            await pool.close()
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "upload_bytes": len(body),
        "parse_build_s": round(parse_build_s, 2),
        "store_s": round(store_s, 2),
        "stored_bytes_per_record": round(int(on_disk) / summary.size),
        "stored_proof_p50_ms": round(quantiles[49] * 1000, 2),
        "stored_proof_p99_ms": round(quantiles[98] * 1000, 2),
        "stored_proofs_per_s": round(len(latencies) / sum(latencies)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_200_000)
    parser.add_argument("--proofs", type=int, default=10_000)
    args = parser.parse_args()
    rng = random.Random(2024)

    begin = time.perf_counter()
    records = [
        Record(f"SZ-METRO-{i:08d}", f"card-{rng.randrange(200_000):06d}", rng.randint(1, 4), rng.randint(900, 4_500))
        for i in range(args.records)
    ]
    validated_s = time.perf_counter() - begin
    manifest, figures = in_memory(records, args.proofs, rng)
    lines = (f"{r.record_id},{r.participant_id},{r.activity},{r.factor_mg}" for r in records)
    body = "\n".join([",".join(manifests.HEADER), *lines]).encode()
    root, tonnes, total_mg = manifest.root, manifest.tonnes, manifest.total_mg
    del manifest, records

    with admin_dsn() as admin:
        figures |= asyncio.run(stored(admin, body, root, args.proofs, rng))
    figures = {
        "records": args.records,
        "validate_s": round(validated_s, 2),
        **figures,
        "tonnes": tonnes,
        "remainder_mg": total_mg - tonnes * 10**9,
        "root": root.hex(),
    }
    print(json.dumps(figures, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
