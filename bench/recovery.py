"""Recovery: seconds from process start to /readyz 200, per service, by stored history.

For each service and each size, a fresh database is filled with that many events made by
the service's own pure core, wrapped and written in bulk (COPY) exactly as the live path
stores them, with the snapshots the live path would have taken (every SNAPSHOT_EVERY
events of an aggregate). Then the service is started as users start it
(`python -m services.<name>`) and timed until /readyz answers 200, and its first read of
an aggregate (snapshot + tail) is timed too. Projection tables are not filled: start-up
reads none of them.

The old path (fold the whole event table at start-up) no longer exists in the tree; its
pure registry fold is run from the commit before the change, in a scratch worktree, on
the same kind of history, where it finishes in reasonable time.

    .venv/bin/python bench/recovery.py [--sizes 10000,100000,1000000] [--services registry,...]

Prints the figures and writes bench/results/recovery.json:
{"<service>": {"<stored events>": <seconds from start to ready>}, "first_read_ms": {...}, "old_fold_s": {...}}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from google.protobuf.message import Message

from deploy.kafka_broker import KafkaBroker, run_sync
from deploy.postgres import create_database, drop_database, start_postgres, stop_postgres
from deploy.stack import ServiceProcesses, prepare
from services.common.aggregate import Aggregate
from services.common.auth import DevIssuer
from services.common.db import migrate
from services.common.envelope import Context, wrap
from services.compliance.domain.facts import Facts
from services.compliance.domain.screening import Policy, screen
from services.matching.domain.engine import Book
from services.matching.domain.instruments import load as load_instruments
from services.registry.domain.memory import MemoryRegistry, stream_of
from services.settlement.domain import dvp
from services.settlement.domain.cash import CashAccount
from services.settlement.domain.settlement import TradeSettlement
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb

RESULTS = Path(__file__).parent / "results" / "recovery.json"
SNAPSHOT_EVERY = 500
OLD_COMMIT = "ba17ac1"  # the last commit whose services folded their whole history at start-up
CONTEXT = Context.new("bench")
AT = datetime(2026, 11, 22, tzinfo=UTC)

Row = tuple[str, int, Message]  # stream id, version, event
# Events, aggregates to snapshot, and a read that loads an aggregate (snapshot + tail) if the
# service has one: the others' reads are projection lookups, and projections are not seeded.
Seeded = tuple[list[Row], dict[str, Aggregate], str | None]


# --- histories made by each service's pure core -------------------------------------------


def registry_history(n: int) -> Seeded:
    """Issuance into a government account, then reserve 3 / transfer 2 / release 1, round robin."""
    registry, rows, versions = MemoryRegistry(), list[Row](), dict[str, int]()

    def run(command: Message) -> None:
        for event in registry.execute(command):
            stream = stream_of(event)
            versions[stream] = versions.get(stream, 0) + 1
            rows.append((stream, versions[stream], event))

    run(rpb.OpenAccount(account_id="TH-GOV", holder="Government of Thailand", jurisdiction="TH", type=rpb.GOVERNMENT))
    for b in range(8):
        run(rpb.OpenAccount(account_id=f"CH-{b}", holder=f"buyer {b}", jurisdiction="CH", type=rpb.HOLDING))
    attributes = rpb.UnitAttributes(standard=rpb.JCM, host_party="TH", project_id="TH-FS-1", vintage=2024)
    block = rpb.SerialBlock(namespace="JCM-TH", start=1, end=10**12, attributes=attributes)
    run(rpb.RecordIssuance(issuance_id="I-1", account_id="TH-GOV", block=block))
    run(cpb.ProposalScreened(proposal_id="I-1", account_id="TH-GOV", verdict=cpb.APPROVED))  # the log approves
    i = 0
    while len(rows) < n:
        i += 1
        reservation = f"r{i}"
        run(rpb.ReserveUnits(reservation_id=reservation, account_id="TH-GOV", quantity=3, selector=rpb.UnitSelector()))
        run(rpb.TransferUnits(transfer_id=f"t{i}", reservation_id=reservation, to_account_id=f"CH-{i % 8}", quantity=2))
        run(rpb.ReleaseReservation(reservation_id=reservation, quantity=1))
    aggregates: dict[str, Aggregate] = {a.stream_id: a for a in registry.accounts.values()}
    return rows[:n], aggregates, None  # its reads are projection lookups


def matching_history(n: int) -> Seeded:
    """Crossing limit orders on one book (price 10000 +- 20 ticks, 1-100 t)."""
    instrument = load_instruments()["JCM-TH-2024-NDC"]
    book, rows, rng, i = Book.empty(instrument.instrument_id), list[Row](), random.Random(7), 0
    while len(rows) < n:
        i += 1
        order = mpb.SubmitOrder(
            order_id=f"o{i}",
            instrument_id=instrument.instrument_id,
            broker_id="broker-a",
            account_id="TH-GOV" if i % 2 else "CH-0",
            side=mpb.SELL if i % 2 else mpb.BUY,
            price=10_000 + rng.randint(-20, 20),
            quantity=rng.randint(1, 100),
            client_order_id=f"c{i}",
        )
        events = book.submit(order, instrument)
        for event in events:
            book.mutate([event])
            rows.append((book.stream_id, book.version, event))
    return rows[:n], {book.stream_id: book}, f"/instruments/{instrument.instrument_id}/book"


def settlement_history(n: int) -> Seeded:
    """Trades started, approved and settled, each with its cash held, paid and received
    (the buyer funded once): what the live path records, stream by stream."""
    rows: list[Row] = []
    buyer, seller = CashAccount.of("CN-BUY", "CNY"), CashAccount.of("CN-SELL", "CNY")

    def record(aggregate: Aggregate, events: list[Message]) -> None:
        for event in events:
            aggregate.mutate([event])
            rows.append((aggregate.stream_id, aggregate.version, event))

    record(buyer, buyer.deposit("fund", 10**15, "bench"))
    i = 0
    while len(rows) < n:
        i += 1
        trade = mpb.TradeExecuted(
            trade_id=f"T:{i}:1", instrument_id="CCER-2025", price=8000, quantity=10, currency="CNY",
            buy_order_id=f"b{i}", sell_order_id=f"s{i}", buyer_account_id="CN-BUY", seller_account_id="CN-SELL",
            buyer_broker_id="broker-b", seller_broker_id="broker-a", aggressor=mpb.BUY, engine_sequence=i,
        )  # fmt: skip
        saga = TradeSettlement(f"settlement-{trade.trade_id}")
        approved = cpb.ScreeningDecision(request_id=trade.trade_id, trade_id=trade.trade_id, verdict=cpb.APPROVED)
        for step in ("opened", "screened", "delivered"):
            if step == "opened":
                steps = dvp.opened(saga, trade, buyer)
            elif step == "screened":
                steps = dvp.screened(saga, approved, buyer, seller)
            else:
                steps = dvp.delivered(saga, _transfer(trade), buyer, seller)
            record(saga, steps.settlement)
            record(buyer, steps.buyer)
            record(seller, steps.seller)
    return rows[:n], {}, None


def _transfer(trade: mpb.TradeExecuted) -> rpb.UnitsTransferred:
    return rpb.UnitsTransferred(
        transfer_id=trade.trade_id, reservation_id=trade.sell_order_id, from_account_id=trade.seller_account_id,
        to_account_id=trade.buyer_account_id, from_jurisdiction="CN", to_jurisdiction="CN", quantity=trade.quantity,
    )  # fmt: skip


def compliance_history(n: int) -> Seeded:
    """Observed account facts and screening decisions (each its own one-event stream)."""
    policy, facts, rows = Policy.load(), Facts(), list[Row]()
    i = 0
    while len(rows) < n:
        i += 1
        for account, party in ((f"CN-{i}", "CN"), (f"JP-{i}", "JP")):
            opened = rpb.AccountOpened(account_id=account, holder="h", jurisdiction=party, type=rpb.HOLDING)
            facts.apply(opened)
            rows.append((f"fact-{uuid.uuid4()}", 1, opened))
        request = cpb.ScreenTransfer(
            request_id=f"T:{i}:1", trade_id=f"T:{i}:1", reservation_id=f"s{i}",
            from_account_id=f"CN-{i}", to_account_id=f"JP-{i}", quantity=10,
        )  # fmt: skip
        rows.append((f"decision-{request.request_id}", 1, screen(request, facts, policy)))
    return rows[:n], {}, None


HISTORIES: dict[str, Callable[[int], Seeded]] = {
    "registry": registry_history,
    "matching": matching_history,
    "settlement": settlement_history,
    "compliance": compliance_history,
}


# --- storing a history as the live path does -----------------------------------------------


def records(rows: list[Row]) -> Iterator[tuple[str, int, uuid.UUID, str, bytes]]:
    for stream_id, version, event in rows:
        envelope = wrap(event, aggregate_id=stream_id, context=CONTEXT, occurred_at=AT, sequence=version)
        yield stream_id, version, uuid.UUID(envelope.event_id), envelope.type, envelope.SerializeToString()


async def store(dsn: str, service: str, seeded: Seeded) -> None:
    rows, aggregates, _ = seeded
    await migrate(dsn, service)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "events",
            records=records(rows),
            columns=["stream_id", "version", "event_id", "type", "envelope"],
            schema_name=service,
        )
        # The snapshot each aggregate would have at the end of this history: taken at its
        # last multiple of SNAPSHOT_EVERY, so a load folds the tail after it.
        for aggregate in aggregates.values():
            if aggregate.version >= SNAPSHOT_EVERY:
                at = aggregate.version - aggregate.version % SNAPSHOT_EVERY
                state = _state_at(rows, aggregate, at)
                await conn.execute(
                    f'INSERT INTO "{service}".snapshots (stream_id, version, schema_version, state) '
                    "VALUES ($1, $2, $3, $4)",
                    aggregate.stream_id,
                    at,
                    type(aggregate).SNAPSHOT_SCHEMA,
                    state,
                )
        await conn.execute(f'ANALYZE "{service}".events')
    finally:
        await conn.close()


def _state_at(rows: list[Row], aggregate: Aggregate, version: int) -> bytes:
    """The aggregate's snapshot bytes at `version`, folded from its own events."""
    replayed = type(aggregate)(aggregate.stream_id)
    replayed.mutate(e for s, v, e in rows if s == aggregate.stream_id and v <= version)
    return replayed.snapshot()


