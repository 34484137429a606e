"""The raw clients of ``benchmarks/compare.py``: each broker's own library, used directly.

Blocking clients (confluent-kafka, pika, boto3) run on worker threads, as an asyncio program
would run them; nats-py is async. Each uses the settings its column's guarantee states.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
import confluent_kafka as ck
import nats
import pika
from compare_core import (
    BATCH,
    Clock,
    Feed,
    Idle,
    Topic,
    age,
    budget,
    is_probe,
    paced,
    stamped,
    sync_latency,
    wait_for_event,
)
from compare_mqkit import SETTLE, Consuming, warm
from nats.js import JetStreamContext

from mqkit.message import new_id
from mqkit_nats.headers import MSG_ID

OnBody = Callable[[bytes], None]


class _Counter:
    """Counts received messages for a blocking consumer. The clock was started when the
    subscription was ready; the first message starts it only if it won that race."""

    def __init__(self, count: int, clock: Clock) -> None:
        self.count, self.clock, self.got = count, clock, 0
        self.deadline = time.monotonic() + budget(count)

    def add(self, n: int) -> None:
        if n and self.got == 0:
            self.clock.start()
        self.got += n
        if self.got >= self.count:
            self.clock.stop()

    @property
    def running(self) -> bool:
        return self.got < self.count and time.monotonic() < self.deadline


# --- Kafka: confluent-kafka ----------------------------------------------------------------
class KafkaRaw:
    key = "raw"
    label = "confluent-kafka"
    guarantee = (
        "Producer: idempotent, acks=all, linger.ms=5, flush() waits for every delivery report. "
        "Consumer: offsets stored after processing each poll of up to 1,000, auto-committed "
        "(at least once)."
    )

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.producer: ck.Producer | None = None

    async def open(self) -> None:
        # Connected before the clock starts, like mqkit's transport.
        self.producer = self._producer()
        await asyncio.to_thread(self.producer.list_topics, None, 10)

    async def close(self) -> None:
        if self.producer is not None:
            await asyncio.to_thread(self.producer.flush, 10)

    def _producer(self) -> ck.Producer:
        return ck.Producer({
            "bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5,
        })

    def _consumer(self, group: str) -> ck.Consumer:
        return ck.Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": group,
            "auto.offset.reset": "earliest", "enable.auto.offset.store": False,
            "partition.assignment.strategy": "cooperative-sticky",
        })

    @staticmethod
    def _produce(producer: ck.Producer, topic: str, body: bytes) -> None:
        while True:
            try:
                producer.produce(topic, body)
                return
            except BufferError:
                producer.poll(0.01)

    async def publish(self, topic: Topic, count: int, body: bytes, clock: Clock) -> None:
        producer = self.producer
        assert producer is not None

        def run() -> None:
            clock.start()
            for i in range(count):
                self._produce(producer, topic.name, body)
                if i % 1000 == 0:
                    producer.poll(0)
            if producer.flush(budget(count)):
                raise RuntimeError("confluent-kafka: deliveries left unconfirmed")
            clock.stop()

        await asyncio.to_thread(run)

    def _poll(self, consumer: ck.Consumer, topic: str, on_body: OnBody, wait: float) -> int:
        records = consumer.consume(1000, wait)
        last: dict[int, Any] = {}
        for record in records:
            if record.error() is None:
                on_body(record.value())
                last[record.partition()] = record
        if last:
            consumer.store_offsets(
                offsets=[ck.TopicPartition(topic, p, r.offset() + 1) for p, r in last.items()]
            )
        return sum(1 for r in records if r.error() is None)

    async def consume(self, topic: Topic, count: int, clock: Clock, feed: Feed) -> int:
        def run() -> int:
            consumer = self._consumer(topic.group)
            try:
                # The clock starts once the group assigned the partitions: librdkafka's
                # prefetch of the backlog is timed, as mqkit's is.
                consumer.subscribe([topic.name], on_assign=lambda c, parts: clock.start())
                counter = _Counter(count, clock)
                while counter.running:
                    counter.add(self._poll(consumer, topic.name, lambda body: None, 0.5))
                return counter.got
            finally:
                consumer.close()

        return await asyncio.to_thread(run)

    async def latency(self, topic: Topic, count: int, size: int, rate: float) -> list[float]:
        def consume_loop(on_body: OnBody, stop: threading.Event) -> None:
            consumer = self._consumer(topic.group)
            try:
                consumer.subscribe([topic.name])
                while not stop.is_set():
                    self._poll(consumer, topic.name, on_body, 0.05)
            finally:
                consumer.close()

        producer = self.producer
        assert producer is not None

        def send(bodies: list[bytes]) -> None:
            for body in bodies:
                self._produce(producer, topic.name, body)
            producer.poll(0)

        return await asyncio.to_thread(sync_latency, consume_loop, send, count, size, rate)


class KafkaRawRecord(KafkaRaw):
    """confluent-kafka producing the record mqkit produces: the ``x-mqkit-id`` header, the
    timestamp, and a delivery report per message handed to a callback (what a publish of a
    batch that returns when each message was acknowledged needs). The floor under mqkit's
    publish on this record, next to the plain raw column."""

    key = "raw-record"
    label = "confluent-kafka, mqkit's record"
    guarantee = (
        "As confluent-kafka, producing mqkit's record: x-mqkit-id header, CreateTime from the "
        "message, and a per-message delivery callback."
    )

    @staticmethod
    def _on_delivery(err: Any, msg: Any) -> None:
        """A report per message reaches Python, as mqkit's do (flush() checks the count)."""

    def _produce(self, producer: ck.Producer, topic: str, body: bytes) -> None:  # type: ignore[override]
        headers = [("x-mqkit-id", new_id().encode())]
        timestamp = int(time.time() * 1000)
        while True:
            try:
                producer.produce(topic, body, None, headers=headers, timestamp=timestamp,
                                 on_delivery=self._on_delivery)
                return
            except BufferError:
                producer.poll(0.01)


