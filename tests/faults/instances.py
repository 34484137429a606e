"""Dedicated broker instances that fault tests may kill, freeze and restart.

The shared brokers of ``scripts/brokers`` serve every other test, so fault tests never touch
them. ``start_instance`` launches a private Kafka (KRaft), RabbitMQ or NATS (JetStream) from
the same installation, on free ports of its own and a data dir under ``workdir``; the instance
runs in its own session so ``kill``/``freeze`` reach every process of it (RabbitMQ's port
helpers make sessions of their own: they are found by parentage).

    inst = start_instance("kafka", tmp_path)
    inst.url()              # kafka://127.0.0.1:PORT
    inst.restart()          # SIGKILL, then start again on the same ports and data
    inst.stop()

Session fixtures ``dedicated_kafka``, ``dedicated_rabbitmq`` and ``dedicated_nats`` start one
of each lazily; every instance is also stopped at interpreter exit.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MQKIT_BROKERS_HOME", Path.home() / ".cache" / "mqkit-brokers"))
KAFKA_TEMPLATE = ROOT / "scripts" / "brokers.d" / "kafka"
NATS_SERVER = CACHE / "tools" / "bin" / "nats-server"
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
EPMD_PORT = 4369
# Small heap and C1 only: the JVM starts faster on a busy 2-core machine.
KAFKA_JVM = [
    "-Xms128m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
]

_running: list[BrokerInstance] = []


class BrokerUnavailable(RuntimeError):
    """The broker's installation is missing or it did not come up in time."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (whatever session it made for itself)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class BrokerInstance:
    """One private broker process tree. See the module docstring."""

    def __init__(self, name: str, workdir: Path, port: int) -> None:
        self.name = name
        self.port = port
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.start_seconds: list[float] = []
        """How long each ``start`` took until the broker answered."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._tree: dict[int, str] = {}

    def __repr__(self) -> str:
        return f"<BrokerInstance {self.name} 127.0.0.1:{self.port}>"

    # --- what each broker defines ----------------------------------------------------------
    def url(self, scheme: str | None = None) -> str:
        raise NotImplementedError

    def _command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Once before each start: config files, storage format."""

    def _answers(self) -> bool:
        raise NotImplementedError

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60) -> None:
        """Launch and block until the broker answers a real request."""
        if self.running:
            return
        began = time.monotonic()
        self._prepare()
        command, env = self._command()
        with self.log_path.open("ab") as log:
            log.write(f"=== {time.strftime('%T')} start: {' '.join(command)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **env}, cwd=self.workdir, start_new_session=True,
            )
        if self not in _running:
            _running.append(self)
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerUnavailable(f"{self.name} exited at start; log:\n{self._log_tail()}")
            if self._answers():
                self.start_seconds.append(time.monotonic() - began)
                self._tree = self._members()
                return
            time.sleep(0.2)
        self.kill()
        raise BrokerUnavailable(f"{self.name} did not answer within {timeout:g}s; log:\n"
                                f"{self._log_tail()}")

    def _members(self) -> dict[int, str]:
        """pid -> start time of every live process of the instance (a pid that was recycled
        for another program is not ours: its start time differs)."""
        proc = self._proc
        if proc is None:
            return {}
        found = {pid: st for pid, st in self._tree.items() if _starttime(pid) == st}
        if proc.poll() is None:
            for pid in (proc.pid, *_children(proc.pid)):
                st = _starttime(pid)
                if st is not None:
                    found[pid] = st
        return found

    def _signal(self, sig: int) -> dict[int, str]:
        proc = self._proc
        members = self._members()
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        return members

    def kill(self) -> None:
        """SIGKILL every process of the instance and wait until they are gone."""
        proc = self._proc
        if proc is None:
            return
        members = self._signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        # Helpers with a session of their own are reaped by init: wait until they are gone.
        while any(_starttime(pid) == st for pid, st in members.items()):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self._proc = None
        self._tree = {}

    def restart(self) -> None:
        """``kill`` then ``start``: same ports, same data."""
        self.kill()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: the sockets stay open, nothing answers."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM, a few seconds' grace, then ``kill``. The data dir is left in place."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.thaw()
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.kill()
        if self in _running:
            _running.remove(self)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _starttime(pid: int) -> str | None:
    """The start time of a live (not zombie) process, else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


# --- Kafka ----------------------------------------------------------------------------------
def kafka_jars() -> Path:
    """The class path ``scripts/brokers`` installed (its dir is named after pom.xml's hash)."""
    import hashlib

    pom = KAFKA_TEMPLATE / "pom.xml"
    # Same as the script: sha256 of `sha256sum FILE`'s output line.
    line = f"{hashlib.sha256(pom.read_bytes()).hexdigest()}  {pom}\n"
    wanted = CACHE / f"kafka-{hashlib.sha256(line.encode()).hexdigest()[:12]}"
    if (wanted / ".complete").exists():
        return wanted / "jars"
    installed = sorted(CACHE.glob("kafka-*/.complete"), key=lambda p: p.stat().st_mtime)
    if not installed:
        raise BrokerUnavailable("no Kafka installation: run scripts/brokers up kafka")
    return installed[-1].parent / "jars"


class KafkaInstance(BrokerInstance):
    def __init__(self, workdir: Path, port: int, controller_port: int,
                 advertised_port: int | None) -> None:
        super().__init__("kafka", workdir, port)
        self.controller_port = controller_port
        self.advertised_port = advertised_port or port
        self.jars = kafka_jars()
        self.data = workdir / "data"
        self.properties = workdir / "server.properties"

    def url(self, scheme: str | None = None) -> str:
        return f"{scheme or 'kafka'}://127.0.0.1:{self.advertised_port}"

    def _java(self) -> list[str]:
        return [
            "java", *KAFKA_JVM,
            f"-Dlog4j2.configurationFile={KAFKA_TEMPLATE / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir}", "-cp", f"{self.jars}/*",
        ]

    def _prepare(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        text = (KAFKA_TEMPLATE / "server.properties.in").read_text()
        text = (text.replace("@DATA@", str(self.data))
                .replace("127.0.0.1:9093", f"127.0.0.1:{self.controller_port}")
                .replace("PLAINTEXT://127.0.0.1:9092,CONTROLLER",
                         f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER", 1)
                .replace("PLAINTEXT://127.0.0.1:9092",
                         f"PLAINTEXT://127.0.0.1:{self.advertised_port}"))
        # After a SIGKILL the new incarnation can register only once the controller expired
        # the old one's session (default 9 s): shorter, so a restart takes seconds.
        text += "broker.session.timeout.ms=3000\nbroker.heartbeat.interval.ms=500\n"
        self.properties.write_text(text)
        if not (self.data / "meta.properties").exists():
            cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            done = subprocess.run(
                # "--cluster-id=": an id may begin with "-", which would read as an option.
                [*self._java(), "kafka.tools.StorageTool", "format", "--standalone",
                 f"--cluster-id={cluster}", "--config", str(self.properties)],
                capture_output=True, timeout=120, check=False,
            )
            if done.returncode:
                raise BrokerUnavailable(f"kafka storage format failed: {done.stderr[-2000:]!r}")

    def _command(self) -> tuple[list[str], dict[str, str]]:
        return [*self._java(), "kafka.Kafka", str(self.properties)], {}

    def _answers(self) -> bool:
        if not port_open(self.port):
            return False
        from confluent_kafka.admin import AdminClient

        # Metadata from the real port; the advertised one may be a proxy not up yet.
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{self.port}",
                             "socket.connection.setup.timeout.ms": 1000})
        try:
            meta = admin.list_topics(timeout=2)
        except Exception:
            return False
        return bool(meta.brokers) and meta.controller_id >= 0


# --- RabbitMQ -------------------------------------------------------------------------------
class RabbitInstance(BrokerInstance):
    def __init__(self, workdir: Path, port: int, dist_port: int) -> None:
        super().__init__("rabbitmq", workdir, port)
        self.dist_port = dist_port
        # Unique per instance: several sessions may run fault tests side by side.
        self.node = f"mqkitfault{port}@localhost"
        self._epmd: subprocess.Popen[bytes] | None = None

    def url(self, scheme: str | None = None) -> str:
        return f"{scheme or 'amqp'}://guest:guest@127.0.0.1:{self.port}/%2F"

    def _prepare(self) -> None:
        if not RABBITMQ_SERVER.exists():
            raise BrokerUnavailable("no RabbitMQ installation: run scripts/brokers up rabbitmq")
        (self.workdir / "enabled_plugins").write_text("[].\n")
        (self.workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "log.console = true\nlog.console.level = warning\nlog.file = false\n"
            "disk_free_limit.absolute = 50MB\n"
        )
        if not port_open(EPMD_PORT) and (self._epmd is None or self._epmd.poll() is not None):
            # Normally the shared broker's epmd; otherwise one of our own, outside the
            # instance's process group so that kill() leaves the name server alone.
            self._epmd = subprocess.Popen(
                ["epmd", "-address", "127.0.0.1", "-port", str(EPMD_PORT)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for _ in range(50):
                if port_open(EPMD_PORT):
                    break
                time.sleep(0.05)

    def _command(self) -> tuple[list[str], dict[str, str]]:
        d = str(self.workdir)
        return [str(RABBITMQ_SERVER)], {
            "HOME": d, "RABBITMQ_CONF_ENV_FILE": "/dev/null",
            "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1", "ERL_EPMD_PORT": str(EPMD_PORT),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": f"{d}/mnesia", "RABBITMQ_LOG_BASE": d, "RABBITMQ_LOGS": "-",
            "RABBITMQ_CONFIG_FILE": f"{d}/rabbitmq.conf",
            "RABBITMQ_ADVANCED_CONFIG_FILE": f"{d}/advanced.config",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{d}/enabled_plugins",
            "RABBITMQ_PID_FILE": f"{d}/rabbitmq.pid", "RUNNING_UNDER_SYSTEMD": "1",
        }

    def _answers(self) -> bool:
        if not port_open(self.port):
            return False
        import pika

        params = pika.URLParameters(self.url() + "?connection_attempts=1&socket_timeout=2")
        try:
            pika.BlockingConnection(params).close()
        except Exception:
            return False
        return True

    def stop(self) -> None:
        super().stop()
        if self._epmd is not None:
            self._epmd.kill()
            self._epmd.wait()
            self._epmd = None


# --- NATS -----------------------------------------------------------------------------------
class NatsInstance(BrokerInstance):
    def __init__(self, workdir: Path, port: int) -> None:
        super().__init__("nats", workdir, port)

    def url(self, scheme: str | None = None) -> str:
        return f"{scheme or 'nats'}://127.0.0.1:{self.port}"

    def _prepare(self) -> None:
        if not NATS_SERVER.exists():
            raise BrokerUnavailable("no nats-server: run scripts/brokers up nats")

    def _command(self) -> tuple[list[str], dict[str, str]]:
        return [str(NATS_SERVER), "-js", "-sd", str(self.workdir / "jetstream"),
                "-a", "127.0.0.1", "-p", str(self.port)], {}

    def _answers(self) -> bool:
        """JetStream answers its account-info request (the store is recovered)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.settimeout(2)
                reader = s.makefile("rb")
                if not reader.readline().startswith(b"INFO"):
                    return False
                connect = json.dumps({"verbose": False, "headers": True, "no_responders": True})
                s.sendall(f"CONNECT {connect}\r\nSUB _probe.r 1\r\n"
                          "PUB $JS.API.INFO _probe.r 0\r\n\r\n".encode())
                for _ in range(20):
                    line = reader.readline()
                    if line.startswith(b"PING"):
                        s.sendall(b"PONG\r\n")
                    elif line.startswith((b"MSG", b"HMSG")):
                        size = int(line.split()[-1])
                        data = reader.read(size + 2)
                        return b"account_info_response" in data and b'"error"' not in data
                    elif not line:
                        return False
        except OSError:
            return False
        return False


def start_instance(name: str, workdir: Path, *, port: int | None = None,
                   advertised_port: int | None = None) -> BrokerInstance:
    """Start a dedicated ``name`` ("kafka", "rabbitmq" or "nats") with its data in
    ``workdir``. ``advertised_port`` (Kafka only) is the port clients are told to use."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if advertised_port is not None and name != "kafka":
        raise ValueError("advertised_port applies to Kafka only")
    instance: BrokerInstance
    if name == "kafka":
        instance = KafkaInstance(workdir, port or free_port(), free_port(), advertised_port)
    elif name == "rabbitmq":
        instance = RabbitInstance(workdir, port or free_port(), free_port())
    elif name == "nats":
        instance = NatsInstance(workdir, port or free_port())
    else:
        raise ValueError(f"unknown broker {name!r} (kafka, rabbitmq, nats)")
    instance.start()
    return instance


@atexit.register
def _stop_all() -> None:
    for instance in list(_running):
        with contextlib.suppress(Exception):
            instance.stop()


# --- pytest fixtures ------------------------------------------------------------------------
_shared: dict[str, BrokerInstance] = {}
"""One instance per broker for the session. Test modules import the fixtures, and pytest
makes each import a fixture of its own: without this, each module would start its own."""


def _dedicated(name: str, factory: pytest.TempPathFactory) -> Iterator[BrokerInstance]:
    instance = _shared.get(name)
    try:
        if instance is None:
            instance = _shared[name] = start_instance(name, factory.mktemp(f"dedicated-{name}"))
        elif not instance.running:
            instance.start()
    except BrokerUnavailable as exc:
        if os.environ.get("MQKIT_REQUIRE_BROKERS") == "1":
            pytest.fail(f"dedicated {name}: {exc}")
        pytest.skip(f"dedicated {name}: {exc}")
    try:
        yield instance
    finally:
        instance.stop()  # at the session's end (safe to call twice)


@pytest.fixture(scope="session")
def dedicated_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInstance]:
    yield from _dedicated("kafka", tmp_path_factory)


@pytest.fixture(scope="session")
def dedicated_rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInstance]:
    yield from _dedicated("rabbitmq", tmp_path_factory)


@pytest.fixture(scope="session")
def dedicated_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInstance]:
    yield from _dedicated("nats", tmp_path_factory)