# --- timing ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_and_time(
    run_dir: Path, bootstrap: str, dsn: str, prefix: str, service: str, path: str | None
) -> tuple[float, float | None]:
    processes = ServiceProcesses(
        run_dir, bootstrap, dsn, prefix, {service: free_port()}, names=(service,),
        extra_env={"TONNE_SNAPSHOT_EVERY": str(SNAPSHOT_EVERY)},
    )  # fmt: skip
    began = time.monotonic()
    try:
        processes.start(deadline_s=600)
        ready = time.monotonic() - began
        if path is None:
            return ready, None
        token = DevIssuer(Path(os.environ["TONNE_AUTH_DEV_DIR"])).mint("bench-operator", ["operator"])
        read_began = time.monotonic()
        response = httpx.get(processes.urls[service] + path, headers={"authorization": f"Bearer {token}"}, timeout=600)
        first_read = time.monotonic() - read_began
        if response.status_code != 200:
            raise RuntimeError(f"{service} {path}: {response.status_code} {response.text[:300]}")
        return ready, first_read
    finally:
        processes.stop()


def old_registry_fold(sizes: list[int], timeout_s: float) -> dict[str, float | str]:
    """The old start-up path: the pure registry ledger of OLD_COMMIT folding its history."""
    root = Path(__file__).resolve().parent.parent
    worktree = Path(tempfile.mkdtemp(prefix="tonne-old-"))
    subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(worktree), OLD_COMMIT], check=True,
                   capture_output=True)  # fmt: skip
    results: dict[str, float | str] = {}
    try:
        for n in sizes:
            try:
                done = subprocess.run(
                    [sys.executable, str(Path(__file__).parent / "old_fold.py"), str(n)],
                    env={**os.environ, "PYTHONPATH": str(worktree)}, capture_output=True, text=True,
                    timeout=timeout_s, check=True,
                )  # fmt: skip
                results[str(n)] = round(float(done.stdout.strip()), 2)
            except subprocess.TimeoutExpired:
                results[str(n)] = f"> {timeout_s:.0f} (history building plus fold did not finish)"
    finally:
        subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(worktree)], check=False)
        shutil.rmtree(worktree, ignore_errors=True)
    return results