# --- RabbitMQ: pika ------------------------------------------------------------------------
PERSISTENT = pika.BasicProperties(delivery_mode=2)


class RabbitRaw(Idle):
    key = "raw"
    label = "pika BlockingConnection"
    guarantee = (
        "Publisher confirms on, one confirm awaited per message (pika's only confirm mode), "
        "persistent, mandatory. Consumer: basic_consume, manual ack per message."
    )

    def __init__(self, url: str, prefetch: int) -> None:
        self.url, self.prefetch = url, prefetch

    def _channel(self) -> tuple[pika.BlockingConnection, Any]:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        return conn, conn.channel()

    async def publish(self, topic: Topic, count: int, body: bytes, clock: Clock) -> None:
        def run() -> None:
            conn, ch = self._channel()
            try:
                ch.confirm_delivery()
                clock.start()
                for _ in range(count):
                    ch.basic_publish(topic.extra["exchange"], topic.name, body, PERSISTENT,
                                     mandatory=True)
                clock.stop()
            finally:
                conn.close()

        await asyncio.to_thread(run)

    def _consume(self, queue: str, on_body: OnBody, keep_going: Callable[[], bool],
                 on_ready: Callable[[], None] = lambda: None) -> None:
        conn, ch = self._channel()
        try:
            ch.basic_qos(prefetch_count=self.prefetch)

            def on_message(chan: Any, method: Any, _props: Any, body: bytes) -> None:
                on_body(body)
                chan.basic_ack(method.delivery_tag)

            ch.basic_consume(queue, on_message)  # returns on consume-ok
            on_ready()
            while keep_going():
                conn.process_data_events(time_limit=0.05)
        finally:
            conn.close()

    async def consume(self, topic: Topic, count: int, clock: Clock, feed: Feed) -> int:
        counter = _Counter(count, clock)
        await asyncio.to_thread(
            self._consume, topic.extra["queue"], lambda body: counter.add(1),
            lambda: counter.running, clock.start,
        )
        return counter.got

    async def latency(self, topic: Topic, count: int, size: int, rate: float) -> list[float]:
        def consume_loop(on_body: OnBody, stop: threading.Event) -> None:
            self._consume(topic.extra["queue"], on_body, lambda: not stop.is_set())

        def run() -> list[float]:
            conn, ch = self._channel()
            ch.confirm_delivery()

            def send(bodies: list[bytes]) -> None:
                for body in bodies:
                    ch.basic_publish(topic.extra["exchange"], topic.name, body, PERSISTENT,
                                     mandatory=True)

            try:
                return sync_latency(consume_loop, send, count, size, rate)
            finally:
                conn.close()

        return await asyncio.to_thread(run)


