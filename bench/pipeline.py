"""Pipeline: orders, trades and settlements per second end to end, on the path users hit.

One run, on its own Kafka and PostgreSQL (bench/recovery.py's `infrastructure()`: from
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL when set, else started here):

1. the floor: raw aiokafka produce -> consume on the same broker (msgs/s flat out; p50/p99
   latency flat out and at a low paced rate);
2. for 1 and then 2 instances per service (`deploy.stack.ServiceProcesses`, one consumer
   group per service, fresh database and topics each): accounts, issuance and mandates over
   the national-registry channel as the tests set them up (tests/support.py `Venue`), then
   - sustained load: several HTTP clients post crossing orders (`POST /orders`, SELL then
     BUY, quantity 1, one price per instrument) as fast as they are answered, for a bounded
     time; 429 answers are counted and their Retry-After honoured. Measured from the
     topics: orders reaching the journal (OrderAccepted on matching.events) and trades
     settling (SettlementCompleted on settlement.events) per second, and the backlog left
     when the load stops;
   - trade -> settled p50/p99 (envelope occurred_at of TradeExecuted vs SettlementCompleted)
     at 10, 100 and 1,000 trades/s offered (paced, open loop);
   - one hop at low load: TradeExecuted decided by matching -> SettlementStarted decided by
     settlement (occurred_at to occurred_at), and the transport part of it (TradeExecuted
     published -> SettlementStarted decided);
   - where a consumer's time goes: tonne_batch_seconds and tonne_records_total per
     instance from /metrics (operator token); with --py-spy, a py-spy profile of every
     instance during the sustained load (top functions by samples).

    .venv/bin/python bench/pipeline.py [--instances 1,2] [--seconds 20] [--clients 16] [--py-spy PATH]

Prints its figures and writes bench/results/pipeline.json (top-level keys raw_msgs_per_s,
orders_per_s, settled_per_s, settle_p99_ms_at_100, hop_p99_ms, instances, ...).
Per-caller rate limits are raised for the run (TONNE_RATE_PER_SECOND): two brokers post
everything here, and the limiter is not the path measured.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from recovery import free_port, infrastructure  # bench/recovery.py, beside this script

from deploy.kafka_broker import REPO_ROOT, run_sync
from deploy.kafka_security import KafkaSecurity
from deploy.postgres import create_database, drop_database
from deploy.stack import ServiceProcesses, instance_names, prepare
from services.common import topics
from services.common.auth import DevIssuer
from services.common.envelope import unwrap
from services.common.kafka import KafkaAccess, idempotent_producer
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb

# The venue's users as the tests drive them (tests/support.py), from the repository's root.
sys.path.insert(0, str(REPO_ROOT))
from tests.support import Venue, eventually

RESULTS = Path(__file__).parent / "results" / "pipeline.json"
# Domestic Chinese instruments: they settle without an Article 6 authorization, and their
# keys land on two different partitions of matching.orders (0 and 2 of 3).
INSTRUMENTS = {"CCER-2025": rpb.CCER, "PHCER-SZ-2025": rpb.PHCER}
PRICE = 1000
UNITS = 1_000_000  # issued per seller and instrument: far more than a run sells
SELLERS = BUYERS = 8
SERVICE_ENV = {"TONNE_RATE_PER_SECOND": "1000000", "TONNE_RATE_BURST": "1000000"}
RATES = (10, 100, 1000)  # trades/s offered for the latency sweep
SWEEP_SECONDS = {10: 10.0, 100: 10.0, 1000: 3.0}
DRAIN_S = 120.0  # how long the journal may take to catch up after a load, at most
GOALS = {"orders_per_s": 2000, "settled_per_s": 1000, "settle_p99_ms_at_100": 100, "hop_p99_ms": 20}


# --- small statistics ---------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of `values`, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def latency(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50_ms": ms(pct(values, 0.5)),
        "p99_ms": ms(pct(values, 0.99)),
        "max_ms": ms(pct(values, 1.0)),
    }


# --- the floor: raw aiokafka on the same broker --------------------------------------------


async def raw_floor(bootstrap: str, prefix: str, count: int = 50_000, size: int = 300) -> dict[str, Any]:
    """Produce -> consume on one 3-partition topic with the services' producer settings."""
    topic = f"{prefix}raw"
    kafka = KafkaAccess.from_env(bootstrap)
    admin = AIOKafkaAdminClient(**kafka.options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    producer = idempotent_producer(kafka, "bench-raw")
    consumer = AIOKafkaConsumer(**kafka.options(), enable_auto_commit=False, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(3)])
    padding = b"x" * (size - 8)

    async def receive(n: int) -> list[float]:
        seen: list[float] = []
        while len(seen) < n:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                now = time.time_ns()
                seen.extend((now - struct.unpack_from(">q", r.value or b"")[0]) / 1e9 for r in records)
        return seen

    try:
        # Flat out: everything sent without waiting, received as it comes.
        began = time.monotonic()
        receiving = asyncio.create_task(receive(count))
        sends = [
            await producer.send(topic, struct.pack(">q", time.time_ns()) + padding, key=str(i % 64).encode())
            for i in range(count)
        ]
        await asyncio.gather(*sends)
        loaded = await receiving
        flat_out = time.monotonic() - began
        # Paced at 200 msgs/s: the latency of one hop when nothing queues.
        paced: list[float] = []
        for i in range(600):
            await producer.send_and_wait(topic, struct.pack(">q", time.time_ns()) + padding, key=str(i).encode())
            paced.extend(await receive(1))
            await asyncio.sleep(0.005)  # pacing of the load, not a readiness wait
    finally:
        await consumer.stop()
        await producer.stop()
    return {
        "msgs_per_s": rate(count, flat_out),
        "messages": count,
        "bytes": size,
        "flat_out": latency(loaded),
        "paced_200_per_s": latency(paced),
    }