@contextlib.contextmanager
def infrastructure() -> Iterator[tuple[str, str]]:
    """Kafka and PostgreSQL: from the environment, else started here and stopped after."""
    with contextlib.ExitStack() as stack:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            home = Path(tempfile.mkdtemp(prefix="tonne-bench-kafka-"))
            broker = KafkaBroker(home, port=free_port(), controller_port=free_port())
            KafkaBroker.fetch()
            broker.start()
            stack.callback(shutil.rmtree, home, True)
            stack.callback(broker.stop)
            bootstrap = broker.bootstrap
        dsn = os.environ.get("DATABASE_URL")
        if not dsn:
            root = Path(tempfile.mkdtemp(prefix="tonne-bench-pg-"))
            dsn = start_postgres(root / "pg")
            stack.callback(shutil.rmtree, root, True)
            stack.callback(stop_postgres, root / "pg")
        yield bootstrap, dsn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--services", default=",".join(HISTORIES))
    parser.add_argument("--old-sizes", default="2000,8000,16000")
    parser.add_argument("--old-timeout", type=float, default=300)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    os.environ.setdefault("TONNE_AUTH_DEV_DIR", tempfile.mkdtemp(prefix="tonne-bench-auth-"))
    ready: dict[str, dict[str, float]] = {}
    first_read: dict[str, dict[str, float]] = {}  # ms, where a read loads an aggregate
    run_dir = Path(tempfile.mkdtemp(prefix="tonne-bench-run-"))
    with infrastructure() as (bootstrap, admin_dsn):
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        for service in args.services.split(","):
            for n in sizes:
                made = time.monotonic()
                seeded = HISTORIES[service](n)
                name = f"recovery_{service}_{n}_{uuid.uuid4().hex[:6]}"
                dsn = create_database(admin_dsn, name)
                try:
                    run_sync(prepare(bootstrap, dsn, prefix))
                    run_sync(store(dsn, service, seeded))
                    stored = time.monotonic() - made
                    seconds, read = start_and_time(run_dir, bootstrap, dsn, prefix, service, seeded[2])
                finally:
                    drop_database(admin_dsn, name)
                ready.setdefault(service, {})[str(n)] = round(seconds, 2)
                line = f"{service:<11} {n:>9,} events (made and stored in {stored:5.1f} s): ready in {seconds:5.2f} s"
                if read is not None:
                    first_read.setdefault(service, {})[str(n)] = round(read * 1000, 1)
                    line += f", first book read (snapshot + tail) {read * 1000:7.1f} ms"
                print(line, flush=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    old = old_registry_fold([int(s) for s in args.old_sizes.split(",")], args.old_timeout)
    print(f"old path ({OLD_COMMIT}), registry fold of the whole history: {old}")
    figures = {**ready, "first_read_ms": first_read, "old_registry_fold_s": old, "snapshot_every": SNAPSHOT_EVERY}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