# --- NATS core and JetStream: nats-py ------------------------------------------------------
class NatsCoreRaw(Idle):
    key = "raw"
    label = "nats-py"
    guarantee = (
        "At most once (NATS core keeps nothing): publish, wait until nats-py wrote its buffer, "
        "then flush() (a PING round trip) so the server has every message; a queue-group "
        "subscriber with a callback."
    )

    def __init__(self, server: str) -> None:
        self.server = server

    async def _connect(self) -> Any:
        return await nats.connect(self.server, pending_size=64 * 1024 * 1024)

    async def publish(self, topic: Topic, count: int, body: bytes, clock: Clock) -> None:
        nc = await self._connect()
        try:
            clock.start()
            for _ in range(count):
                await nc.publish(topic.name, body)
            # flush() writes its PING ahead of the pending buffer: let the buffer go out
            # first, so the PONG follows every message (as mqkit's publish does).
            while nc.pending_data_size:  # noqa: ASYNC110
                await asyncio.sleep(0)
            await nc.flush()
            clock.stop()
        finally:
            await nc.close()

    async def _subscribe(self, nc: Any, topic: Topic, on_body: OnBody, pending: int) -> None:
        async def callback(msg: Any) -> None:
            on_body(msg.data)

        await nc.subscribe(topic.name, queue=topic.group, cb=callback,
                           pending_msgs_limit=pending)

    async def consume(self, topic: Topic, count: int, clock: Clock, feed: Feed) -> int:
        nc = await self._connect()
        state = Consuming(count, clock)
        done = state.done

        def seen(_body: bytes) -> None:
            state.seen()

        try:
            await self._subscribe(nc, topic, seen, count * 2)
            await asyncio.sleep(SETTLE)
            if feed is not None:
                await feed()
            await wait_for_event(done, budget(count))
        finally:
            await nc.close()
        return state.got

    async def latency(self, topic: Topic, count: int, size: int, rate: float) -> list[float]:
        sub, pub = await self._connect(), await self._connect()
        ages: list[float] = []
        ready, done = asyncio.Event(), asyncio.Event()

        def seen(body: bytes) -> None:
            if is_probe(body):
                ready.set()
            else:
                ages.append(age(body))
                if len(ages) >= count:
                    done.set()

        try:
            await self._subscribe(sub, topic, seen, count * 2)
            await warm(lambda: pub.publish(topic.name, b"warm"), ready)

            async def send(n: int) -> None:
                for _ in range(n):
                    await pub.publish(topic.name, stamped(size))
                await pub.flush()

            await paced(send, count, rate)
            await wait_for_event(done, budget(count))
        finally:
            await sub.close()
            await pub.close()
        return ages


class JetStreamRaw(Idle):
    key = "raw"
    label = "nats-py JetStream"
    guarantee = (
        "publish_async in windows of 500, every PubAck awaited, a unique Nats-Msg-Id per "
        "message (as mqkit sends). Pull consumer (explicit ack) on the durable mqkit "
        "declared, fetch(prefetch), ack each."
    )

    def __init__(self, server: str, prefetch: int) -> None:
        self.server, self.prefetch = server, prefetch

    async def _js(self) -> tuple[Any, JetStreamContext]:
        nc = await nats.connect(self.server)
        return nc, nc.jetstream()

    async def publish(self, topic: Topic, count: int, body: bytes, clock: Clock) -> None:
        nc, js = await self._js()
        try:
            clock.start()
            for start in range(0, count, BATCH):
                futures = [
                    await js.publish_async(topic.name, body, headers={MSG_ID: new_id()})
                    for _ in range(min(BATCH, count - start))
                ]
                await asyncio.gather(*futures)
            clock.stop()
        finally:
            await nc.close()

    async def _pull(self, topic: Topic, on_body: OnBody, stop: asyncio.Event,
                    wait: float, on_ready: Callable[[], None] = lambda: None) -> None:
        nc, js = await self._js()
        try:
            psub = await js.pull_subscribe_bind(durable=topic.extra["durable"],
                                                stream=topic.extra["stream"])
            on_ready()
            while not stop.is_set():
                try:
                    msgs = await psub.fetch(self.prefetch, timeout=wait)
                except nats.errors.TimeoutError:
                    continue
                for msg in msgs:
                    await msg.ack()
                    on_body(msg.data)
        finally:
            await nc.close()

    async def consume(self, topic: Topic, count: int, clock: Clock, feed: Feed) -> int:
        state = Consuming(count, clock)
        done = state.done

        def seen(_body: bytes) -> None:
            state.seen()

        task = asyncio.create_task(self._pull(topic, seen, done, 1.0, clock.start))
        try:
            await wait_for_event(done, budget(count))
        finally:
            done.set()
            await task
        return state.got

    async def latency(self, topic: Topic, count: int, size: int, rate: float) -> list[float]:
        nc, js = await self._js()
        ages: list[float] = []
        ready, done = asyncio.Event(), asyncio.Event()

        def seen(body: bytes) -> None:
            if is_probe(body):
                ready.set()
            else:
                ages.append(age(body))
                if len(ages) >= count:
                    done.set()

        task = asyncio.create_task(self._pull(topic, seen, done, 0.2))
        try:
            await warm(lambda: js.publish(topic.name, b"warm", headers={MSG_ID: new_id()}),
                       ready)

            async def send(n: int) -> None:
                futures = [
                    await js.publish_async(topic.name, stamped(size), headers={MSG_ID: new_id()})
                    for _ in range(n)
                ]
                await asyncio.gather(*futures)

            await paced(send, count, rate)
            await wait_for_event(done, budget(count))
        finally:
            done.set()
            await task
            await nc.close()
        return ages


