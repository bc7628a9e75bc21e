"""A real single-node Apache Kafka broker (KRaft) run as a plain JVM process.

No Docker: the broker jars are fetched once with Maven (deploy/kafka/pom.xml) into
``.run/kafka/lib`` and shared by every broker started from this checkout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr

from deploy.kafka_security import ADMIN_USER, CONTROLLER_USER, KafkaSecurity
from services.common.kafka import KafkaAccess

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_VERSION = "3.9.2"
MARKER_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J_CONFIG = REPO_ROOT / "deploy" / "kafka" / "log4j.properties"

# Sized for a 2-core box running several JVM-free services next to it.
JVM_OPTS = [
    "-Xms64m",
    "-Xmx384m",
    "-XX:+UseSerialGC",
    "-XX:MaxMetaspaceSize=96m",
    "-XX:ReservedCodeCacheSize=64m",
]
# The storage tool is a short-lived JVM; it needs far less.
TOOL_JVM_OPTS = ["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]

T = TypeVar("T")
ADMIN_SECRET_FILE = "kafka-admin.secret"
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"


def default_lib_dir(repo_root: Path = REPO_ROOT) -> Path:
    return repo_root / ".run" / "kafka" / "lib"


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code.

    Runs it in a fresh thread with its own event loop so it works whether or not the
    caller's thread has an event loop (running or not): ``asyncio.run`` in the main
    thread would otherwise reset the loop pytest-asyncio installed there.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def pid_alive(pid: int, cmdline_contains: str | None = None) -> bool:
    """True if ``pid`` is a live (non-zombie) process, optionally checking its command line.

    The command-line check guards against a stale pid file whose pid was reused.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    proc = Path(f"/proc/{pid}")
    if not proc.exists():  # not Linux: trust kill(0)
        return True
    try:
        # Field 3 of /proc/<pid>/stat is the state; the command name (field 2) may
        # contain spaces, so split after its closing parenthesis.
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
        if cmdline_contains is not None:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            return cmdline_contains in cmdline
    except (OSError, IndexError):
        return False
    return True


