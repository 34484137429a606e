"""The brokers of ``benchmarks/compare.py``: their contenders, topics and clean-up.

Every topic is declared by mqkit (``ensure_topic`` with the group ``g``) so that each
contender reads the same kind of queue, stream or topic: Kafka 4 partitions; RabbitMQ the
durable topic exchange ``mqkit`` and a durable classic queue ``<topic>:g``; JetStream a file
stream ``mqkit_<topic>`` and a durable pull consumer ``g``; SQS a standard queue (mqkit's
``mode=queue``, no SNS hop). Kombu's virtual transports (SQS, memory) declare their own
queue of the same kind, named after the topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
import confluent_kafka.admin as ck_admin
import nats
import pika
from compare_core import STAMP, Contender, Feed, Topic, is_peer
from compare_mqkit import IN_FLIGHT, Bare, BatchHandler, FullStack
from compare_peers import (
    FastStreamConfluent,
    FastStreamJetStream,
    FastStreamKafka,
    FastStreamNats,
    FastStreamRabbit,
    KombuRabbit,
    KombuSimple,
)
from compare_raw import (
    JetStreamRaw,
    KafkaRaw,
    KafkaRawRecord,
    NatsCoreRaw,
    QueueRaw,
    RabbitRaw,
    SqsRaw,
)
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from mqkit import registry
from mqkit.client import DLQ_GROUP
from mqkit.memory import MemoryTransport
from mqkit.transport import TopicSpec, Transport
from mqkit_nats.subjects import consumer_name, stream_name

MQKIT_GUARANTEE = {
    "kafka": "idempotent producer (acks=all, linger.ms=5), publish returns when every delivery "
             "report of the batch arrived, up to 200 batches of 500 in flight (the raw "
             "producer's 100,000-message window); consumer stores each acked offset, "
             "auto-commit",
    "rabbitmq": "publisher confirms for every message of the batch (pipelined), persistent, "
                "mandatory; manual ack per message",
    "nats": "at most once (NATS core): publish batch then flush (PING round trip)",
    "jetstream": "every PubAck of the batch awaited (pipelined), Nats-Msg-Id per message; "
                 "pull consumer, explicit ack per message",
    "sqs": "send_message_batch of 10, replies checked; receive 10, batched deletes after ack",
    "memory": "in process; publish returns once stored; ack per message",
}


@dataclass
class Broker:
    """One broker: its URL, default count and rounds, rates and the columns it runs."""

    name: str
    title: str
    url: str
    count: int
    latency_rate: float
    prefetch: int
    peers: tuple[str, ...]
    live_only: bool = False
    rounds: int = 3
    peer_rounds: int | None = None
    """Rounds the peer columns (FastStream, Kombu) run, the first ones; None: all."""
    in_flight: int = IN_FLIGHT
    """Batches of ``BATCH`` an mqkit column keeps publishing at once."""
    settle_s: float = 0.0
    """A pause after this broker's section, before the next broker's starts."""
    fixed_s: float = 3.0
    """Estimated seconds per column and round besides moving the messages: connecting,
    declaring, joining a group, the latency phase (a quiet 2-core machine)."""
    per_msg_s: float = 0.0
    """Estimated seconds per message of publish plus consume, averaged over the columns."""
    admin: Transport | None = None

    def rounds_of_peers(self, rounds: int) -> int:
        """How many of ``rounds`` the peer columns run."""
        return min(rounds, self.peer_rounds or rounds)

    def estimate(self, count: int, sizes: int, rounds: int) -> float:
        """Estimated wall seconds for this broker's part of a run."""
        contenders = self.contenders("")
        peers = sum(1 for contender in contenders if is_peer(contender))
        column_rounds = (len(contenders) - peers) * rounds + peers * self.rounds_of_peers(rounds)
        return sizes * column_rounds * (self.fixed_s + count * self.per_msg_s) + self.settle_s

    async def open(self) -> None:
        self.admin = registry.create(self.url)
        await self.admin.connect()

    async def close(self) -> None:
        if self.admin is not None:
            await self.admin.close()

    async def prepare(self, name: str) -> Topic:
        assert self.admin is not None
        topic = self.topic(name)
        await self.admin.ensure_topic(TopicSpec(name, groups=(topic.group,), partitions=4))
        return topic

    def topic(self, name: str) -> Topic:
        return Topic(name)

    async def drop(self, topic: Topic) -> None:
        return None

    def feed(self, topic: Topic, count: int, size: int) -> Feed:
        return None

    def contenders(self, redis_url: str) -> list[Contender]:
        guarantee = MQKIT_GUARANTEE[self.name]
        full = "; the Client acks after the handler returns (at least once)"
        found: list[Contender] = [
            self.raw(),
            Bare(self.url, self.prefetch, guarantee, self.in_flight),
            FullStack(self.url, self.prefetch, guarantee + full, "memory",
                      in_flight=self.in_flight),
            FullStack(self.url, self.prefetch, guarantee + full, "redis", redis_url,
                      in_flight=self.in_flight),
        ]
        if self.name == "kafka":
            found.append(BatchHandler(self.url, self.prefetch, guarantee + full,
                                      self.in_flight))
        found.extend(self.peer_contenders())
        return found

    def raw(self) -> Contender:
        raise NotImplementedError

    def peer_contenders(self) -> list[Contender]:
        return []