# --- SQS: boto3 ----------------------------------------------------------------------------
class SqsRaw(Idle):
    key = "raw"
    label = "boto3"
    guarantee = (
        "send_message_batch of 10 (each reply checked for failures); receive_message of 10 "
        "(long poll 1 s), delete_message_batch after processing (at least once)."
    )

    def __init__(self, endpoint: str, region: str) -> None:
        self.endpoint, self.region = endpoint, region

    def _client(self) -> Any:
        return boto3.client("sqs", endpoint_url=self.endpoint, region_name=self.region)

    @staticmethod
    def _send(sqs: Any, queue_url: str, bodies: list[bytes]) -> None:
        for start in range(0, len(bodies), 10):
            entries = [{"Id": str(i), "MessageBody": body.decode()}
                       for i, body in enumerate(bodies[start:start + 10])]
            reply = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            if reply.get("Failed"):
                raise RuntimeError(f"boto3: {len(reply['Failed'])} sends failed")

    async def publish(self, topic: Topic, count: int, body: bytes, clock: Clock) -> None:
        def run() -> None:
            sqs = self._client()
            clock.start()
            self._send(sqs, topic.extra["queue_url"], [body] * count)
            clock.stop()

        await asyncio.to_thread(run)

    def _receive(self, sqs: Any, queue_url: str, on_body: OnBody) -> int:
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                    WaitTimeSeconds=1)
        messages = reply.get("Messages", [])
        for m in messages:
            on_body(m["Body"].encode())
        if messages:
            sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages)
            ])
        return len(messages)

    async def consume(self, topic: Topic, count: int, clock: Clock, feed: Feed) -> int:
        def run() -> int:
            sqs, counter = self._client(), _Counter(count, clock)
            clock.start()  # nothing to subscribe to: the first receive is the start
            while counter.running:
                counter.add(self._receive(sqs, topic.extra["queue_url"], lambda body: None))
            return counter.got

        return await asyncio.to_thread(run)

    async def latency(self, topic: Topic, count: int, size: int, rate: float) -> list[float]:
        queue_url = topic.extra["queue_url"]

        def consume_loop(on_body: OnBody, stop: threading.Event) -> None:
            sqs = self._client()
            while not stop.is_set():
                self._receive(sqs, queue_url, on_body)

        def run() -> list[float]:
            sqs = self._client()
            return sync_latency(consume_loop, lambda bodies: self._send(sqs, queue_url, bodies),
                                count, size, rate)

        return await asyncio.to_thread(run)


# --- memory: asyncio.Queue -----------------------------------------------------------------
class QueueRaw(Idle):
    key = "raw"
    label = "asyncio.Queue"
    guarantee = "In process, nothing to confirm: put() then get() + task_done() per message."

    def __init__(self) -> None:
        self.queues: dict[str, asyncio.Queue[bytes]] = {}

    async def publish(self, topic: Topic, count: int, body: bytes, clock: Clock) -> None:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.queues[topic.name] = queue
        clock.start()
        for _ in range(count):
            await queue.put(body)
        clock.stop()

    async def consume(self, topic: Topic, count: int, clock: Clock, feed: Feed) -> int:
        queue = self.queues.pop(topic.name)
        clock.start()
        for _ in range(count):
            await queue.get()
            queue.task_done()
        clock.stop()
        return count

    async def latency(self, topic: Topic, count: int, size: int, rate: float) -> list[float]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)
        ages: list[float] = []

        async def consume() -> None:
            while len(ages) < count:
                ages.append(age(await queue.get()))
                queue.task_done()

        async def send(n: int) -> None:
            for _ in range(n):
                await queue.put(stamped(size))

        task = asyncio.create_task(consume())
        await paced(send, count, rate)
        await asyncio.wait_for(task, budget(count))
        return ages
