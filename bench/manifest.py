"""A carbon-inclusion manifest at scale (DOMAIN.md scenario 4): 1.2 million metro rides of
a few grams each, validated and encoded, the Merkle tree built, proofs served and verified.

    .venv/bin/python bench/manifest.py [--records 1200000] [--proofs 10000]

Writes bench/results/manifest.json.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from services.registry.domain.manifest import Manifest, Record, verify

RESULTS = Path(__file__).parent / "results" / "manifest.json"


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
    begin = time.perf_counter()
    manifest = Manifest(records)
    build_s = time.perf_counter() - begin

    picks = [rng.randrange(manifest.size) for _ in range(args.proofs)]
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
    figures = {
        "records": manifest.size,
        "validate_s": round(validated_s, 2),
        "build_s": round(build_s, 2),
        "total_s": round(validated_s + build_s, 2),
        "proofs_per_s": round(args.proofs / proof_s),
        "verify_per_s": round(args.proofs / verify_s),
        "proof_hashes": len(paths[0]),
        "tonnes": manifest.tonnes,
        "remainder_mg": manifest.total_mg - manifest.tonnes * 10**9,
        "root": manifest.root.hex(),
    }
    print(json.dumps(figures, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
