"""Readiness probes for scripts/brokers (runs in the tools venv).

    probe.py check NAME...   one line per broker ("NAME up" / "NAME down: why");
                             exit 0 only if all answer
    probe.py wait NAME...    poll until each answers; print "NAME ready <s>" or
                             "NAME failed: why" as it happens; exit 1 if any failed

Each probe is a real round trip: a Kafka metadata request, an AMQP login, the
NATS JetStream health endpoint, a Redis PING, a SQL query as mqkit, an SQS call.
`wait` also watches the pid file in $MQKIT_BROKERS_RUN so that a broker that
dies is reported at once instead of at the time-out.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed

HOST = "127.0.0.1"
TIMEOUTS = {"kafka": 120, "rabbitmq": 120, "nats": 30, "redis": 30, "postgres": 60, "moto": 60}
QUIET = logging.getLogger("mqkit-probe")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


def kafka() -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": f"{HOST}:9092", "logger": QUIET, "log_level": 0})
    md = admin.list_topics(timeout=2)
    if not md.brokers:
        raise RuntimeError("metadata has no broker")


def rabbitmq() -> None:
    import pika

    logging.getLogger("pika").setLevel(logging.CRITICAL)
    params = pika.ConnectionParameters(
        HOST,
        5672,
        "/",
        pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        socket_timeout=2,
        blocked_connection_timeout=2,
    )
    pika.BlockingConnection(params).close()


def nats() -> None:
    url = f"http://{HOST}:8222/healthz?js-enabled-only=true"
    with urllib.request.urlopen(url, timeout=2) as resp:
        if resp.status != 200:
            raise RuntimeError(f"healthz {resp.status}")


def redis() -> None:
    with socket.create_connection((HOST, 6379), timeout=2) as s:
        s.sendall(b"PING\r\n")
        if not s.recv(64).startswith(b"+PONG"):
            raise RuntimeError("no PONG")


def postgres() -> None:
    env = dict(os.environ, PGPASSWORD="mqkit", PGCONNECT_TIMEOUT="2")
    out = subprocess.run(
        ["psql", "-h", HOST, "-p", "5432", "-U", "mqkit", "-d", "mqkit", "-tAc", "select 1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=5,
    )
    if out.stdout.strip() != "1":
        raise RuntimeError((out.stderr.strip().splitlines() or ["no answer"])[-1])


def moto() -> None:
    req = urllib.request.Request(
        f"http://{HOST}:5000/",
        data=b"Action=ListQueues&Version=2012-11-05",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(req, timeout=2) as resp:
        if resp.status != 200:
            raise RuntimeError(f"ListQueues {resp.status}")


PROBES = {f.__name__: f for f in (kafka, rabbitmq, nats, redis, postgres, moto)}
PORTS = {
    "kafka": 9092,
    "rabbitmq": 5672,
    "nats": 4222,
    "redis": 6379,
    "postgres": 5432,
    "moto": 5000,
}


def probe(name: str) -> str | None:
    """None when the broker answers, else a short reason."""
    try:
        socket.create_connection((HOST, PORTS[name]), timeout=1).close()  # fail fast if closed
        PROBES[name]()
        return None
    except Exception as exc:  # any failure means "not ready"
        return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


def pid_alive(name: str) -> bool | None:
    """True/False from our pid file; None when there is no pid file."""
    run = os.environ.get("MQKIT_BROKERS_RUN", "")
    try:
        with open(os.path.join(run, f"{name}.pid")) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_one(name: str, t0: float) -> str:
    """Poll one broker until it answers, its process exits or its time-out passes."""
    while True:
        why = probe(name)
        took = time.time() - t0
        if why is None:
            return f"{name} ready {took:.1f}"
        if pid_alive(name) is False:
            return f"{name} failed: process exited ({why})"
        if took > TIMEOUTS[name]:
            return f"{name} failed: not ready after {took:.0f}s ({why})"
        time.sleep(0.2)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("check", "wait") or not set(argv[1:]) <= PROBES.keys():
        print(__doc__, file=sys.stderr)
        return 2
    names = argv[1:]
    pool = ThreadPoolExecutor(len(names))
    if argv[0] == "check":
        results = list(pool.map(probe, names))
        for name, why in zip(names, results, strict=True):
            print(f"{name} up" if why is None else f"{name} down: {why}")
        return 1 if any(results) else 0

    t0 = float(os.environ.get("MQKIT_BROKERS_T0") or time.time())
    failed = False
    for done in as_completed([pool.submit(wait_one, name, t0) for name in names]):
        line = done.result()
        print(line, flush=True)
        failed |= " failed: " in line
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