# --- the stack ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    """What `Venue` needs of a stack, for N instances per service."""

    urls: dict[str, str]
    bootstrap: str
    topic_prefix: str
    processes: ServiceProcesses
    instances: int
    database: str
    dsn: str

    def instance_urls(self, service: str) -> list[str]:
        return [url for name, url in self.urls.items() if name.split("-")[0] == service]


@contextlib.contextmanager
def services(bootstrap: str, admin_dsn: str, instances: int, run_dir: Path) -> Iterator[Stack]:
    """Fresh database and topics; N processes of each service in one consumer group."""
    name = f"pipeline_{instances}_{uuid.uuid4().hex[:6]}"
    dsn = create_database(admin_dsn, name)
    prefix = f"pipe{uuid.uuid4().hex[:6]}."
    names = instance_names(instances)
    # A SASL broker's super user may come from TONNE_KAFKA_*; bench/recovery.py's own is PLAINTEXT.
    security = KafkaSecurity.from_env(bootstrap)
    processes = ServiceProcesses(
        run_dir,
        bootstrap,
        dsn,
        prefix,
        {n: free_port() for n in names},
        names=names,
        extra_env=SERVICE_ENV,
        security=security,
    )
    try:
        run_sync(prepare(bootstrap, dsn, prefix, security))
        processes.start(deadline_s=180)
        yield Stack(processes.urls, bootstrap, prefix, processes, instances, name, dsn)
    finally:
        processes.stop()
        with contextlib.suppress(Exception):
            drop_database(admin_dsn, name)


@dataclass(frozen=True)
class Market:
    sellers: list[str]
    buyers: list[str]


async def open_market(venue: Venue, run: str) -> Market:
    """Sellers holding both instruments' units, buyers, and both brokers' mandates: all
    through the national-registry channel, as tests/support.py's Venue does it."""
    sellers = [f"CN-S{i}-{run}" for i in range(SELLERS)]
    buyers = [f"CN-B{i}-{run}" for i in range(BUYERS)]
    for account in sellers:
        await venue.open_national_account("CN", account, f"seller {account}")
        for instrument, standard in INSTRUMENTS.items():
            attributes = rpb.UnitAttributes(
                standard=standard, host_party="CN", project_id=f"P-{instrument}", methodology="M", vintage=2025
            )
            block = rpb.SerialBlock(namespace=f"{instrument}-{account}", start=1, end=UNITS, attributes=attributes)
            await venue.issue("CN", account, f"I-{instrument}-{account}", block)
    for account in buyers:
        await venue.open_national_account("CN", account, f"buyer {account}")
    for account in sellers:
        await venue.wait_held(account, UNITS * len(INSTRUMENTS))
        await venue.grant_mandate("CN", account, "broker-a")
    for account in buyers:
        await venue.grant_mandate("CN", account, "broker-b")
        await venue.fund(account, "CNY", 10**15)  # buys are paid from deposited cash
    return Market(sellers, buyers)


# --- the journal, read from the topics -----------------------------------------------------


@dataclass(frozen=True)
class Trade:
    occurred: float  # TradeExecuted decided (envelope occurred_at), epoch seconds
    published: float  # its record's timestamp: when the relay sent it
    buy_order_id: str
    sell_order_id: str


