"""A private PostgreSQL 16 server from the ``pgserver`` wheel (no Docker, no system install).

pgserver facts that shape this module (pgserver 0.1.4, read from its source):

* ``get_server(dir, cleanup_mode=...)``: the default ``"stop"`` stops the server from an
  ``atexit`` hook when the last Python process holding a handle exits. ``make up`` must
  leave it running, so we always pass ``cleanup_mode=None`` and stop it ourselves.
* It listens on a unix socket only (``-h ""``), in the data dir when the path is short
  enough. ``get_uri()`` returns ``postgresql://postgres:@/postgres?host=<socket dir>``,
  which asyncpg accepts as is.
* Run as root, it creates a ``pgserver`` system user, chowns the data dir to it and
  makes every parent directory world-traversable (o+rx).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from deploy.kafka_broker import pid_alive, run_sync


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def is_postgres_running(data_dir: Path) -> bool:
    pid = _postmaster_pid(data_dir.resolve())
    return pid is not None and pid_alive(pid, cmdline_contains=str(data_dir.resolve()))


def start_postgres(data_dir: Path) -> str:
    """Start (or reuse) the server in ``data_dir`` and return an asyncpg-ready DSN.

    The server outlives this process; call :func:`stop_postgres` to stop it.
    """
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (it falls
        # back to /tmp/runtime-<uid> for pgserver's lock file, which is fine).
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import PostgresServer, get_server

    # get_server() returns a handle cached per data dir without checking that the server
    # still runs; drop the cache so a server stopped by stop_postgres() gets restarted.
    PostgresServer._instances.pop(data_dir, None)
    server = get_server(data_dir, cleanup_mode=None)
    dsn: str = server.get_uri()
    run_sync(_check(dsn))
    return dsn


def stop_postgres(data_dir: Path, timeout: float = 30) -> None:
    """Stop the server in ``data_dir`` if it runs: fast shutdown, then immediate, then kill.

    Signals the postmaster directly instead of ``pg_ctl stop``: pg_ctl refuses to run as
    root, and the server may belong to pgserver's dedicated user.
    """
    data_dir = data_dir.resolve()
    pid = _postmaster_pid(data_dir)
    if pid is None or not pid_alive(pid, cmdline_contains=str(data_dir)):
        return
    for sig, wait_s in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)
    raise RuntimeError(f"postgres {pid} ({data_dir}) did not stop")


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointed at database ``name`` (keeps host, user, query such as ``?host=``)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + quote(name)))


def mask_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    if not parts.password:
        return dsn
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


async def _check(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        if await conn.fetchval("select 1") != 1:
            raise RuntimeError(f"unexpected answer from {mask_password(dsn)}")
    finally:
        await conn.close()


async def create_database_async(admin_dsn: str, name: str) -> str:
    """CREATE DATABASE ``name`` (a plain identifier) and return a DSN for it."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"database name must be [A-Za-z0-9_]: {name!r}")
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_dsn, name)


async def drop_database_async(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        # WITH (FORCE) (PG13+) disconnects lingering sessions, e.g. a pool a test leaked.
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def create_database(admin_dsn: str, name: str) -> str:
    """Synchronous :func:`create_database_async` (usable inside or outside an event loop)."""
    return run_sync(create_database_async(admin_dsn, name))


def drop_database(admin_dsn: str, name: str) -> None:
    run_sync(drop_database_async(admin_dsn, name))


@contextlib.contextmanager
def admin_dsn(prefix: str = "tonne-bench-pg-") -> Iterator[str]:
    """An admin DSN: DATABASE_URL when set, else a PostgreSQL of its own under a temporary
    directory, stopped and removed afterwards (the benchmarks' server)."""
    if dsn := os.environ.get("DATABASE_URL"):
        yield dsn
        return
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield start_postgres(root / "pg")
    finally:
        stop_postgres(root / "pg")
        shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def fresh_database(admin: str, name: str) -> AsyncIterator[str]:
    """A new, empty database `name` for the block's duration (one left by an earlier run
    is dropped first)."""
    await drop_database_async(admin, name)
    dsn = await create_database_async(admin, name)
    try:
        yield dsn
    finally:
        await drop_database_async(admin, name)