class Kafka(Broker):
    @property
    def bootstrap(self) -> str:
        return urlsplit(self.url).netloc

    @functools.cached_property
    def raw_admin(self) -> ck_admin.AdminClient:
        """One raw admin client for the run (offsets before each phase, topics after)."""
        return ck_admin.AdminClient({"bootstrap.servers": self.bootstrap})

    def raw(self) -> Contender:
        return KafkaRaw(self.bootstrap)

    def peer_contenders(self) -> list[Contender]:
        # Kombu is not measured on Kafka: Kombu does not support its Kafka transport well.
        return [KafkaRawRecord(self.bootstrap), FastStreamKafka(self.bootstrap),
                FastStreamConfluent(self.bootstrap)]

    def topic(self, name: str) -> Topic:
        """A group of the phase's own: a Kafka group spans topics, so with one group for
        every phase a consumer joined alongside members of earlier phases still leaving
        (the previous column's), and the rebalance that followed delayed its first records
        by ~130 ms in some rounds (a 50,000-message consume then measured 250k msgs/s
        instead of 850k)."""
        return Topic(name, group=f"g.{name}")

    async def prepare(self, name: str) -> Topic:
        """The topic, with the group's committed offsets at its start: every consume phase
        begins as a restarted service does. A brand-new group would first wait out
        librdkafka's fixed ~100 ms offset-reset backoff, which at these counts is most of
        the raw client's consume time: the ratio would then compare start-ups, not
        per-message costs."""
        topic = await super().prepare(name)
        start = ConsumerGroupTopicPartitions(
            topic.group, [TopicPartition(topic.name, p, 0) for p in range(4)]
        )
        for future in self.raw_admin.alter_consumer_group_offsets([start]).values():
            await asyncio.to_thread(future.result, 10)
        return topic

    async def drop(self, topic: Topic) -> None:
        """Delete the phase's topic and every topic named after it (its ``.dlq``, the retry
        topic of each group): a broker left with thousands of partitions from earlier runs
        fetches measurably slower, which moved the raw client's consume rate the most."""
        listed = await asyncio.to_thread(self.raw_admin.list_topics, None, 10)
        names = [name for name in listed.topics
                 if name == topic.name or name.startswith(f"{topic.name}.")]
        futures = list(self.raw_admin.delete_consumer_groups([topic.group]).values())
        if names:
            futures += self.raw_admin.delete_topics(names).values()
        for future in futures:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(future.result, 10)