@dataclass
class Journal:
    """matching.events and settlement.events as a reader sees them, indexed."""

    bootstrap: str
    prefix: str
    accepted: dict[str, float] = field(default_factory=dict)  # order id -> OrderAccepted occurred_at
    accepted_events: collections.Counter[str] = field(default_factory=collections.Counter)  # distinct event ids
    trades: dict[str, Trade] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)  # trade id -> SettlementStarted occurred_at
    settled: dict[str, tuple[float, float]] = field(default_factory=dict)  # trade id -> (occurred, published)
    failed: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **KafkaAccess.from_env(self.bootstrap).options(), enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await self._consumer.start()
        partitions = [
            TopicPartition(self.prefix + topic, p)
            for topic in (topics.MATCHING_EVENTS, topics.SETTLEMENT_EVENTS)
            for p in range(topics.partition_counts()[topic])
        ]
        self._consumer.assign(partitions)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def catch_up(self) -> None:
        """Read everything published so far."""
        consumer = self._consumer
        assert consumer is not None
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for record in records:
                    self._index(record.value, record.timestamp / 1000)

    def _index(self, value: bytes | None, published: float) -> None:
        envelope, payload = unwrap(value)
        if envelope.event_id in self._seen:
            return  # a republished record (the outbox relays at least once)
        self._seen.add(envelope.event_id)
        occurred = envelope.occurred_at.ToDatetime(tzinfo=UTC).timestamp()
        match payload:
            case mpb.OrderAccepted():
                self.accepted.setdefault(payload.order.order_id, occurred)
                self.accepted_events[payload.order.order_id] += 1
            case mpb.OrderRejected():
                self.rejected[payload.order_id] = payload.code
            case mpb.TradeExecuted():
                self.trades[payload.trade_id] = Trade(occurred, published, payload.buy_order_id, payload.sell_order_id)
            case spb.SettlementStarted():
                self.started[payload.trade_id] = occurred
            case spb.SettlementCompleted():
                self.settled[payload.trade_id] = (occurred, published)
            case spb.SettlementFailed():
                self.failed[payload.trade_id] = f"{payload.code}: {payload.reason}"[:160]

    def trades_of(self, orders: set[str]) -> dict[str, Trade]:
        return {tid: t for tid, t in self.trades.items() if t.buy_order_id in orders}

    async def drain(self, orders: set[str], pairs: int, deadline_s: float = DRAIN_S) -> bool:
        """Wait until every order is sequenced and every pair traded and settled (or failed)."""

        async def done() -> bool:
            await self.catch_up()
            if any(o not in self.accepted and o not in self.rejected for o in orders):
                return False
            trades = self.trades_of(orders)
            return len(trades) >= pairs and all(t in self.settled or t in self.failed for t in trades)

        try:
            await eventually(done, "the journal to catch up with the load", timeout=deadline_s)
        except AssertionError:
            return False
        return True


# --- load ------------------------------------------------------------------------------------


@dataclass
class Tally:
    orders: dict[str, float] = field(default_factory=dict)  # order id -> accepted by intake (epoch s)
    pairs: int = 0
    refused_429: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    http_seconds: list[float] = field(default_factory=list)


