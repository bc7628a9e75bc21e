"""Run the whole tonne stack locally: ``python -m deploy.stack up|down|status``.

Infrastructure: ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` from the environment when
set (never started or stopped by us), otherwise a local Kafka broker in
``.run/kafka/node`` and a pgserver PostgreSQL in ``.run/postgres``. What this module
started is recorded in ``.run/state.json`` so ``down`` stops exactly that.

:class:`ServiceProcesses` is shared with the pytest fixtures (tests/conftest.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from deploy.kafka_broker import REPO_ROOT, KafkaBroker, pid_alive, run_sync, tail, terminate_pid
from deploy.kafka_security import (
    ADMIN_USER,
    KafkaSecurity,
    national_registry_user,
    principals,
    provision,
    regulator_user,
    service_user,
)
from deploy.postgres import is_postgres_running, mask_password, start_postgres, stop_postgres
from services.common import topics
from services.common.kafka import KafkaAccess

SERVICES: tuple[str, ...] = topics.SERVICES

DEFAULT_PORTS: dict[str, int] = {
    "registry": 8101,
    "matching": 8102,
    "settlement": 8103,
    "compliance": 8104,
}
RUN_DIR = REPO_ROOT / ".run"
KAFKA_HOME = RUN_DIR / "kafka" / "node"
KAFKA_PORT, KAFKA_CONTROLLER_PORT = 9092, 9093
PG_DIR = RUN_DIR / "postgres"
STATE_FILE = RUN_DIR / "state.json"


def instance_names(instances: int, names: tuple[str, ...] = SERVICES) -> tuple[str, ...]:
    """`registry`, `registry-2`, ...: every instance of every service, one process each."""
    return tuple(name if i == 1 else f"{name}-{i}" for i in range(1, instances + 1) for name in names)


def instance_ports(instances: int) -> dict[str, int]:
    """The first instance keeps the service's port; the i-th adds 100 * (i - 1)."""
    return {
        name: DEFAULT_PORTS[name.split("-")[0]] + 100 * (int(name.split("-")[1]) - 1 if "-" in name else 0)
        for name in instance_names(instances)
    }


class ServiceStartError(RuntimeError):
    def __init__(self, name: str, reason: str, log_tail: str) -> None:
        super().__init__(f"service {name!r} {reason}")
        self.name = name
        self.reason = reason
        self.log_tail = log_tail