def terminate_pid(pid: int, timeout: float, *, group: bool = True) -> None:
    """SIGTERM ``pid`` (its process group when it leads one), wait, then SIGKILL."""

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group and os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    def reap() -> None:
        # If the process is our child, collect it so it does not linger as a zombie.
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    if not pid_alive(pid):
        reap()
        return
    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap()
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    send(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reap()
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    raise RuntimeError(f"process {pid} survived SIGKILL")


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner may read (mode 0600 from its creation on)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file may have had wider permissions
    with os.fdopen(fd, "w") as file:
        file.write(text)


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


class KafkaBroker:
    """One KRaft node (broker + controller) listening on 127.0.0.1 only."""

    def __init__(
        self,
        home: Path,
        port: int,
        controller_port: int,
        lib_dir: Path | None = None,
        *,
        sasl: bool = False,
    ) -> None:
        self.home = home.resolve()
        self.port = port
        self.controller_port = controller_port
        self.lib_dir = (lib_dir or default_lib_dir()).resolve()
        # SASL/SCRAM and ACLs (deploy/kafka_security.py); `make up` and the test fixtures
        # ask for it. Without it the listener is PLAINTEXT and every client may do anything.
        self.sasl = sasl
        self.properties_file = self.home / "server.properties"
        self.pid_file = self.home / "kafka.pid"
        self.log_file = self.home / "kafka.log"
        self.cluster_id_file = self.home / "cluster.id"
        self.secret_file = self.home / ADMIN_SECRET_FILE
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ fetching
    @staticmethod
    def fetch(repo_root: Path = REPO_ROOT) -> Path:
        """Download the broker jars once into ``<repo>/.run/kafka/lib``; return that dir.

        Maven writes into a private directory which is renamed into place only when
        complete, under a file lock, so concurrent callers (two pytest sessions, or
        ``make up`` during tests) neither race nor see a half-filled lib dir.
        """
        lib = default_lib_dir(repo_root)
        if (lib / MARKER_JAR).exists():
            return lib
        lib.parent.mkdir(parents=True, exist_ok=True)
        with open(lib.parent / "fetch.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (lib / MARKER_JAR).exists():  # someone else finished while we waited
                return lib
            if shutil.which("mvn") is None:
                raise RuntimeError("Maven ('mvn') is required to fetch the Kafka broker jars")
            partial = lib.parent / f"lib.partial-{os.getpid()}"
            shutil.rmtree(partial, ignore_errors=True)
            cmd = [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(repo_root / "deploy" / "kafka" / "pom.xml"),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={partial}",
            ]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0 or not (partial / MARKER_JAR).exists():
                shutil.rmtree(partial, ignore_errors=True)
                raise RuntimeError(
                    f"Maven fetch of Kafka {KAFKA_VERSION} failed (rc={result.returncode}):\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
                )
            shutil.rmtree(lib, ignore_errors=True)  # an incomplete leftover
            partial.rename(lib)
        return lib

    # ------------------------------------------------------------------ properties
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def security(self) -> KafkaSecurity | None:
        """The admin's access and every principal's password; None for a PLAINTEXT broker.

        The admin secret is generated when the storage is first formatted."""
        if not self.sasl:
            return None
        try:
            secret = self.secret_file.read_text().strip()
        except FileNotFoundError:
            raise RuntimeError(
                f"{self.secret_file} missing: this broker was not formatted with SASL here "
                "(an older PLAINTEXT one? `make down && make clean-run` starts afresh)"
            ) from None
        return KafkaSecurity.for_admin(self.bootstrap, SecretStr(secret))

    @property
    def access(self) -> KafkaAccess:
        """How a client with every right connects: the admin, or anyone on PLAINTEXT."""
        security = self.security
        return security.admin if security is not None else KafkaAccess(self.bootstrap)

    def _listener_properties(self) -> dict[str, str]:
        if not self.sasl:
            return {
                "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name": "PLAINTEXT",
            }
        security = self.security
        assert security is not None
        admin = security.admin.password.get_secret_value()
        controller = security.password(CONTROLLER_USER).get_secret_value()
        return {
            # CLIENT: SCRAM-SHA-512, credentials kept in the cluster metadata (the admin's
            # from format time, the others from provisioning). The broker talks to itself on
            # it as the admin.
            "listeners": f"CLIENT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "CLIENT",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.client.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.client.scram-sha-512.sasl.jaas.config": (
                f'{SCRAM_LOGIN} required username="{ADMIN_USER}" password="{admin}";'
            ),
            # CONTROLLER: the controller must answer before any SCRAM credential can be
            # read from the metadata it serves, so it uses PLAIN with one static user.
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                f'{PLAIN_LOGIN} required username="{CONTROLLER_USER}" password="{controller}" '
                f'user_{CONTROLLER_USER}="{controller}";'
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{ADMIN_USER};User:{CONTROLLER_USER}",
        }

    def _properties(self) -> dict[str, str]:
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            **self._listener_properties(),
            "log.dirs": str(self.home / "data"),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "false",
            # Internal topics: one replica, few partitions (defaults are 50 each).
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "3",
            "group.initial.rebalance.delay.ms": "0",
            # The cleaner reserves 128 MiB of heap by default; compaction still works.
            "log.cleaner.dedupe.buffer.size": "2097152",
            "log.cleaner.enable": "true",
        }

    def _write_properties(self) -> None:
        body = "".join(f"{k}={v}\n" for k, v in self._properties().items())
        # It holds the admin's and the controller's passwords: owner only.
        write_private(self.properties_file, "# Generated by deploy/kafka_broker.py; rewritten on every start.\n" + body)

    # ------------------------------------------------------------------ lifecycle
    def _java(self, *args: str, jvm_opts: list[str]) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("Java (17+) is required to run the Kafka broker")
        return [
            java,
            *jvm_opts,
            f"-Dlog4j.configuration=file:{LOG4J_CONFIG}",
            "-cp",
            f"{self.lib_dir}/*",
            *args,
        ]

    def _run_tool(self, *args: str) -> str:
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", *args, jvm_opts=TOOL_JVM_OPTS),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"kafka.tools.StorageTool {' '.join(args)} failed (rc={result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def _format_storage(self) -> None:
        """Format the log dir once; the cluster id is kept in ``home`` for restarts."""
        if not self.cluster_id_file.exists():
            cluster_id = self._run_tool("random-uuid").strip().splitlines()[-1].strip()
            self.cluster_id_file.write_text(cluster_id + "\n")
        formatted = (self.home / "data" / "meta.properties").exists()
        if self.sasl and formatted and not self.secret_file.exists():
            raise RuntimeError(
                f"{self.home} was formatted without SASL credentials; remove it to start afresh "
                "(`make down && make clean-run`)"
            )
        if formatted:
            return  # already formatted: skip a JVM start
        cluster_id = self.cluster_id_file.read_text().strip()
        scram: list[str] = []
        if self.sasl:
            # The admin exists before the first start (KIP-900); everyone else is created
            # through it at provisioning (deploy/kafka_security.provision).
            if not self.secret_file.exists():
                write_private(self.secret_file, secrets.token_hex(32) + "\n")
            security = self.security
            assert security is not None
            password = security.admin.password.get_secret_value()
            scram = ["--add-scram", f"SCRAM-SHA-512=[name={ADMIN_USER},password={password}]"]
        self._write_properties()
        self._run_tool("format", "-t", cluster_id, "-c", str(self.properties_file), "--ignore-formatted", *scram)

    def read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        if self._proc is not None:
            # Our own child: alive until it exits. (Its command line is the parent's until
            # exec completes, so the check below would call a booting broker dead.)
            return self._proc.poll() is None
        pid = self.read_pid()
        # Our properties file path in the command line identifies this broker.
        return pid is not None and pid_alive(pid, cmdline_contains=str(self.properties_file))

    def start(self, deadline_s: float = 90) -> None:
        """Start the broker detached and return once it answers metadata requests."""
        if self.is_running():
            self.wait_ready(deadline_s)
            return
        if not (self.lib_dir / MARKER_JAR).exists():
            raise RuntimeError(f"{self.lib_dir / MARKER_JAR} missing; call KafkaBroker.fetch() first")
        self.home.mkdir(parents=True, exist_ok=True)
        self._format_storage()
        self._write_properties()
        with open(self.log_file, "ab") as log:
            # Own session: `make up` exits right after this and the broker must live on;
            # it also makes the broker a process-group leader for stop().
            self._proc = subprocess.Popen(
                self._java("kafka.Kafka", str(self.properties_file), jvm_opts=JVM_OPTS),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        try:
            self.wait_ready(deadline_s)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, deadline_s: float = 90) -> None:
        """Poll a real metadata request until the broker lists itself, or raise."""
        deadline = time.monotonic() + deadline_s
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if not self.is_running():
                raise RuntimeError(
                    f"Kafka broker exited during startup; tail of {self.log_file}:\n{tail(self.log_file)}"
                )
            try:
                # A cheap TCP probe first keeps aiokafka from logging a connection
                # error for every poll while the JVM is still booting.
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                if run_sync(_metadata_ok(self.access, timeout_s=5)):
                    return
            except Exception as exc:  # connection refused, timeouts: keep polling
                last_error = exc
            time.sleep(0.25)
        raise TimeoutError(
            f"Kafka broker at {self.bootstrap} not ready after {deadline_s}s "
            f"(last error: {last_error!r}); tail of {self.log_file}:\n{tail(self.log_file)}"
        )

    def stop(self, timeout: float = 30) -> None:
        pid = self._proc.pid if self._proc is not None else self.read_pid()
        if pid is not None and (self._proc is not None or pid_alive(pid, cmdline_contains=str(self.properties_file))):
            terminate_pid(pid, timeout)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)
            self._proc = None
        self.pid_file.unlink(missing_ok=True)


async def _metadata_ok(kafka: KafkaAccess, timeout_s: float) -> bool:
    """True once a metadata request succeeds and names at least one broker.

    In KRaft mode the PLAINTEXT port can accept connections before the broker is
    unfenced; an empty broker list means "not yet".
    """
    # Imported lazily: aiokafka is heavy and only needed for the readiness probe.
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(
        **kafka.options(),
        request_timeout_ms=int(timeout_s * 1000),
        metadata_max_age_ms=1000,
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        metadata = await asyncio.wait_for(client.fetch_all_metadata(), timeout_s)
        return len(metadata.brokers()) > 0
    finally:
        await client.close()