class Intake:
    """POST /orders as brokers do, over the matching instances' URLs in turn."""

    def __init__(self, stack: Stack, venue: Venue, market: Market, run: str, connections: int) -> None:
        self.urls = stack.instance_urls("matching")
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.clients = [httpx.AsyncClient(base_url=url, timeout=60, limits=limits) for url in self.urls]
        self.venue, self.market, self.run = venue, market, run
        self._n = 0

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def place(self, tally: Tally, client: httpx.AsyncClient, body: dict[str, Any], headers: Any) -> str | None:
        while True:
            began = time.monotonic()
            try:
                response = await client.post("/orders", json=body, headers=headers)
            except httpx.TransportError as exc:
                # The same client order id again is safe: intake answers with the first order.
                tally.errors[f"retried {type(exc).__name__}"] += 1
                continue
            tally.http_seconds.append(time.monotonic() - began)
            if response.status_code == 429:
                tally.refused_429 += 1
                # Intake said when to come back: the backpressure the bench must honour.
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                continue
            if response.status_code != 202:
                tally.errors[f"{response.status_code} {response.json().get('code', '')}"] += 1
                return None
            order_id = str(response.json()["order_id"])
            tally.orders[order_id] = time.time()
            return order_id

    async def pair(self, tally: Tally) -> None:
        """A SELL and a BUY of one tonne at one price: they cross, one trade."""
        n = self._n
        self._n += 1
        instrument = list(INSTRUMENTS)[n % len(INSTRUMENTS)]
        client = self.clients[n % len(self.clients)]
        common = {"instrument_id": instrument, "price": PRICE, "quantity": 1}
        sell = common | {
            "side": "SELL",
            "account_id": self.market.sellers[n % SELLERS],
            "client_order_id": f"{self.run}-{n}-s",
        }
        buy = common | {
            "side": "BUY",
            "account_id": self.market.buyers[n % BUYERS],
            "client_order_id": f"{self.run}-{n}-b",
        }
        if await self.place(tally, client, sell, self.venue.seller) is None:
            return
        if await self.place(tally, client, buy, self.venue.buyer) is not None:
            tally.pairs += 1

    async def closed_loop(self, clients: int, seconds: float, max_pairs: int) -> tuple[Tally, float, float]:
        """`clients` brokers' connections posting pairs back to back until time or count is up."""
        tally = Tally()
        began, stop_at = time.time(), time.monotonic() + seconds

        async def client_loop() -> None:
            while time.monotonic() < stop_at and self._n - start_n < max_pairs:
                await self.pair(tally)

        start_n = self._n
        await asyncio.gather(*(client_loop() for _ in range(clients)))
        return tally, began, time.time()

    async def paced(self, per_second: float, seconds: float, in_flight: int = 400) -> tuple[Tally, float, float]:
        """Open loop: a pair every 1/`per_second` s, at most `in_flight` pairs outstanding."""
        tally, slots = Tally(), asyncio.Semaphore(in_flight)
        began = time.monotonic()
        wall = time.time()
        tasks: list[asyncio.Task[None]] = []

        async def one() -> None:
            try:
                await self.pair(tally)
            finally:
                slots.release()

        for i in range(int(per_second * seconds)):
            if time.monotonic() - began >= seconds:
                break  # the offered load is bounded in time: what could not be issued was not offered
            delay = began + i / per_second - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule of the offered load
            await slots.acquire()
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        return tally, wall, time.time()


# --- what the consumers spent their time on ---------------------------------------------------

METRIC = re.compile(r"^(tonne_batch_seconds_(?:sum|count)|tonne_records_total)\{([^}]*)\} ([0-9.e+-]+)$")


async def scrape(stack: Stack, venue: Venue) -> dict[str, dict[str, float]]:
    """Per instance: batches, seconds in batches and records applied, from /metrics."""
    found: dict[str, dict[str, float]] = {}
    for name, url in stack.urls.items():
        response = await venue.client.get(f"{url}/metrics", headers=venue.operator)
        figures = found.setdefault(name, collections.defaultdict(float))
        for line in response.text.splitlines():
            if (match := METRIC.match(line)) is None:
                continue
            metric, labels, value = match.groups()
            if metric == "tonne_records_total":
                outcome = re.search(r'outcome="([^"]+)"', labels)
                figures[f"records_{outcome.group(1) if outcome else '?'}"] += float(value)
            else:
                figures[
                    metric.removeprefix("tonne_batch_seconds_")
                    .replace("sum", "batch_seconds")
                    .replace("count", "batches")
                ] += float(value)
    return found


