"""Replay: rebuild a service's projections from its event table into fresh tables and
hash the result, next to its aggregates folded from zero or from their latest snapshot.

Runs beside the live service and never writes to its schema.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from services.common import eventstore
from services.common.db import connect_pool, migrate
from services.common.envelope import payload_of
from services.common.runtime import Kernel, Service
from services.common.settings import Settings
from services.common.statehash import Source, StateHash, digest_aggregates, digest_projections

PAGE = 5000


async def replay(settings: Settings, build: Callable[[Kernel], Service], source: Source) -> StateHash:
    schema = settings.service
    scratch = f"{schema}_replay"
    await _drop_schema(settings.database_url, scratch)
    await migrate(settings.database_url, scratch, source=schema)
    live = await connect_pool(settings.database_url, schema, size=2)
    fresh = await connect_pool(settings.database_url, scratch, size=2)
    try:
        state = build(Kernel(settings, live)).state
        async with live.acquire() as reader, fresh.acquire() as writer:
            transaction = writer.transaction()
            await transaction.start()
            n = 0
            async for envelope in eventstore.read_all(reader, PAGE):
                await state.project(writer, envelope, payload_of(envelope))
                n += 1
                if n % PAGE == 0:  # bounded transactions over a long history
                    await transaction.commit()
                    transaction = writer.transaction()
                    await transaction.start()
            await transaction.commit()
            projections = await digest_projections(writer, state.projections)
            aggregates = await digest_aggregates(reader, state.repositories, source)
        return StateHash(aggregates, projections)
    finally:
        await live.close()
        await fresh.close()
        await _drop_schema(settings.database_url, scratch)


async def _drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
