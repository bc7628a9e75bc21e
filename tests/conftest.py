"""Session infrastructure for every test: a real Kafka broker and a real PostgreSQL.

Choice, per resource: environment variable (``KAFKA_BOOTSTRAP_SERVERS`` /
``DATABASE_URL``) -> local processes (Kafka JVM from Maven jars, pgserver) ->
testcontainers when a Docker engine answers -> ``pytest.fail``. Missing infrastructure
is a failure, never a skip, with or without ``CI=true``.

The fixtures are synchronous (async setup runs via ``run_sync`` in a private thread), so
they work from sync and async tests alike.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.kafka_broker import MARKER_JAR, KafkaBroker, default_lib_dir, run_sync
from deploy.kafka_security import KafkaSecurity
from deploy.postgres import create_database, drop_database, start_postgres, stop_postgres
from deploy.stack import ServiceProcesses, ServiceStartError, instance_names, prepare
from services.common.auth import DevIssuer
from services.common.kafka import MECHANISM_ENV, PASSWORD_ENV, USERNAME_ENV, KafkaAccess

SNAPSHOT_EVERY = 2
# Snapshots every few events, so the suite exercises restoring from them; a caller rate
# above what the suites send (the limiter itself is unit tested).
STACK_ENV = {"TONNE_SNAPSHOT_EVERY": str(SNAPSHOT_EVERY), "TONNE_RATE_PER_SECOND": "1000", "TONNE_RATE_BURST": "2000"}
CREDENTIAL_ENV = (USERNAME_ENV, PASSWORD_ENV, MECHANISM_ENV)
NO_INFRA_HINT = (
    "set {var}, or provide local prerequisites ({local}), or run a Docker engine "
    "(testcontainers). Tests never skip for missing infrastructure."
)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all sockets held open until all are picked)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def local_kafka_problem() -> str | None:
    """Why a local broker cannot run here, or None if it can."""
    if shutil.which("java") is None:
        return "no 'java' on PATH"
    if not (default_lib_dir() / MARKER_JAR).exists() and shutil.which("mvn") is None:
        return "Kafka jars not fetched and no 'mvn' on PATH to fetch them"
    return None


def report(config: pytest.Config, text: str) -> None:
    """Write past pytest's output capturing (used during session teardown)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        for line in text.splitlines():
            reporter.write_line(line)
    else:
        print(text, file=sys.stderr)


@pytest.fixture(scope="session", autouse=True)
def dev_issuer() -> Iterator[DevIssuer]:
    """One development token issuer per session: the services started by the tests trust
    its key (TONNE_AUTH_DEV_DIR is inherited) and tests mint tokens with it."""
    folder = Path(tempfile.mkdtemp(prefix="tonne-auth-"))
    previous = os.environ.get("TONNE_AUTH_DEV_DIR")
    os.environ["TONNE_AUTH_DEV_DIR"] = str(folder)
    try:
        yield DevIssuer(folder)
    finally:
        if previous is None:
            os.environ.pop("TONNE_AUTH_DEV_DIR", None)
        else:
            os.environ["TONNE_AUTH_DEV_DIR"] = previous
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _kafka_broker() -> Iterator[KafkaAccess]:
    """A Kafka broker (3.9, single node, auto-create topics off) and its super user's access."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        # Its super user's credentials, if it has SASL, come from TONNE_KAFKA_*.
        yield KafkaAccess.from_env(external)
        return
    problem = local_kafka_problem()
    if problem is None:
        home = Path(tempfile.mkdtemp(prefix="tonne-kafka-"))
        port, controller_port = free_ports(2)
        broker = KafkaBroker(home, port=port, controller_port=controller_port, sasl=True)
        try:
            KafkaBroker.fetch()
            broker.start()
        except Exception as exc:
            broker.stop()
            pytest.fail(f"local Kafka broker failed to start: {exc}", pytrace=False)
        try:
            yield broker.access
        finally:
            broker.stop()
            shutil.rmtree(home, ignore_errors=True)
        return
    if docker_available():
        from testcontainers.community.kafka import KafkaContainer

        # PLAINTEXT: the container's listeners are its module's; no principals, no ACLs.
        with KafkaContainer().with_kraft() as container:
            yield KafkaAccess(container.get_bootstrap_server())
        return
    pytest.fail(
        f"No Kafka broker ({problem}, no Docker engine): "
        + NO_INFRA_HINT.format(var="KAFKA_BOOTSTRAP_SERVERS", local="Java 17+ and Maven"),
        pytrace=False,
    )


@pytest.fixture(scope="session")
def kafka_access() -> Iterator[KafkaAccess]:
    """The session's broker as its super user (SASL/SCRAM on the local broker).

    The credentials are also in the session's environment (TONNE_KAFKA_*), so the raw
    clients of tests/support.py and the services' Settings built in process use them;
    ServiceProcesses gives each service process its own principal instead."""
    with _kafka_broker() as access:
        previous = {name: os.environ.get(name) for name in CREDENTIAL_ENV}
        os.environ.update({name: access.env()[name] for name in CREDENTIAL_ENV})
        try:
            yield access
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_access: KafkaAccess) -> str:
    """``host:port`` of the session's broker."""
    return kafka_access.bootstrap


