"""Replay from zero, replay from the latest snapshots and the live services agree on the
state hash of all four services (docs/decisions/0006), after the scenarios have run."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import asyncpg
import httpx

from deploy.stack import SERVICES
from services.common.auth import DevIssuer
from tests.support import eventually


async def replay(stack: Any, service: str, *flags: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": stack.database_url, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"services.{service}", "replay", *flags,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-3000:]
    result: dict[str, str] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_live_replay_and_snapshot_replay_give_one_state_hash(running_stack: Any, dev_issuer: DevIssuer) -> None:
    stack = running_stack
    operator = {"authorization": f"Bearer {dev_issuer.mint('ops', ['operator'])}"}
    conn = await asyncpg.connect(stack.database_url)
    try:
        # The scenarios made the engine's books long enough to have been snapshotted.
        assert await conn.fetchval("SELECT count(*) FROM matching.snapshots") > 0
    finally:
        await conn.close()
    async with httpx.AsyncClient(timeout=30) as client:
        for service in SERVICES:
            url = f"{stack.urls[service]}/state-hash"

            async def agreed(service: str = service, url: str = url) -> Any:
                # Records may still be in flight: compare once the live hash holds still.
                before = (await client.get(url, headers=operator)).json()
                from_zero = await replay(stack, service)
                from_snapshot = await replay(stack, service, "--from-snapshot")
                after = (await client.get(url, headers=operator)).json()
                return before if before == after == from_zero == from_snapshot else None

            hashed = await eventually(agreed, f"{service}'s live, replayed and snapshot hashes to agree", 120)
            assert len(hashed["state"]) == 64


async def test_the_state_hash_and_metrics_are_for_operators_only(running_stack: Any, dev_issuer: DevIssuer) -> None:
    broker = {"authorization": f"Bearer {dev_issuer.mint('broker-a', ['broker'], 'broker-a')}"}
    async with httpx.AsyncClient(timeout=10) as client:
        for url in running_stack.urls.values():
            for path in ("/state-hash", "/metrics"):
                anonymous, forbidden = await client.get(url + path), await client.get(url + path, headers=broker)
                assert (anonymous.status_code, forbidden.status_code) == (401, 403)
                assert "state" not in anonymous.text and "tonne_" not in forbidden.text
