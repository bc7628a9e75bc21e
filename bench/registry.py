"""Registry decisions against a large block index, beside a minimal PostgreSQL transaction.

For each size (stored blocks): a fresh database from the registry's own migrations;
accounts opened through the service; blocks (and the holdings view) bulk-loaded with
COPY, rows exactly as the projector writes them (sql_index.row_of); then issuance,
reserve and transfer decisions through the path the HTTP API takes (Registry.decide: unit
of work, event store, outbox, projector), one at a time, each alternating with the floor
(BEGIN; one INSERT; one UPDATE; COMMIT) on the same client, so the ratio to the floor
compares like with like on a shared machine.

    .venv/bin/python bench/registry.py [--sizes 1000000 10000000] [--ops 2000] [--loop asyncio]

Uses DATABASE_URL (an admin DSN) or starts its own pgserver under a temporary directory.
Writes bench/results/registry.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import uvloop
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from google.protobuf.message import Message

from deploy.postgres import admin_dsn, fresh_database
from services.common import topics
from services.common.consumer import Consumer
from services.common.db import connect_pool, migrate
from services.common.envelope import Context, wrap
from services.common.kafka import KafkaAccess
from services.common.runtime import Kernel
from services.common.settings import Settings
from services.registry.domain.blocks import Block, Holding, Units
from services.registry.service import COMPLIANCE, Registry
from services.registry.sql_index import COLUMNS, row_of
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as pb
from tonne.v1.envelope_pb2 import CommandRejected

RESULTS = Path(__file__).parent / "results" / "registry.json"
ACCOUNTS = 1000
NAMESPACES = 100
UNITS_PER_BLOCK = 10
ATTRIBUTES = pb.UnitAttributes(
    standard=pb.JCM,
    issuing_registry="TH-JCM-registry",
    host_party="TH",
    project_id="TH-FLOATING-SOLAR-1",
    methodology="JCM_TH_AM014",
    vintage=2024,
    mitigation_type=pb.REDUCTION,
)
UNITS = Units.of(ATTRIBUTES)
# Records per unit of work on the consumer's path (its batches are up to MAX_BATCH).
BATCH = 50


def account(k: int) -> str:
    return f"TH-BG-{k:04d}"


def namespace(j: int) -> str:
    return f"JCM-TH-{j:03d}"


def owner(i: int, j: int) -> str:
    # Neighbours always differ in holder, so no two stored blocks would merge.
    return account((i * 7 + j) % ACCOUNTS)


def bulk_rows(size: int) -> Iterator[tuple[object, ...]]:
    per_namespace = size // NAMESPACES
    for j in range(NAMESPACES):
        ns = namespace(j)
        for i in range(per_namespace):
            start = i * UNITS_PER_BLOCK + 1
            yield row_of(Block(ns, start, start + UNITS_PER_BLOCK - 1, Holding(owner(i, j)), UNITS))


def settings_for(dsn: str) -> Settings:
    return Settings.model_validate({"service": "registry", "kafka_bootstrap": "127.0.0.1:1", "database_url": dsn})


async def timed(
    op: Callable[[int], Awaitable[None]], floor: Callable[[int], Awaitable[None]], count: int
) -> dict[str, float]:
    """`op` and the floor alternately, each `count` times: both see the same machine (other
    jobs on it slow both alike), so their ratio holds even when the absolute rates do not."""
    latencies: list[float] = []
    floors: list[float] = []
    for n in range(count):
        for call, into in ((op, latencies), (floor, floors)):
            t = time.perf_counter()
            await call(n)
            into.append(time.perf_counter() - t)
    return {**_figures(latencies), **{f"floor_{k}": v for k, v in _figures(floors).items()}}


async def consumed(
    registry: Registry, floor: Callable[[int], Awaitable[None]], ops: int, selector: pb.UnitSelector
) -> dict[str, float]:
    """Reserves and transfers as the venue sends them (registry.commands), through the
    kernel's consumer: BATCH records of a partition per unit of work (group commit), each
    batch alternating with BATCH floor transactions. A record's latency is its batch's."""
    # No broker: the records are made here; the producer only parks dead letters (none here).
    consumer = Consumer(
        name="registry",
        kafka=KafkaAccess("127.0.0.1:1"),
        topic_prefix="",
        pool=registry.pool,
        producer=AIOKafkaProducer(bootstrap_servers="127.0.0.1:1"),
        handlers=registry.handlers,
        unit_of_work=registry.unit_of_work,
    )
    offsets = itertools.count()

    def reserve(n: int) -> Message:
        account_id = account((n * 53) % ACCOUNTS)
        return pb.ReserveUnits(reservation_id=f"BENCH-RC-{n}", account_id=account_id, quantity=15, selector=selector)

    def transfer(n: int) -> Message:
        return pb.TransferUnits(
            transfer_id=f"BENCH-TC-{n}", reservation_id=f"BENCH-RC-{n}", to_account_id="CH-BUYER-A", quantity=15
        )

    async def floors(b: int) -> None:
        for n in range(BATCH):
            await floor(b * BATCH + n)

    figures: dict[str, float] = {}
    for name, make in (("reserve", reserve), ("transfer", transfer)):

        async def batch(b: int, make: Callable[[int], Message] = make) -> None:
            context = Context.new("settlement")
            records = [
                ConsumerRecord(topics.REGISTRY_COMMANDS, 0, next(offsets), 0, 0, b"k", value, None, 1, 1, [])
                for n in range(b * BATCH, (b + 1) * BATCH)
                for value in [
                    wrap(
                        make(n), aggregate_id="bench", context=context, occurred_at=datetime.now(UTC)
                    ).SerializeToString()
                ]
            ]
            if set(await consumer.process(records)) != {"applied"}:
                raise RuntimeError(f"a batch of {make.__name__} was not applied whole")

        result = await timed(batch, floors, ops // BATCH)
        figures |= {
            f"consumed_{name}_per_s": round(result["per_s"] * BATCH, 1),
            f"consumed_{name}_floor_per_s": round(result["floor_per_s"] * BATCH, 1),
            f"consumed_{name}_vs_floor": round(result["per_s"] / result["floor_per_s"], 3),
            f"consumed_{name}_batch_p99_ms": result["p99_ms"],
        }
    refused = await registry.pool.fetchval("SELECT count(*) FROM events WHERE stream_id LIKE 'rejected-%'")
    if refused:
        raise RuntimeError(f"{refused} consumed commands were refused")
    figures["consumed_batch"] = BATCH
    return figures


def _figures(latencies: list[float]) -> dict[str, float]:
    latencies = sorted(latencies)
    return {
        "per_s": round(len(latencies) / sum(latencies), 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 3),
    }


async def load(pool: asyncpg.Pool, registry: Registry, size: int) -> float:
    """Accounts through the service; blocks and holdings by COPY. Returns seconds."""
    begin = time.perf_counter()
    for k in range(ACCOUNTS):
        await execute(
            registry, pb.OpenAccount(account_id=account(k), holder=f"holder {k}", jurisdiction="TH", type=pb.HOLDING)
        )
    for buyer in ("CH-BUYER-A", "CH-BUYER-B"):
        await execute(registry, pb.OpenAccount(account_id=buyer, holder=buyer, jurisdiction="CH", type=pb.HOLDING))
    async with pool.acquire() as conn:
        chunk: list[tuple[object, ...]] = []
        for row in bulk_rows(size):
            chunk.append(row)
            if len(chunk) == 200_000:
                await conn.copy_records_to_table("blocks", records=chunk, columns=COLUMNS.split(", "))
                chunk = []
        if chunk:
            await conn.copy_records_to_table("blocks", records=chunk, columns=COLUMNS.split(", "))
        # The holdings view of what was loaded, as the projector would have summed it.
        await conn.execute(
            "INSERT INTO holdings (account_id, status, standard, host_party, vintage, authorization_id, quantity) "
            "SELECT account_id, status, standard, host_party, vintage, authorization_id, "
            "sum(serial_end - serial_start + 1) FROM blocks "
            "GROUP BY account_id, status, standard, host_party, vintage, authorization_id"
        )
        await conn.execute("VACUUM ANALYZE blocks")
        await conn.execute("ANALYZE holdings")
    return time.perf_counter() - begin


async def execute(registry: Registry, command: Message) -> Message:
    """Through `Registry.decide`: the path of the HTTP API and the scheduler."""
    [event] = await registry.decide(command, "bench")
    if isinstance(event, CommandRejected):
        raise RuntimeError(f"{type(command).__name__} refused: {event.code} {event.reason}")
    return event


async def measure(pool: asyncpg.Pool, registry: Registry, size: int, ops: int) -> dict[str, float]:
    per_namespace = size // NAMESPACES
    tail = per_namespace * UNITS_PER_BLOCK + 1  # first serial past the loaded ones

    async def issue(n: int) -> None:
        start = tail + (n // NAMESPACES) * 2 * UNITS_PER_BLOCK  # gaps: no merges
        block = pb.SerialBlock(namespace=namespace(n % NAMESPACES), start=start, end=start + 9, attributes=ATTRIBUTES)
        owner = account(n % ACCOUNTS)
        await execute(registry, pb.RecordIssuance(issuance_id=f"BENCH-I-{n}", account_id=owner, block=block))
        # Completed once the transaction log approves: decided again, as compliance.decisions delivers it.
        approval = cpb.ProposalScreened(proposal_id=f"BENCH-I-{n}", account_id=owner, verdict=cpb.APPROVED)
        async with registry.unit_of_work() as uow:
            [issued] = await registry.execute(uow, approval, Context.new("bench"), channel=COMPLIANCE)
        if not isinstance(issued, pb.UnitsIssued):
            raise RuntimeError(f"issuance not completed: {issued}")

    selector = pb.UnitSelector(standard=pb.JCM, host_party="TH", vintage=2024)

    async def reserve(n: int) -> None:
        # 15 units: a block and a half, so most reservations split a block.
        command = pb.ReserveUnits(
            reservation_id=f"BENCH-R-{n}", account_id=account((n * 37) % ACCOUNTS), quantity=15, selector=selector
        )
        await execute(registry, command)

    async def transfer(n: int) -> None:
        command = pb.TransferUnits(
            transfer_id=f"BENCH-T-{n}",
            reservation_id=f"BENCH-R-{n}",
            to_account_id="CH-BUYER-A" if n % 2 else "CH-BUYER-B",
            quantity=15,
        )
        await execute(registry, command)

    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE floor_log (id bigserial PRIMARY KEY, payload bytea NOT NULL)")
        await conn.execute("CREATE TABLE floor_counter (id int PRIMARY KEY, n bigint NOT NULL)")
        await conn.execute("INSERT INTO floor_counter VALUES (1, 0)")

    async def floor(n: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO floor_log (payload) VALUES ($1)", b"x" * 200)
            await conn.execute("UPDATE floor_counter SET n = n + 1 WHERE id = 1")

    # Warm the connections, statement caches and the aggregate cache of the accounts used.
    for n in range(50):
        await floor(n)
    figures: dict[str, float] = {}
    for name, op in (("issuance", issue), ("reserve", reserve), ("transfer", transfer)):
        result = await timed(op, floor, ops)
        figures |= {f"{name}_{key}": value for key, value in result.items()}
    figures |= await consumed(registry, floor, ops, selector)
    rows = await pool.fetchval("SELECT count(*) FROM blocks")
    total = await pool.fetchval("SELECT pg_total_relation_size('blocks')")
    return {
        "transfer_p99_ms": figures["transfer_p99_ms"],
        "transfers_per_s": figures["transfer_per_s"],
        # The floor measured interleaved with the transfers.
        "floor_per_s": figures["transfer_floor_per_s"],
        "floor_p99_ms": figures["transfer_floor_p99_ms"],
        "bytes_per_block": round(total / rows, 1),
        "transfer_vs_floor": round(figures["transfer_per_s"] / figures["transfer_floor_per_s"], 3),
        "reserve_vs_floor": round(figures["reserve_per_s"] / figures["reserve_floor_per_s"], 3),
        "issuance_vs_floor": round(figures["issuance_per_s"] / figures["issuance_floor_per_s"], 3),
        **{k: v for k, v in figures.items() if not k.startswith("transfer_")},
        "transfer_p50_ms": figures["transfer_p50_ms"],
        "stored_blocks_after": rows,
        "ops_each": ops,
    }


async def run(admin: str, sizes: list[int], ops: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for size in sizes:
        async with fresh_database(admin, f"bench_registry_{size}") as dsn:
            await migrate(dsn, "registry")
            pool = await connect_pool(dsn, "registry", size=2)
            try:
                registry = Registry(Kernel(settings_for(dsn), pool))
                seconds = await load(pool, registry, size)
                print(f"{size:>10} blocks loaded in {seconds:.0f} s", flush=True)
                figures = await measure(pool, registry, size, ops)
                figures["load_s"] = round(seconds, 1)
            finally:
                await pool.close()
        results[str(size)] = figures
        print(json.dumps({str(size): figures}, indent=2), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--ops", type=int, default=2000)
    # The services run on uvloop (uvicorn picks it when installed); asyncio for comparison.
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    with admin_dsn() as admin:
        results = (uvloop.run if args.loop == "uvloop" else asyncio.run)(run(admin, args.sizes, args.ops))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    labelled = {size: {**figures, "loop": args.loop} for size, figures in results.items()}
    RESULTS.write_text(json.dumps(labelled, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
