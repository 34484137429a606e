"""Broker-side facts for the pipeline: setup, backlog per group, CPU per process, cleanup.

Backlog is what the broker says a group has not finished:
- Kafka: lag from committed offsets (``mqkit_kafka.admin.Admin.lag``; offsets are
  committed every 500 ms, so a group that keeps up still shows up to ~0.5 s of orders);
- JetStream: the durable consumer's ``num_pending + num_ack_pending``;
- RabbitMQ: the group queue's ready messages (a passive declare; unacked ones in the
  consumer's prefetch are not counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import psycopg
from pipeline_orders import ROLES, RunNames

from mqkit import Client
from mqkit.url import BrokerURL

SCHEME_NAMES = {"kafka": "Kafka", "amqp": "RabbitMQ", "rabbitmq": "RabbitMQ",
                "jetstream": "JetStream"}
KAFKA_PARTITIONS = 6


def broker_of(url: str) -> str:
    return SCHEME_NAMES.get(BrokerURL.parse(url).scheme, BrokerURL.parse(url).scheme)


async def setup(url: str, postgres: str, names: RunNames) -> None:
    """Declare the topic with its three groups and the DLQ with the audit group; create the
    payments tables (keys UNIQUE; charges deliberately without, so doubles would show)."""
    async with Client(url) as client:
        extra: dict[str, Any] = {}
        if broker_of(url) == "Kafka":
            extra["partitions"] = KAFKA_PARTITIONS
        await client.ensure_topic(names.topic, groups=names.groups, **extra)
        await client.ensure_topic(names.dlq, groups=(names.group("audit"),))
    async with await psycopg.AsyncConnection.connect(postgres, autocommit=True) as conn:
        await conn.execute(f"CREATE TABLE {names.keys_table} (key text PRIMARY KEY)")
        await conn.execute(
            f"CREATE TABLE {names.charges_table} (id bigserial PRIMARY KEY, "
            "order_id text NOT NULL, n int NOT NULL, amount_cents int NOT NULL, "
            "charged_at timestamptz NOT NULL DEFAULT now())"
        )


class Backlog:
    """``await backlog.sample()`` -> {role: messages its group has not finished}."""

    def __init__(self, url: str, names: RunNames) -> None:
        self.url = url
        self.names = names
        self.broker = broker_of(url)
        self._state: Any = None

    async def sample(self) -> dict[str, int]:
        if self.broker == "Kafka":
            return await self._kafka()
        if self.broker == "JetStream":
            return await self._jetstream()
        return await asyncio.to_thread(self._rabbitmq)

    async def _kafka(self) -> dict[str, int]:
        from mqkit_kafka.admin import Admin
        from mqkit_kafka.config import KafkaConfig

        if self._state is None:
            self._state = Admin(KafkaConfig.from_url(BrokerURL.parse(self.url)))
        out = {}
        for role in ROLES:
            rows = await self._state.lag(self.names.topic, self.names.group(role))
            out[role] = sum(r.lag for r in rows)
        return out

    async def _jetstream(self) -> dict[str, int]:
        from mqkit_nats.subjects import consumer_name, subject

        if self._state is None:
            client = Client(self.url)
            await client.connect()
            js = client.transport.js  # type: ignore[attr-defined]
            stream = await js.find_stream_name_by_subject(subject(self.names.topic))
            self._state = (client, js, stream)
        _client, js, stream = self._state
        out = {}
        for role in ROLES:
            info = await js.consumer_info(stream, consumer_name(self.names.group(role)))
            out[role] = info.num_pending + info.num_ack_pending
        return out

    def _rabbitmq(self) -> dict[str, int]:
        import pika

        if self._state is None or not self._state.is_open:
            self._state = pika.BlockingConnection(pika.URLParameters(_amqp(self.url)))
        try:
            channel = self._state.channel()
        except Exception:  # the connection died (a broker restart): reconnect next time
            self._state = None
            raise
        try:
            return {
                role: channel.queue_declare(f"{self.names.topic}:{self.names.group(role)}",
                                            passive=True).method.message_count
                for role in ROLES
            }
        finally:
            channel.close()

    async def close(self) -> None:
        if self.broker == "JetStream" and self._state is not None:
            await self._state[0].close()
        elif self.broker == "RabbitMQ" and self._state is not None:
            await asyncio.to_thread(self._state.close)


# --- CPU per process ----------------------------------------------------------------------
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int, children: bool = False) -> float:
    """CPU seconds of ``pid`` (with its reaped children's, for a forking server)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def broker_pids(url: str) -> dict[str, int]:
    """The broker's and PostgreSQL's main processes, from ``scripts/brokers``' pid files."""
    run = Path(os.environ.get("MQKIT_BROKERS_HOME", Path.home() / ".cache/mqkit-brokers"),
               "run")
    files = {"Kafka": "kafka.pid", "RabbitMQ": "rabbitmq.beam.pid", "JetStream": "nats.pid"}
    pids = {}
    for label, name in ((broker_of(url), files.get(broker_of(url))), ("PostgreSQL",
                                                                        "postgres.pid")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            pids[label] = int((run / str(name)).read_text().split()[0])
    return pids


class CpuMeter:
    """CPU seconds used by each named process between ``start`` and ``stop``, and the whole
    machine's busy share (other users' load included: the machine is shared)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self._machine: tuple[float, float] = (0.0, 0.0)

    def _now(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            if name == "PostgreSQL":
                out[name] = _cpu_of(pid, children=True) + sum(map(_cpu_of, _children(pid)))
            else:
                out[name] = _cpu_of(pid)
        return out

    @staticmethod
    def _machine_now() -> tuple[float, float]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]
        return float(sum(values) - idle), float(sum(values))

    def start(self) -> None:
        self._start = self._now()
        self._machine = self._machine_now()

    def stop(self) -> tuple[dict[str, float], float]:
        now = self._now()
        busy, total = self._machine_now()
        share = (busy - self._machine[0]) / max(1.0, total - self._machine[1])
        return {k: now[k] - self._start.get(k, 0.0) for k in now}, share


# --- cleanup ------------------------------------------------------------------------------
async def cleanup(url: str, postgres: str, names: RunNames) -> None:
    """Remove the run's topics, streams or queues and its tables. Best effort."""
    broker = broker_of(url)
    try:
        if broker == "Kafka":
            await asyncio.to_thread(_kafka_cleanup, url, names)
        elif broker == "JetStream":
            await _jetstream_cleanup(url, names)
        else:
            await asyncio.to_thread(_rabbitmq_cleanup, url, names)
    except Exception as exc:  # leftovers are harmless: names are unique per run
        print(f"cleanup of {broker} left something behind: {exc}")
    async with await psycopg.AsyncConnection.connect(postgres, autocommit=True) as conn:
        for table in (names.keys_table, names.keys_table + "_store", names.charges_table):
            await conn.execute(f"DROP TABLE IF EXISTS {table}")


def _kafka_cleanup(url: str, names: RunNames) -> None:
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    hosts = ",".join(f"{h}:{p or 9092}" for h, p in BrokerURL.parse(url).hosts)
    admin = AdminClient({"bootstrap.servers": hosts})
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(names.topic)]
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        future.result()
    groups = [*names.groups, names.group("audit")]  # unique to this run
    for future in admin.delete_consumer_groups(groups).values():
        with contextlib.suppress(Exception):
            future.result()


async def _jetstream_cleanup(url: str, names: RunNames) -> None:
    from mqkit_nats.subjects import subject

    async with Client(url) as client:
        js = client.transport.js  # type: ignore[attr-defined]
        for topic in (names.topic, names.dlq):
            with contextlib.suppress(Exception):
                await js.delete_stream(await js.find_stream_name_by_subject(subject(topic)))


def _rabbitmq_cleanup(url: str, names: RunNames) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(_amqp(url)))
    channel = connection.channel()
    queues = [f"{names.topic}:{g}" for g in names.groups]
    queues += [f"{names.dlq}:{g}" for g in (names.group("audit"), "mqkit.dlq")]
    for queue in queues:
        channel.queue_delete(queue)
    connection.close()


def _amqp(url: str) -> str:
    raw = BrokerURL.parse(url).raw
    return "amqp://" + raw.split("://", 1)[1].split("?", 1)[0]
