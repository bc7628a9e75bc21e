"""PostgreSQL: one schema per service, numbered SQL migrations applied at start-up.

Migrations run with the administrative DSN; the service itself connects as its own
role (`tonne_<service>`), which may only read and write its own schema's tables.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

SERVICES = ("registry", "matching", "settlement", "compliance")
_KERNEL_MIGRATIONS = Path(__file__).parent / "migrations"
_SERVICES_DIR = Path(__file__).parent.parent


def role_of(schema: str) -> str:
    return f"tonne_{schema}"


def server_settings(schema: str) -> dict[str, str]:
    """Every statement is prepared (asyncpg) and its parameters are keys, so a generic plan
    serves them all alike; PostgreSQL's default re-plans each execution where it guesses a
    custom plan cheaper, which cost a registry decision about a third of its server time
    (decisions/0007). Plans made inside plpgsql functions follow the same setting."""
    return {"search_path": schema, "plan_cache_mode": "force_generic_plan"}


async def connect_pool(dsn: str, schema: str, size: int = 5, role: str | None = None) -> asyncpg.Pool:
    """A pool whose connections see `schema`; as `role` when given (its password, if the
    server asks for one, comes from the DSN)."""
    pool = await asyncpg.create_pool(dsn, user=role, min_size=1, max_size=size, server_settings=server_settings(schema))
    assert pool is not None
    return pool


async def grant_service_role(conn: asyncpg.Connection, schema: str) -> str | None:
    """Create the service's role if needed and give it DML on its schema's tables, nothing
    else (no DDL, no other schema, not superuser). None when this DSN may not manage roles."""
    if not re.fullmatch(r"[a-z][a-z_]*", schema):
        raise ValueError(f"schema name {schema!r} is not a plain identifier")
    role = role_of(schema)
    # Instances start together: grants on one schema must not race ("tuple concurrently updated").
    await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"grant:{schema}")
    try:
        if not await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", role):
            # Another process may create it meanwhile (tests share one server).
            with contextlib.suppress(asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
                await conn.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE')
        await conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        await conn.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        await conn.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"')
    except asyncpg.InsufficientPrivilegeError:
        log.warning("cannot manage role %s with this DSN; the service connects as the DSN's user", role)
        return None
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", f"grant:{schema}")
    return role


def _migration_files(service: str) -> list[tuple[str, Path]]:
    kernel = [(f"kernel/{p.name}", p) for p in sorted(_KERNEL_MIGRATIONS.glob("*.sql"))]
    own_dir = _SERVICES_DIR / service / "migrations"
    own = [(f"{service}/{p.name}", p) for p in sorted(own_dir.glob("*.sql"))]
    return kernel + own


async def migrate(dsn: str, schema: str, source: str | None = None) -> list[str]:
    """Apply the kernel's and the service's pending migrations to `schema`; returns their
    names. `source` names the service whose migrations to use (default: the schema's)."""
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
            for name, path in _migration_files(source or schema):
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


async def service_role(dsn: str, schema: str) -> str | None:
    """The role the service connects as: its own when the DSN's user could set it up."""
    conn = await asyncpg.connect(dsn)
    try:
        return await grant_service_role(conn, schema)
    finally:
        await conn.close()