class Rabbit(Broker):
    exchange = "mqkit"

    def raw(self) -> Contender:
        return RabbitRaw(self.url, self.prefetch)

    def peer_contenders(self) -> list[Contender]:
        return [FastStreamRabbit(self.url, self.prefetch), KombuRabbit(self.url, self.prefetch)]

    async def prepare(self, name: str) -> Topic:
        topic = await super().prepare(name)
        topic.extra.update(exchange=self.exchange, queue=f"{name}:g")
        return topic

    async def drop(self, topic: Topic) -> None:
        def run() -> None:
            conn = pika.BlockingConnection(pika.URLParameters(self.url))
            ch = conn.channel()
            for queue in (f"{topic.name}:g", f"{topic.name}.dlq:{DLQ_GROUP}"):
                ch.queue_delete(queue)
            conn.close()

        await asyncio.to_thread(run)


def nats_server(url: str) -> str:
    """``nats://host:port`` for nats-py from an mqkit nats:// or jetstream:// URL."""
    parts = urlsplit(url)
    return f"nats://{parts.netloc}"


class NatsCore(Broker):
    def raw(self) -> Contender:
        return NatsCoreRaw(nats_server(self.url))

    def peer_contenders(self) -> list[Contender]:
        return [FastStreamNats(nats_server(self.url))]

    def feed(self, topic: Topic, count: int, size: int) -> Feed:
        async def send() -> None:
            nc = await nats.connect(nats_server(self.url))
            body = b"x" * max(size, STAMP)
            try:
                for _ in range(count):
                    await nc.publish(topic.name, body)
                await nc.flush()
            finally:
                await nc.close()

        return send


class JetStream(Broker):
    def raw(self) -> Contender:
        return JetStreamRaw(nats_server(self.url), self.prefetch)

    def peer_contenders(self) -> list[Contender]:
        return [FastStreamJetStream(nats_server(self.url), self.prefetch)]

    async def prepare(self, name: str) -> Topic:
        topic = await super().prepare(name)
        topic.extra.update(stream=stream_name(name), durable=consumer_name("g"))
        return topic

    async def drop(self, topic: Topic) -> None:
        nc = await nats.connect(nats_server(self.url))
        js = nc.jetstream()
        for stream in (stream_name(topic.name), stream_name(f"{topic.name}.dlq")):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream)
        await nc.close()


class Sqs(Broker):
    @property
    def endpoint(self) -> str:
        return f"http://{urlsplit(self.url).netloc}"

    @property
    def region(self) -> str:
        return os.environ.get("AWS_DEFAULT_REGION", "us-east-1")

    def raw(self) -> Contender:
        return SqsRaw(self.endpoint, self.region)

    def peer_contenders(self) -> list[Contender]:
        return [KombuSimple(
            f"sqs://{urlsplit(self.url).netloc}", "Kombu (SQS)",
            "SimpleQueue.put: one send_message per message (Kombu has no batch send); get "
            "(long poll 1 s) and ack (delete) per message.",
            region=self.region, is_secure=False, wait_time_seconds=1,
        )]

    async def prepare(self, name: str) -> Topic:
        topic = await super().prepare(name)
        topology: Any = self.admin.topology  # type: ignore[union-attr]
        topic.extra["queue_url"] = await topology.queue_url(name, "g")
        return topic

    async def drop(self, topic: Topic) -> None:
        def run() -> None:
            sqs = boto3.client("sqs", endpoint_url=self.endpoint, region_name=self.region)
            with contextlib.suppress(Exception):
                sqs.delete_queue(QueueUrl=topic.extra["queue_url"])
            topology: Any = self.admin.topology  # type: ignore[union-attr]
            with contextlib.suppress(Exception):
                dlq = topology.queue_name(f"{topic.name}.dlq", DLQ_GROUP)
                sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=dlq)["QueueUrl"])

        await asyncio.to_thread(run)


