"""Readiness follows the infrastructure: /readyz fails while Kafka is down and passes once
it is back (waits on conditions with deadlines). Killing instances: test_kill_instances.py."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from pathlib import Path

import httpx

from deploy.kafka_broker import KafkaBroker
from deploy.postgres import create_database, drop_database
from deploy.stack import SERVICES, ServiceProcesses, prepare
from tests.conftest import STACK_ENV, free_ports
from tests.support import eventually


async def readiness(url: str) -> int | None:
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            return (await client.get(f"{url}/readyz")).status_code
        except httpx.TransportError:
            return None


async def test_readyz_fails_while_kafka_is_down_and_passes_once_it_is_back(database_url: str) -> None:
    """On a broker of its own (the session's is shared): every service turns not ready while
    the broker is stopped, and ready again after it restarts."""
    home = Path(tempfile.mkdtemp(prefix="tonne-outage-kafka-"))
    run_dir = Path(tempfile.mkdtemp(prefix="tonne-outage-"))
    port, controller_port = free_ports(2)
    # SASL and ACLs as everywhere else: readiness must come back with authentication too.
    broker = KafkaBroker(home, port=port, controller_port=controller_port, sasl=True)
    db_name = f"outage_{uuid.uuid4().hex[:12]}"
    dsn = create_database(database_url, db_name)
    ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
    processes = ServiceProcesses(run_dir, broker.bootstrap, dsn, "", ports, extra_env=STACK_ENV)
    try:
        await asyncio.to_thread(broker.start)
        processes.security = broker.security  # known once the broker's storage is formatted
        await prepare(broker.bootstrap, dsn, security=broker.security)
        await asyncio.to_thread(processes.start)

        async def all_are(status: int) -> bool:
            return all([await readiness(url) == status for url in processes.urls.values()])

        assert await all_are(200)
        await asyncio.to_thread(broker.stop)
        await eventually(lambda: all_are(503), "every service to report not ready without Kafka")
        await asyncio.to_thread(broker.start)
        await eventually(lambda: all_are(200), "every service to be ready again with Kafka back", timeout=120)
        assert all(processes.is_alive(name) for name in SERVICES)
    finally:
        processes.stop()
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)
        drop_database(database_url, db_name)
        shutil.rmtree(run_dir, ignore_errors=True)