class ServiceProcesses:
    """The four tonne services as detached ``python -m services.<name>`` processes.

    ``pids`` adopts processes started earlier (e.g. by a previous ``up``); ``start()``
    only spawns the ones that are not alive, then waits until every ``/readyz`` is 200.
    With ``security`` each service connects to Kafka as its own principal
    (``tonne-<service>``); without it, PLAINTEXT (this process's credentials are not
    passed on).
    """

    def __init__(
        self,
        run_dir: Path,
        bootstrap: str,
        dsn: str,
        topic_prefix: str = "",
        ports: Mapping[str, int] | None = None,
        *,
        python: str = sys.executable,
        pids: Mapping[str, int] | None = None,
        extra_env: Mapping[str, str] | None = None,
        names: tuple[str, ...] = SERVICES,
        module_template: str = "services.{name}",
        security: KafkaSecurity | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.bootstrap = bootstrap
        self.dsn = dsn
        self.topic_prefix = topic_prefix
        self.ports = dict(ports or DEFAULT_PORTS)
        self.python = python
        self.names = names
        self.module_template = module_template
        self.extra_env = dict(extra_env or {})
        self.pids: dict[str, int] = dict(pids or {})
        self.security = security
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def urls(self) -> dict[str, str]:
        return {name: f"http://127.0.0.1:{self.ports[name]}" for name in self.names}

    def module(self, name: str) -> str:
        return self.module_template.format(name=name.split("-")[0])

    def log_path(self, name: str) -> Path:
        return self.run_dir / "logs" / f"{name}.log"

    def is_alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        if proc is not None:
            return proc.poll() is None
        pid = self.pids.get(name)
        # Match the command line so a recycled pid is not mistaken for our service.
        return pid is not None and pid_alive(pid, cmdline_contains=self.module(name))

    def is_ready(self, name: str, timeout: float = 2.0) -> bool:
        try:
            response = httpx.get(f"{self.urls[name]}/readyz", timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def kafka_access(self, name: str) -> KafkaAccess:
        """The Kafka principal instance `name` runs as."""
        if self.security is None:
            return KafkaAccess(self.bootstrap)
        return self.security.access(service_user(name.split("-")[0]))

    def _spawn(self, name: str) -> None:
        log_path = self.log_path(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **self.kafka_access(name).env(),
            "DATABASE_URL": self.dsn,
            "TONNE_HTTP_PORT": str(self.ports[name]),
            "TONNE_TOPIC_PREFIX": self.topic_prefix,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        with open(log_path, "ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"\n=== starting {self.module(name)} at {stamp} ===\n".encode())
            log.flush()
            # Own session: survives `make up` exiting, and stop() can signal the group.
            proc = subprocess.Popen(
                [self.python, "-m", self.module(name)],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._procs[name] = proc
        self.pids[name] = proc.pid

    def start(self, deadline_s: float = 90) -> list[str]:
        """Spawn the services that are not running; wait for all to be ready.

        Returns the names it spawned. Raises :class:`ServiceStartError` (with the tail of
        that service's log) when one exits or is not ready before the deadline.
        """
        spawned = [name for name in self.names if not self.is_alive(name)]
        for name in spawned:
            self._spawn(name)
        deadline = time.monotonic() + deadline_s
        pending = set(self.names)
        while pending:
            for name in sorted(pending):
                if not self.is_alive(name):
                    raise ServiceStartError(name, "exited during startup", self.log_tail(name))
                if self.is_ready(name):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                name = sorted(pending)[0]
                raise ServiceStartError(name, f"not ready after {deadline_s}s (GET /readyz)", self.log_tail(name))
            if pending:
                time.sleep(0.2)
        return spawned

    def stop(self, timeout: float = 15) -> None:
        for name in self.names:
            pid = self.pids.get(name)
            if pid is not None and self.is_alive(name):
                terminate_pid(pid, timeout)
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.poll()  # reap
            self.pids.pop(name, None)

    def log_tail(self, name: str, lines: int = 60) -> str:
        return tail(self.log_path(name), lines)


async def prepare(bootstrap: str, dsn: str, topic_prefix: str = "", security: KafkaSecurity | None = None) -> None:
    """Create the topics, with `security` the Kafka principals and their ACLs, and run the
    migrations (all idempotent)."""
    from services.common.db import migrate_all
    from services.common.topics import ensure_topics

    await ensure_topics(security.admin if security is not None else KafkaAccess(bootstrap), prefix=topic_prefix)
    if security is not None:
        await provision(security, topic_prefix)
    await migrate_all(dsn)


# ---------------------------------------------------------------------------- state
def load_state() -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        state = {}
    state.setdefault("managed", {})
    state.setdefault("services", {})
    return state


def save_state(state: dict[str, Any]) -> None:
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(STATE_FILE)  # atomic: a crash never leaves half a state file


def local_broker() -> KafkaBroker:
    return KafkaBroker(home=KAFKA_HOME, port=KAFKA_PORT, controller_port=KAFKA_CONTROLLER_PORT, sasl=True)


def kafka_security(state: dict[str, Any]) -> KafkaSecurity | None:
    """The admin of the broker in use: the local one's, or (external broker) the super
    user named by TONNE_KAFKA_USERNAME / TONNE_KAFKA_PASSWORD; None without SASL."""
    local = local_broker()
    if "kafka_home" in state["managed"] and state.get("bootstrap") == local.bootstrap:
        return local.security
    return KafkaSecurity.from_env(state.get("bootstrap") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""))


def _ensure_kafka(state: dict[str, Any]) -> str:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        sasl = "SASL as $TONNE_KAFKA_USERNAME" if KafkaSecurity.from_env(external) else "PLAINTEXT"
        print(f"Kafka: using KAFKA_BOOTSTRAP_SERVERS={external} ({sasl}; not managed here)")
        return external
    broker = local_broker()
    state["managed"]["kafka_home"] = str(broker.home)
    save_state(state)  # record before starting so `down` can clean up a failed start
    if broker.is_running():
        broker.wait_ready()
        print(f"Kafka: local broker already running at {broker.bootstrap}")
    else:
        started = time.monotonic()
        KafkaBroker.fetch(REPO_ROOT)
        broker.start()
        print(f"Kafka: started local broker at {broker.bootstrap} in {time.monotonic() - started:.1f}s")
    return broker.bootstrap


def _ensure_postgres(state: dict[str, Any]) -> str:
    external = os.environ.get("DATABASE_URL")
    if external:
        print(f"PostgreSQL: using DATABASE_URL={mask_password(external)} (not managed here)")
        return external
    state["managed"]["postgres_dir"] = str(PG_DIR)
    save_state(state)
    already = is_postgres_running(PG_DIR)
    dsn = start_postgres(PG_DIR)
    print(f"PostgreSQL: {'already running' if already else 'started'} (pgserver, {PG_DIR})")
    return dsn


# ---------------------------------------------------------------------------- commands
def up(*, infra_only: bool = False, instances: int = 1) -> int:
    state = load_state()
    bootstrap = _ensure_kafka(state)
    dsn = _ensure_postgres(state)
    prefix = os.environ.get("TONNE_TOPIC_PREFIX", "")
    state.update(bootstrap=bootstrap, database_url=dsn, topic_prefix=prefix)
    save_state(state)
    security = kafka_security(state)
    if not infra_only:
        run_sync(prepare(bootstrap, dsn, prefix, security))
        config = {"bootstrap": bootstrap, "dsn": dsn, "topic_prefix": prefix}
        old = state["services"]
        procs = ServiceProcesses(
            RUN_DIR,
            bootstrap,
            dsn,
            prefix,
            instance_ports(instances),
            pids={n: e["pid"] for n, e in old.get("processes", {}).items()},
            names=instance_names(instances),
            security=security,
        )
        if old.get("config") not in (None, config):
            print("Services were started against other infrastructure: restarting them")
            procs.stop()
        try:
            spawned = procs.start()
        except ServiceStartError as exc:
            print(f"\nERROR: {exc}\n--- tail of {procs.log_path(exc.name)} ---\n{exc.log_tail}", file=sys.stderr)
            return 1
        finally:
            state["services"] = {
                "config": config,
                "processes": {n: {"pid": p, "port": procs.ports[n]} for n, p in procs.pids.items()},
            }
            save_state(state)
        kept = [n for n in procs.names if n not in spawned]
        if kept:
            print(f"Services already running (left as is): {', '.join(kept)}")
        if spawned:
            print(f"Services started: {', '.join(spawned)}")
        print()
        for name, url in procs.urls.items():
            print(f"  {name:<11} {url}/docs   {url}/openapi.json")
    print()
    print(f"  Kafka bootstrap: {bootstrap}")
    print(f"  Database:        {mask_password(dsn)}")
    if prefix:
        print(f"  Topic prefix:    {prefix}")
    print("\n  A development token (never valid with TONNE_ENV=production), e.g. for a broker:")
    print("    .venv/bin/python -m services.common.auth mint broker-a --role broker --broker-id broker-a")
    print("  roles: broker, operator, regulator:<JUR>, registry-operator:<JUR>, national-registry:<JUR>")
    if security is not None:
        print("\n  Kafka credentials (SASL/SCRAM-SHA-512) of a national registry or a regulator, e.g. TH:")
        print(f"    eval $(.venv/bin/python -m deploy.stack kafka-credentials {national_registry_user('TH')})")
        print(f"    eval $(.venv/bin/python -m deploy.stack kafka-credentials {regulator_user('TH')})")
    print("\nstop with: make down")
    return 0


def down() -> int:
    state = load_state()
    pids = {n: e["pid"] for n, e in state["services"].get("processes", {}).items()}
    if pids:
        ServiceProcesses(RUN_DIR, "", "", pids=pids, names=tuple(pids)).stop()
        print(f"Stopped services: {', '.join(sorted(pids))}")
    state["services"] = {}
    save_state(state)
    managed = state["managed"]
    if "kafka_home" in managed:
        broker = local_broker()
        if broker.is_running():
            broker.stop()
            print(f"Stopped Kafka broker ({managed['kafka_home']})")
        del managed["kafka_home"]
        save_state(state)
    if "postgres_dir" in managed:
        if is_postgres_running(Path(managed["postgres_dir"])):
            stop_postgres(Path(managed["postgres_dir"]))
            print(f"Stopped PostgreSQL ({managed['postgres_dir']})")
        del managed["postgres_dir"]
        save_state(state)
    STATE_FILE.unlink(missing_ok=True)
    print("down.")
    return 0


def status() -> int:
    """Print what runs; exit 0 only when every service answers /readyz."""
    state = load_state()
    managed = state["managed"]
    if state.get("bootstrap"):
        print(f"Kafka in use:      {state['bootstrap']}")
    if state.get("database_url"):
        print(f"Database in use:   {mask_password(state['database_url'])}")
    if "kafka_home" in managed:
        broker = local_broker()
        print(f"Local Kafka broker ({broker.bootstrap}): {'running' if broker.is_running() else 'stopped'}")
    if "postgres_dir" in managed:
        running = is_postgres_running(Path(managed["postgres_dir"]))
        print(f"Local PostgreSQL ({managed['postgres_dir']}): {'running' if running else 'stopped'}")
    entries = state["services"].get("processes", {})
    procs = ServiceProcesses(
        RUN_DIR,
        "",
        "",
        ports=DEFAULT_PORTS | {n: e["port"] for n, e in entries.items()},
        pids={n: e["pid"] for n, e in entries.items()},
        names=tuple(entries) or SERVICES,
    )
    all_ready = True
    for name in procs.names:
        alive = procs.is_alive(name)
        ready = alive and procs.is_ready(name)
        all_ready &= ready
        state_text = "ready" if ready else ("alive, not ready" if alive else "stopped")
        print(f"  {name:<11} {procs.urls[name]:<24} {state_text}")
    return 0 if all_ready else 3


def kafka_credentials(username: str) -> int:
    """Print `export` lines with a principal's Kafka access to the stack's broker."""
    if username not in (ADMIN_USER, *principals()):
        print(f"ERROR: no Kafka principal {username!r}; one of: {', '.join(principals())}", file=sys.stderr)
        return 2
    security = kafka_security(load_state())
    if security is None:
        print("ERROR: the stack's Kafka broker has no SASL (is it up?)", file=sys.stderr)
        return 1
    access = security.admin if username == ADMIN_USER else security.access(username)
    for name, value in access.env().items():
        print(f"export {name}={value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start infrastructure and services (idempotent)")
    up_parser.add_argument("--infra-only", action="store_true", help="only Kafka and PostgreSQL, no topics/services")
    up_parser.add_argument("--instances", type=int, default=1, help="processes per service, in one consumer group")
    sub.add_parser("down", help="stop what `up` started")
    sub.add_parser("status", help="show what is running")
    creds = sub.add_parser("kafka-credentials", help="print a Kafka principal's access as shell exports")
    creds.add_argument("username", help="e.g. national-registry-TH, regulator-TH, tonne-matching")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return up(infra_only=args.infra_only, instances=args.instances)
        if args.command == "down":
            return down()
        if args.command == "kafka-credentials":
            return kafka_credentials(args.username)
        return status()
    except (RuntimeError, TimeoutError, OSError) as exc:
        # Startup failures carry the relevant log tail in their message.
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