class Memory(Broker):
    def raw(self) -> Contender:
        return QueueRaw()

    def peer_contenders(self) -> list[Contender]:
        return [KombuSimple(
            "memory://", "Kombu (memory://)",
            "SimpleQueue on Kombu's in-process transport: put, then get and ack per message.",
        )]

    async def drop(self, topic: Topic) -> None:
        # The in-memory broker keeps every topic's log: drop it so it does not weigh on later
        # phases.
        if isinstance(self.admin, MemoryTransport):
            for name in (topic.name, f"{topic.name}.dlq"):
                self.admin.broker.topics.pop(name, None)


def _with(url: str, **options: str) -> str:
    return url + ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in options.items())


BROKERS: dict[str, Callable[[], Broker]] = {
    # 30,000: at 10,000 a phase of mqkit's bare transport lasted ~15 ms and one hiccup in
    # it moved the pass ratio from 0.20 to 0.13 between runs.
    "memory": lambda: Memory(
        "memory", "memory://", "memory://", count=30_000, latency_rate=1000.0, prefetch=100,
        peers=("kombu",), fixed_s=2.3, per_msg_s=0.1e-3),
    "kafka": lambda: Kafka(
        "kafka", "Kafka", os.environ.get("MQKIT_KAFKA_URL", "kafka://127.0.0.1:9092"),
        count=50_000, latency_rate=1000.0, prefetch=2000, peers=("faststream",), rounds=5,
        # Five rounds: a consume phase of the raw client lasts 30-100 ms and its rate swung
        # 580k-1,860k msgs/s between runs, so its median needs more rounds than the others'.
        # FastStream runs two: it is 50-100x behind, and one of its rounds (~25 s) costs as
        # much as a round of all the other columns.
        peer_rounds=2,
        # The raw producer keeps up to 100,000 messages in flight (librdkafka's queue): so
        # do mqkit's columns, 200 batches of 500.
        in_flight=200, fixed_s=5.5, per_msg_s=0.035e-3,
        # The broker keeps busy after the section, most likely deleting the phases' topics,
        # which it defers by a minute (file.delete.delay.ms): the broker measured right after
        # paid for it (NATS core publish 0.44 of raw after Kafka, 0.74-0.85 on its own).
        settle_s=70.0),
    "rabbitmq": lambda: Rabbit(
        "rabbitmq", "RabbitMQ",
        os.environ.get("MQKIT_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
        count=2_000, latency_rate=1000.0, prefetch=256, peers=("faststream", "kombu"),
        fixed_s=2.3, per_msg_s=0.8e-3),
    "nats": lambda: NatsCore(
        "nats", "NATS core", os.environ.get("MQKIT_NATS_URL", "nats://127.0.0.1:4222"),
        count=20_000, latency_rate=1000.0, prefetch=1000, peers=("faststream",),
        live_only=True, fixed_s=3.0, per_msg_s=0.03e-3),
    "jetstream": lambda: JetStream(
        "jetstream", "JetStream",
        os.environ.get("MQKIT_JETSTREAM_URL", "jetstream://127.0.0.1:4222"),
        count=10_000, latency_rate=1000.0, prefetch=100, peers=("faststream",),
        fixed_s=3.0, per_msg_s=0.2e-3),
    # moto is slow (tens of msgs/s, each call costing O(queue depth)): few messages and a low
    # latency rate keep it to a few minutes; three rounds, as a 200-message phase is noisy.
    "sqs": lambda: Sqs(
        "sqs", "SQS (moto)", _with(os.environ.get(
            "MQKIT_SQS_URL", "sqs://127.0.0.1:5000?region=us-east-1"), mode="queue",
            wait_time="1"),
        count=200, latency_rate=10.0, prefetch=50, peers=("kombu",), rounds=3,
        fixed_s=3.0, per_msg_s=9e-3),
}
"""Name -> factory; the order is the order of the report."""
