"""PostgreSQL: one schema per service, numbered SQL migrations applied at start-up."""

from __future__ import annotations

from pathlib import Path

import asyncpg

SERVICES = ("registry", "matching", "settlement", "compliance")
_KERNEL_MIGRATIONS = Path(__file__).parent / "migrations"
_SERVICES_DIR = Path(__file__).parent.parent


async def connect_pool(dsn: str, schema: str, size: int = 5) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, server_settings={"search_path": schema})
    assert pool is not None
    return pool


def _migration_files(schema: str) -> list[tuple[str, Path]]:
    kernel = [(f"kernel/{p.name}", p) for p in sorted(_KERNEL_MIGRATIONS.glob("*.sql"))]
    own_dir = _SERVICES_DIR / schema / "migrations"
    own = [(f"{schema}/{p.name}", p) for p in sorted(own_dir.glob("*.sql"))]
    return kernel + own


async def migrate(dsn: str, schema: str) -> list[str]:
    """Apply the kernel's and the service's pending migrations; returns their names."""
    conn = await asyncpg.connect(dsn)
    try:
        # Serialises concurrent starters (make up, tests, N instances).
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"migrate:{schema}")
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(f'SET search_path TO "{schema}"')
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
            applied = []
            for name, path in _migration_files(schema):
                if name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
                applied.append(name)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", f"migrate:{schema}")
    finally:
        await conn.close()


async def migrate_all(dsn: str) -> dict[str, list[str]]:
    return {schema: await migrate(dsn, schema) for schema in SERVICES}