@pytest.fixture(scope="session")
def kafka_security(kafka_access: KafkaAccess) -> KafkaSecurity | None:
    """Every principal's access (deploy/kafka_security.py); None for a broker without SASL."""
    return KafkaSecurity(kafka_access) if kafka_access.authenticated else None


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """Admin DSN of a PostgreSQL server (asyncpg form); see ``fresh_database_url``."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    # pgserver is a hard dependency; still, be explicit about the fallback.
    local_problem = None if importlib.util.find_spec("pgserver") else "pgserver not installed"
    if local_problem is None:
        root = Path(tempfile.mkdtemp(prefix="tonne-pg-"))
        data_dir = root / "pg"
        try:
            dsn = start_postgres(data_dir)
        except Exception as exc:
            stop_postgres(data_dir)
            shutil.rmtree(root, ignore_errors=True)
            pytest.fail(f"pgserver PostgreSQL failed to start: {exc}", pytrace=False)
        try:
            yield dsn
        finally:
            stop_postgres(data_dir)
            shutil.rmtree(root, ignore_errors=True)
        return
    if docker_available():
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine") as container:
            yield container.get_connection_url(driver=None)
        return
    pytest.fail(
        f"No PostgreSQL ({local_problem}, no Docker engine): "
        + NO_INFRA_HINT.format(var="DATABASE_URL", local="the pgserver wheel"),
        pytrace=False,
    )


@pytest.fixture
def fresh_database_url(database_url: str) -> Iterator[str]:
    """DSN of a new, empty, uniquely named database; dropped afterwards (best effort)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    dsn = create_database(database_url, name)
    yield dsn
    with contextlib.suppress(Exception):
        drop_database(database_url, name)


@pytest.fixture(scope="session")
def topic_prefix() -> str:
    """Unique per session, so runs against a shared external broker never collide."""
    return f"t{uuid.uuid4().hex[:8]}."


@dataclass(frozen=True)
class RunningStack:
    urls: dict[str, str]  # service name -> base URL, e.g. "http://127.0.0.1:40123"
    bootstrap: str
    database_url: str
    topic_prefix: str
    processes: ServiceProcesses
    security: KafkaSecurity | None  # the principals of the broker, None without SASL


def _stack(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    security: KafkaSecurity | None,
    database_url: str,
    topic_prefix: str,
    instances: int,
) -> Iterator[RunningStack]:
    """The services, `instances` processes each (one consumer group per service), on free
    ports, own topics (prefixed) and own database; each connects to Kafka as its own
    principal with the ACLs of deploy/kafka_security.py."""
    db_name = f"stack_{uuid.uuid4().hex[:12]}"
    dsn = create_database(database_url, db_name)
    run_sync(prepare(kafka_bootstrap, dsn, topic_prefix, security))
    run_dir = Path(tempfile.mkdtemp(prefix="tonne-stack-"))
    names = instance_names(instances)
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    processes = ServiceProcesses(
        run_dir,
        kafka_bootstrap,
        dsn,
        topic_prefix,
        ports,
        extra_env=STACK_ENV,
        names=names,
        security=security,
    )
    try:
        # Instance by instance of each service: two processes of one service starting at
        # the same moment can race on granting its database role (GRANT: "tuple
        # concurrently updated"), a kernel issue this fixture does not hide by retrying.
        for wave in range(1, instances + 1):
            processes.names = instance_names(wave)
            processes.start()
    except ServiceStartError as exc:
        processes.stop()
        pytest.fail(
            f"{exc}\n--- tail of {processes.log_path(exc.name)} ---\n{exc.log_tail}",
            pytrace=False,
        )
    try:
        yield RunningStack(processes.urls, kafka_bootstrap, dsn, topic_prefix, processes, security)
    finally:
        processes.stop()
        if request.session.testsfailed:
            for name in names:
                report(
                    request.config,
                    f"\n----- tail of {processes.log_path(name)} -----\n" + processes.log_tail(name, lines=80),
                )
            report(request.config, f"(service logs kept in {run_dir})")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(Exception):
            drop_database(database_url, db_name)


@pytest.fixture(scope="session")
def running_stack(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    kafka_security: KafkaSecurity | None,
    database_url: str,
    topic_prefix: str,
) -> Iterator[RunningStack]:
    """The four services on free ports, own topics (prefixed) and own database."""
    yield from _stack(request, kafka_bootstrap, kafka_security, database_url, topic_prefix, instances=1)


@pytest.fixture(scope="session")
def two_instance_stack(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    kafka_security: KafkaSecurity | None,
    database_url: str,
    topic_prefix: str,
) -> Iterator[RunningStack]:
    """Two processes of each service (`registry`, `registry-2`, ...), each pair in its
    service's consumer group; own topics, consumer groups and database."""
    yield from _stack(request, kafka_bootstrap, kafka_security, database_url, f"{topic_prefix}n2.", instances=2)