def batch_figures(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], trades: int, seconds: float
) -> dict[str, Any]:
    """Per instance during a load: batches, mean records per batch, mean batch time."""
    out: dict[str, Any] = {}
    for name, figures in after.items():
        base = before.get(name, {})
        delta = {k: v - base.get(k, 0.0) for k, v in figures.items()}
        batches = delta.get("batches", 0.0)
        records = delta.get("records_applied", 0.0) + delta.get("records_duplicate", 0.0)
        out[name] = {
            "batches": int(batches),
            "records": int(records),
            "records_per_batch": round(records / batches, 1) if batches else None,
            "mean_batch_ms": round(delta.get("batch_seconds", 0.0) / batches * 1000, 2) if batches else None,
            "busy_s": round(delta.get("batch_seconds", 0.0), 2),
            # Of the time from before the load until the journal caught up after it.
            "busy_share": round(delta.get("batch_seconds", 0.0) / seconds, 2),
            "dead_lettered": int(delta.get("records_dead_lettered", 0.0)),
            "records_per_trade": round(records / trades, 1) if trades else None,
        }
    return out


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU seconds (user + system) used so far: by each service instance, by this bench, by
    the Kafka broker on the stack's port, by PostgreSQL backends serving the stack's
    database, by every other process on the box; and the machine's busy and total seconds
    over all cores (/proc/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    by_pid = {pid: name for name, pid in stack.processes.pids.items()}
    port = stack.bootstrap.rsplit(":", 1)[1]
    found: dict[str, float] = collections.defaultdict(float)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            used = (int(fields[11]) + int(fields[12])) / tick
            pid = int(entry.name)
            if pid in by_pid:
                found[by_pid[pid]] += used
                continue
            if pid == os.getpid():
                found["bench"] += used
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "kafka.Kafka" in command and f":{port}," in Path(command.split()[-1]).read_text():
                found["kafka"] += used
            elif command.startswith("postgres:") and stack.database in command:
                found["postgres"] += used
            else:
                found["other_processes"] += used
    cpu = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = cpu[3] + cpu[4]
    found["machine_busy"], found["machine_total"] = (sum(cpu) - idle) / tick, sum(cpu) / tick
    return dict(found)


def cpu_shares(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores each part kept busy during the load (a process that exited before the second
    reading is missed); `machine` is the share of all cores in use."""
    shares = {k: round((v - before.get(k, 0.0)) / seconds, 2) for k, v in after.items() if not k.startswith("machine")}
    total = after["machine_total"] - before["machine_total"]
    shares["machine"] = round((after["machine_busy"] - before["machine_busy"]) / total, 2) if total else 0.0
    return shares


async def connections(dsn: str, database: str, until: asyncio.Event) -> dict[str, dict[str, float]]:
    """Mean PostgreSQL connections per service role and state while the load runs (every
    0.25 s): a pool whose connections are all busy queues its callers."""
    conn = await asyncpg.connect(dsn)
    seen: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
    samples = 0
    try:
        while not until.is_set():
            rows = await conn.fetch(
                "SELECT usename, coalesce(state, '?') AS state, count(*) AS n FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid() GROUP BY 1, 2",
                database,
            )
            samples += 1
            for row in rows:
                seen[str(row["usename"])][str(row["state"])] += row["n"]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), 0.25)  # the sampling interval
    finally:
        await conn.close()
    return {role: {state: round(n / samples, 2) for state, n in states.items()} for role, states in seen.items()}


def profile(py_spy: str, stack: Stack, seconds: float, out_dir: Path) -> list[subprocess.Popen[bytes]]:
    """Start py-spy on every instance for `seconds` (collapsed stacks, one file each)."""
    return [
        subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "100",
                "--format",
                "raw",
                "--output",
                str(out_dir / f"{name}.txt"),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in stack.processes.pids.items()
    ]


FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*):\d+\)$")


def where(file: str) -> str:
    """A frame's file (as py-spy names it, relative to its sys.path entry) as a package, or
    the project's module."""
    return file if file.startswith("services/") else file.split("/", 1)[0].removesuffix(".py")


# Frames where a thread waits rather than runs (py-spy samples them too here).
IDLE = re.compile(r"^(\w+\.)?(select|wait) \((selectors|threading)\.py")


def hot_spots(path: Path, count: int = 10) -> dict[str, Any]:
    """Shares of one process's wall-clock samples: waiting (the event loop in select, idle
    worker threads), else the package running (the leaf frame); and the project's functions
    inclusive of what they run (an awaiting coroutine is not on the stack: only its running
    parts count)."""
    own: collections.Counter[str] = collections.Counter()
    project: collections.Counter[str] = collections.Counter()
    total = 0
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            stack, _, samples = line.rpartition(" ")
            frames = [m for f in stack.split(";") if (m := FRAME.match(f.strip()))]
            if not samples.isdigit() or not frames:
                continue
            n, total = int(samples), total + int(samples)
            leaf = frames[-1]
            if IDLE.match(f"{leaf['function']} ({leaf['file']}"):
                own["(waiting)"] += n
            elif leaf["file"] == "asyncio/selector_events.py":
                own["(socket send/receive)"] += n
            else:
                own[where(leaf["file"])] += n
            # What runs inside the event loop: the frames below its last callback.
            start = max((i for i, m in enumerate(frames) if m["function"] == "Handle._run"), default=len(frames))
            for name in {f"{m['function']} ({m['file']})" for m in frames[start:] if m["file"].startswith("services/")}:
                project[name] += n

    def shares(counter: collections.Counter[str]) -> dict[str, float]:
        return {k: round(v / total, 3) for k, v in counter.most_common(count)} if total else {}

    return {"samples": total, "own": shares(own), "project_inclusive": shares(project)}


# --- one instance count ---------------------------------------------------------------------


def settle_latencies(journal: Journal, trades: dict[str, Trade]) -> dict[str, Any]:
    decided = [journal.settled[t][0] - trade.occurred for t, trade in trades.items() if t in journal.settled]
    published = [journal.settled[t][1] - trade.occurred for t, trade in trades.items() if t in journal.settled]
    return {
        "trade_to_settled": latency(decided),
        "trade_to_settled_published": latency(published),
        "unsettled": len([t for t in trades if t not in journal.settled and t not in journal.failed]),
        "failed": dict(collections.Counter(journal.failed[t] for t in trades if t in journal.failed)),
    }


def hop_latencies(journal: Journal, trades: dict[str, Trade]) -> dict[str, Any]:
    decided = [journal.started[t] - trade.occurred for t, trade in trades.items() if t in journal.started]
    transport = [journal.started[t] - trade.published for t, trade in trades.items() if t in journal.started]
    return {"decided_to_decided": latency(decided), "published_to_decided": latency(transport)}


async def sustained(
    stack: Stack, venue: Venue, journal: Journal, intake: Intake, args: argparse.Namespace
) -> dict[str, Any]:
    before, scraped = await scrape(stack, venue), time.monotonic()
    spies: list[subprocess.Popen[bytes]] = []
    spy_dir = stack.processes.run_dir / f"py-spy-{stack.instances}"  # kept with the service logs
    spy_dir.mkdir(parents=True, exist_ok=True)
    if args.py_spy:
        spies = profile(args.py_spy, stack, args.seconds, spy_dir)
    cpu_before = cpu_seconds(stack)
    stop_sampling = asyncio.Event()
    sampling = asyncio.create_task(connections(stack.dsn, stack.database, stop_sampling))
    tally, began, ended = await intake.closed_loop(args.clients, args.seconds, args.max_pairs)
    stop_sampling.set()
    pool_use = await sampling
    load_s = ended - began
    cpu = cpu_shares(cpu_before, cpu_seconds(stack), load_s)
    orders = set(tally.orders)
    await journal.catch_up()
    sequenced_in_load = sum(1 for o in orders if journal.accepted.get(o, math.inf) <= ended)
    drained = await journal.drain(orders, tally.pairs)
    after, scraped = await scrape(stack, venue), time.monotonic() - scraped
    for spy in spies:
        spy.wait()
    trades = journal.trades_of(orders)
    sequenced = [journal.accepted[o] for o in orders if o in journal.accepted]
    settled = [journal.settled[t][0] for t in trades if t in journal.settled]
    last_sequenced = max(sequenced, default=began)
    last_settled = max(settled, default=began)
    result: dict[str, Any] = {
        "clients": args.clients,
        "load_s": round(load_s, 1),
        "posted": len(orders),
        "posted_per_s": rate(len(orders), load_s),
        "http": latency(tally.http_seconds),
        "refused_429": tally.refused_429,
        "errors": dict(tally.errors),
        # Orders in the journal per second, from the first post to the last order sequenced.
        "sequenced": len(sequenced),
        "sequenced_per_s": rate(len(sequenced), last_sequenced - began),
        "sequenced_during_load_per_s": rate(sequenced_in_load, load_s),
        "backlog_at_end_of_load": len(orders) - sequenced_in_load,
        "journal_caught_up_s_after_load": round(max(0.0, last_sequenced - ended), 2),
        "trades": len(trades),
        "settled": len(settled),
        "settled_per_s": rate(len(settled), last_settled - began),
        "settled_during_load_per_s": rate(sum(1 for s in settled if s <= ended), load_s),
        "settled_s_after_load": round(max(0.0, last_settled - ended), 2),
        "drained": drained,
        "duplicates_in_journal": sum(1 for n in journal.accepted_events.values() if n > 1),
        **settle_latencies(journal, trades),
        "consumers": batch_figures(before, after, len(trades), scraped),
        "cores_busy": cpu,
        # CPU the stack (services, Kafka, PostgreSQL; not this bench) spends per order sequenced.
        "stack_cpu_ms_per_order": round(
            sum(v for k, v in cpu.items() if k not in ("bench", "other_processes", "machine"))
            * 1000
            / max(1e-9, sequenced_in_load / load_s),
            1,
        ),
        "postgres_connections": pool_use,
    }
    if args.py_spy:
        result["profile"] = {name: hot_spots(spy_dir / f"{name}.txt") for name in stack.processes.pids}
    return result


async def sweep(journal: Journal, intake: Intake, per_second: int) -> dict[str, Any]:
    tally, began, ended = await intake.paced(per_second, SWEEP_SECONDS[per_second])
    orders = set(tally.orders)
    drained = await journal.drain(orders, tally.pairs)
    trades = journal.trades_of(orders)
    return {
        "offered_trades_per_s": per_second,
        "achieved_pairs_per_s": rate(tally.pairs, ended - began),
        "pairs": tally.pairs,
        "refused_429": tally.refused_429,
        "http": latency(tally.http_seconds),
        "drained": drained,
        **settle_latencies(journal, trades),
        **hop_latencies(journal, trades),
    }


async def measure(stack: Stack, issuer: DevIssuer, args: argparse.Namespace) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    journal = Journal(stack.bootstrap, stack.topic_prefix)
    await journal.start()
    async with httpx.AsyncClient(timeout=60) as client:
        venue = Venue(stack, client, issuer)
        market = await open_market(venue, run)
        intake = Intake(stack, venue, market, run, connections=max(args.clients, 64))
        try:
            warm, _, _ = await intake.closed_loop(4, 30, 50)  # aggregates loaded, connections open
            await journal.drain(set(warm.orders), warm.pairs)
            figures: dict[str, Any] = {"sustained": await sustained(stack, venue, journal, intake, args)}
            print_sustained(stack.instances, figures["sustained"])
            if stack.instances in args.sweep_instances:
                figures["latency"] = {}
                for per_second in RATES:
                    figures["latency"][str(per_second)] = done = await sweep(journal, intake, per_second)
                    print_sweep(stack.instances, done)
        finally:
            await intake.close()
            await journal.stop()
    return figures


# --- reporting -----------------------------------------------------------------------------


def print_sustained(instances: int, s: dict[str, Any]) -> None:
    http, settle = s["http"], s["trade_to_settled"]
    lines = [
        f"[{instances} instance(s)] posted {s['posted']} orders in {s['load_s']} s ({s['posted_per_s']}/s, "
        f"HTTP p50 {http['p50_ms']} ms p99 {http['p99_ms']} ms, 429s {s['refused_429']}, errors {s['errors']})",
        f"    sequenced {s['sequenced']} at {s['sequenced_per_s']}/s (during the load "
        f"{s['sequenced_during_load_per_s']}/s, backlog at its end {s['backlog_at_end_of_load']}, "
        f"caught up {s['journal_caught_up_s_after_load']} s after)",
        f"    settled {s['settled']}/{s['trades']} trades at {s['settled_per_s']}/s (during the load "
        f"{s['settled_during_load_per_s']}/s, last {s['settled_s_after_load']} s after it), failed {s['failed']}; "
        f"trade->settled p50 {settle['p50_ms']} ms p99 {settle['p99_ms']} ms",
    ]
    for name, c in sorted(s["consumers"].items()):
        lines.append(
            f"    {name:<13} {c['batches']:>6} batches, {c['records_per_batch']} records/batch, "
            f"{c['mean_batch_ms']} ms/batch, busy {c['busy_share']:.0%} of the time, "
            f"{c['records_per_trade']} records/trade"
        )
    lines.append(f"    cores busy during the load: {s['cores_busy']}; {s['stack_cpu_ms_per_order']} ms CPU per order")
    lines.append(f"    mean PostgreSQL connections by role and state: {s['postgres_connections']}")
    for name, spots in sorted(s.get("profile", {}).items()):
        for kind in ("own", "project_inclusive"):
            top = "; ".join(f"{f} {share:.0%}" for f, share in list(spots[kind].items())[:8])
            lines.append(f"    py-spy {name} {kind}: {top}")
    print("\n".join(lines), flush=True)


def print_sweep(instances: int, s: dict[str, Any]) -> None:
    t, h = s["trade_to_settled"], s["decided_to_decided"]
    print(
        f"[{instances} instance(s)] offered {s['offered_trades_per_s']} trades/s "
        f"(achieved {s['achieved_pairs_per_s']}/s, {s['pairs']} pairs, 429s {s['refused_429']}): "
        f"trade->settled p50 {t['p50_ms']} ms p99 {t['p99_ms']} ms; hop trade->settlement started "
        f"p50 {h['p50_ms']} ms p99 {h['p99_ms']} ms; unsettled {s['unsettled']}, failed {s['failed']}",
        flush=True,
    )


def summary(raw: dict[str, Any], sections: dict[str, dict[str, Any]], wall_s: float) -> dict[str, Any]:
    best = max(sections, key=lambda n: sections[n]["sustained"]["sequenced_per_s"])
    best_settled = max(sections, key=lambda n: sections[n]["sustained"]["settled_per_s"])
    swept = next((n for n in sections if "latency" in sections[n]), None)
    at_100 = sections[swept]["latency"]["100"] if swept else None
    at_10 = sections[swept]["latency"]["10"] if swept else None
    figures = {
        "raw_msgs_per_s": raw["msgs_per_s"],
        "raw_p50_ms": raw["paced_200_per_s"]["p50_ms"],
        "raw_p99_ms": raw["paced_200_per_s"]["p99_ms"],
        "raw_flat_out_p99_ms": raw["flat_out"]["p99_ms"],
        "orders_per_s": sections[best]["sustained"]["sequenced_per_s"],
        "orders_per_s_instances": int(best),
        "posted_per_s": sections[best]["sustained"]["posted_per_s"],
        "settled_per_s": sections[best_settled]["sustained"]["settled_per_s"],
        "settled_per_s_instances": int(best_settled),
        "settle_p50_ms_at_100": at_100["trade_to_settled"]["p50_ms"] if at_100 else None,
        "settle_p99_ms_at_100": at_100["trade_to_settled"]["p99_ms"] if at_100 else None,
        "hop_p50_ms": at_10["decided_to_decided"]["p50_ms"] if at_10 else None,
        "hop_p99_ms": at_10["decided_to_decided"]["p99_ms"] if at_10 else None,
        "hop_transport_p99_ms": at_10["published_to_decided"]["p99_ms"] if at_10 else None,
    }
    figures["ratios_to_raw"] = {
        "orders_per_s": round(figures["orders_per_s"] / raw["msgs_per_s"], 4),
        "settled_per_s": round(figures["settled_per_s"] / raw["msgs_per_s"], 4),
        "hop_p99": round(figures["hop_p99_ms"] / figures["raw_p99_ms"], 1) if figures["hop_p99_ms"] else None,
        "settle_p99_at_100": round(figures["settle_p99_ms_at_100"] / figures["raw_p99_ms"], 1)
        if figures["settle_p99_ms_at_100"]
        else None,
    }
    figures["goals_met"] = {
        "orders_per_s": figures["orders_per_s"] >= GOALS["orders_per_s"],
        "settled_per_s": figures["settled_per_s"] >= GOALS["settled_per_s"],
        "settle_p99_ms_at_100": (figures["settle_p99_ms_at_100"] or math.inf) <= GOALS["settle_p99_ms_at_100"],
        "hop_p99_ms": (figures["hop_p99_ms"] or math.inf) <= GOALS["hop_p99_ms"],
    }
    figures["goals"] = GOALS
    figures["instances"] = sections
    figures["raw"] = raw
    figures["cpus"] = os.cpu_count()
    figures["wall_s"] = round(wall_s, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", default="1,2", help="instance counts per service, in turn")
    parser.add_argument("--sweep-instances", default="1", help="instance counts that run the latency sweep")
    parser.add_argument("--seconds", type=float, default=20.0, help="sustained load duration")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients in the sustained load")
    parser.add_argument("--max-pairs", type=int, default=20_000, help="at most this many pairs in the sustained load")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy binary: profile each instance")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the figures")
    args = parser.parse_args()
    args.sweep_instances = {int(n) for n in args.sweep_instances.split(",") if n}
    began = time.monotonic()
    os.environ.setdefault("TONNE_AUTH_DEV_DIR", tempfile.mkdtemp(prefix="tonne-bench-auth-"))
    issuer = DevIssuer(Path(os.environ["TONNE_AUTH_DEV_DIR"]))
    run_dir = Path(tempfile.mkdtemp(prefix="tonne-pipeline-"))
    sections: dict[str, dict[str, Any]] = {}
    with infrastructure() as (bootstrap, admin_dsn):
        raw = asyncio.run(raw_floor(bootstrap, f"pipe{uuid.uuid4().hex[:6]}."))
        print(
            f"raw aiokafka: {raw['msgs_per_s']} msgs/s flat out (p50 {raw['flat_out']['p50_ms']} ms, "
            f"p99 {raw['flat_out']['p99_ms']} ms); paced 200/s p50 {raw['paced_200_per_s']['p50_ms']} ms, "
            f"p99 {raw['paced_200_per_s']['p99_ms']} ms",
            flush=True,
        )
        for instances in (int(n) for n in args.instances.split(",")):
            with services(bootstrap, admin_dsn, instances, run_dir) as stack:
                sections[str(instances)] = asyncio.run(measure(stack, issuer, args))
    figures = summary(raw, sections, time.monotonic() - began)
    print(json.dumps({k: v for k, v in figures.items() if k not in ("instances", "raw")}, indent=2))
    args.results.parent.mkdir(exist_ok=True)
    args.results.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {args.results} (service logs in {run_dir})")


if __name__ == "__main__":
    main()
