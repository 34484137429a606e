"""The peer frameworks of ``benchmarks/compare.py``: FastStream and Kombu, where they fit.

FastStream (async) on Kafka (aiokafka and confluent-kafka), RabbitMQ (aio-pika), NATS core
and JetStream: a broker object with a decorated subscriber, as its documentation shows,
publishing through ``broker.publish``. Confirmed publishes are pipelined in windows of
``BATCH`` with ``asyncio.gather``, as mqkit pipelines a batch. A fresh FastStream broker per
phase, since subscribers are declared before ``start``. Kombu (blocking) on RabbitMQ
(py-amqp), SQS and its in-process ``memory://``, on worker threads. Kombu on Kafka is not
measured: its Kafka transport is a thin virtual transport that Kombu does not support well.
"""

from __future__ import annotations

import asyncio
import queue as stdlib_queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import kombu
from aiokafka import ConsumerRebalanceListener
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
from compare_raw import OnBody, _Counter
from faststream import AckPolicy
from faststream.confluent import KafkaBroker as ConfluentBroker
from faststream.kafka import KafkaBroker
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue

from mqkit.message import new_id
from mqkit_nats.headers import MSG_ID


# --- FastStream ----------------------------------------------------------------------------
class _FastStream(Idle):
    """One shape for every FastStream broker; subclasses say how to make, send, subscribe."""

    key = "faststream"
    assigns = False
    """True on Kafka: the subscriber is live once the group assigned it partitions, which
    ``_subscribe`` reports through ``self.assigned``, not when ``start()`` returns."""

    def _broker(self) -> Any:
        raise NotImplementedError

    def _send(self, broker: Any, topic: Topic, body: bytes) -> Awaitable[Any]:
        raise NotImplementedError

    def _subscribe(self, broker: Any, topic: Topic, handler: Callable[..., Any]) -> None:
        raise NotImplementedError

    async def _flush(self, broker: Any) -> None:
        return None

    async def publish(self, topic: Topic, count: int, body: bytes, clock: Clock) -> None:
        broker = self._broker()
        await broker.connect()
        try:
            clock.start()
            for start in range(0, count, BATCH):
                await asyncio.gather(
                    *(self._send(broker, topic, body) for _ in range(min(BATCH, count - start)))
                )
            await self._flush(broker)
            clock.stop()
        finally:
            await broker.stop()

    async def _started(self, topic: Topic, on_body: OnBody) -> Any:
        """A started broker with a subscriber on ``topic``, once that subscriber is live;
        stopped again if it never gets there."""
        broker = self._broker()
        self.assigned, self._loop = asyncio.Event(), asyncio.get_running_loop()

        async def handle(body: bytes) -> None:
            on_body(body)

        self._subscribe(broker, topic, handle)
        try:
            await broker.start()
            if self.assigns and not await wait_for_event(self.assigned, 60):
                raise TimeoutError("FastStream's subscriber was never assigned a partition")
        except BaseException:
            await broker.stop()
            raise
        return broker

    def _on_assigned(self) -> None:
        """For rebalance callbacks, which may run on another thread."""
        self._loop.call_soon_threadsafe(self.assigned.set)

    async def consume(self, topic: Topic, count: int, clock: Clock, feed: Feed) -> int:
        state = Consuming(count, clock)
        done = state.done

        def seen(_body: bytes) -> None:
            state.seen()

        broker = await self._started(topic, seen)
        clock.start()
        try:
            if feed is not None:
                await asyncio.sleep(SETTLE)
                await feed()
            await wait_for_event(done, budget(count))
        finally:
            await broker.stop()
        return state.got

    async def latency(self, topic: Topic, count: int, size: int, rate: float) -> list[float]:
        ages: list[float] = []
        ready, done = asyncio.Event(), asyncio.Event()

        def seen(body: bytes) -> None:
            if is_probe(body):
                ready.set()
            else:
                ages.append(age(body))
                if len(ages) >= count:
                    done.set()

        broker = await self._started(topic, seen)
        publisher = self._broker()
        try:
            await publisher.connect()
            await warm(lambda: self._sent(publisher, topic, [b"warm"]), ready)

            async def send(n: int) -> None:
                await self._sent(publisher, topic, [stamped(size) for _ in range(n)])

            await paced(send, count, rate)
            await wait_for_event(done, budget(count))
        finally:
            await publisher.stop()
            await broker.stop()
        return ages

    async def _sent(self, broker: Any, topic: Topic, bodies: list[bytes]) -> None:
        await asyncio.gather(*(self._send(broker, topic, body) for body in bodies))
        await self._flush(broker)


class _FastStreamOnKafka(_FastStream):
    """What FastStream's two Kafka drivers share: the bootstrap address and publishing."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    async def _send(self, broker: Any, topic: Topic, body: bytes) -> Any:
        future = await broker.publish(body, topic.name, no_confirm=True)
        return await future


class FastStreamKafka(_FastStreamOnKafka):
    label = "FastStream (aiokafka)"
    assigns = True
    guarantee = (
        "aiokafka producer: idempotent, acks=all, linger_ms=5; publish(no_confirm=True) "
        "futures awaited per window of 500. Subscriber: AckPolicy.ACK (commit after the "
        "handler, per message: FastStream's at-least-once mode)."
    )

    def _broker(self) -> Any:
        return KafkaBroker(self.bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                           logger=None)

    def _subscribe(self, broker: Any, topic: Topic, handler: Callable[..., Any]) -> None:
        broker.subscriber(topic.name, group_id=topic.group, auto_offset_reset="earliest",
                          ack_policy=AckPolicy.ACK, listener=_Assigned(self._on_assigned),
                          )(handler)


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's rebalance listener, reporting the first assignment."""

    def __init__(self, on_assigned: Callable[[], None]) -> None:
        self.on_assigned = on_assigned

    def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned:
            self.on_assigned()


class FastStreamConfluent(_FastStreamOnKafka):
    key = "faststream-confluent"
    label = "FastStream (confluent-kafka)"
    guarantee = (
        "confluent-kafka producer: idempotent, acks=all, linger.ms=5; publish(no_confirm=True) "
        "futures awaited per window of 500. Subscriber: AckPolicy.ACK (commit after the "
        "handler, per message)."
    )
    assigns = True

    def _broker(self) -> Any:
        return ConfluentBroker(self.bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                               logger=None)

    def _subscribe(self, broker: Any, topic: Topic, handler: Callable[..., Any]) -> None:
        broker.subscriber(topic.name, group_id=topic.group, auto_offset_reset="earliest",
                          ack_policy=AckPolicy.ACK,
                          on_assign=lambda _consumer, parts: parts and self._on_assigned(),
                          )(handler)


class FastStreamRabbit(_FastStream):
    label = "FastStream (aio-pika)"
    guarantee = (
        "aio-pika channel with publisher confirms (FastStream's default), persistent, "
        "mandatory; confirms pipelined in windows of 500. Subscriber acks after the handler."
    )

    def __init__(self, url: str, prefetch: int) -> None:
        self.url, self.prefetch = url, prefetch

    def _broker(self) -> Any:
        return RabbitBroker(self.url, default_channel=Channel(prefetch_count=self.prefetch),
                            logger=None)

    def _send(self, broker: Any, topic: Topic, body: bytes) -> Awaitable[Any]:
        exchange = RabbitExchange(topic.extra["exchange"], type=ExchangeType.TOPIC,
                                  durable=True, declare=False)
        return broker.publish(body, exchange=exchange, routing_key=topic.name, persist=True,
                              mandatory=True)

    def _subscribe(self, broker: Any, topic: Topic, handler: Callable[..., Any]) -> None:
        queue = RabbitQueue(topic.extra["queue"], durable=True, declare=False)
        broker.subscriber(queue, ack_policy=AckPolicy.REJECT_ON_ERROR)(handler)


class FastStreamNats(_FastStream):
    label = "FastStream (nats-py)"
    guarantee = (
        "At most once (NATS core): publish then a flush (PING round trip); a queue-group "
        "subscriber."
    )

    def __init__(self, server: str) -> None:
        self.server = server

    def _broker(self) -> Any:
        return NatsBroker(self.server, logger=None)

    def _send(self, broker: Any, topic: Topic, body: bytes) -> Awaitable[Any]:
        return broker.publish(body, topic.name)

    async def _flush(self, broker: Any) -> None:
        await broker._connection.flush()

    def _subscribe(self, broker: Any, topic: Topic, handler: Callable[..., Any]) -> None:
        broker.subscriber(topic.name, queue=topic.group)(handler)


class FastStreamJetStream(_FastStream):
    label = "FastStream (JetStream)"
    guarantee = (
        "publish(stream=...) awaits each PubAck, pipelined in windows of 500, a unique "
        "Nats-Msg-Id per message. Pull subscriber (its own durable, batch of prefetch), ack "
        "after the handler."
    )

    def __init__(self, server: str, prefetch: int) -> None:
        self.server, self.prefetch = server, prefetch

    def _broker(self) -> Any:
        return NatsBroker(self.server, logger=None)

    def _send(self, broker: Any, topic: Topic, body: bytes) -> Awaitable[Any]:
        return broker.publish(body, topic.name, stream=topic.extra["stream"],
                              headers={MSG_ID: new_id()})

    def _subscribe(self, broker: Any, topic: Topic, handler: Callable[..., Any]) -> None:
        broker.subscriber(
            topic.name, stream=JStream(topic.extra["stream"], declare=False),
            durable="faststream", pull_sub=PullSub(batch_size=self.prefetch, timeout=1.0),
            ack_policy=AckPolicy.REJECT_ON_ERROR,
        )(handler)


# --- Kombu ---------------------------------------------------------------------------------
class KombuRabbit(Idle):
    key = "kombu"
    label = "Kombu (py-amqp)"
    guarantee = (
        "confirm_publish=True: one confirm awaited per message (Kombu's only confirm mode), "
        "persistent. Consumer: drain_events, manual ack per message."
    )

    def __init__(self, url: str, prefetch: int) -> None:
        self.url, self.prefetch = url, prefetch

    def _connection(self) -> kombu.Connection:
        return kombu.Connection(self.url, transport_options={"confirm_publish": True})

    def _sender(self, conn: kombu.Connection, topic: Topic) -> Callable[[list[bytes]], None]:
        producer = conn.Producer(serializer="raw")
        exchange = kombu.Exchange(topic.extra["exchange"], type="topic", passive=True)

        def send(bodies: list[bytes]) -> None:
            for body in bodies:
                producer.publish(body, exchange=exchange, routing_key=topic.name,
                                 delivery_mode=2, declare=[], mandatory=True,
                                 content_type="application/octet-stream",
                                 content_encoding="binary")

        return send

    async def publish(self, topic: Topic, count: int, body: bytes, clock: Clock) -> None:
        def run() -> None:
            with self._connection() as conn:
                send = self._sender(conn, topic)
                clock.start()
                send([body] * count)
                clock.stop()

        await asyncio.to_thread(run)

    def _consume(self, queue: str, on_body: OnBody, keep_going: Callable[[], bool],
                 on_ready: Callable[[], None] = lambda: None) -> None:
        with kombu.Connection(self.url) as conn:
            def on_message(body: Any, message: Any) -> None:
                message.ack()
                on_body(message.body)

            with conn.Consumer(kombu.Queue(queue, no_declare=True), callbacks=[on_message],
                               prefetch_count=self.prefetch,
                               accept=["application/octet-stream", "application/json"]):
                on_ready()  # basic_consume issued
                while keep_going():
                    try:
                        conn.drain_events(timeout=0.05)
                    except TimeoutError:
                        continue

    async def consume(self, topic: Topic, count: int, clock: Clock, feed: Feed) -> int:
        counter = _Counter(count, clock)
        await asyncio.to_thread(self._consume, topic.extra["queue"],
                                lambda body: counter.add(1), lambda: counter.running, clock.start)
        return counter.got

    async def latency(self, topic: Topic, count: int, size: int, rate: float) -> list[float]:
        def consume_loop(on_body: OnBody, stop: threading.Event) -> None:
            self._consume(topic.extra["queue"], on_body, lambda: not stop.is_set())

        def run() -> list[float]:
            with self._connection() as conn:
                return sync_latency(consume_loop, self._sender(conn, topic), count, size, rate)

        return await asyncio.to_thread(run)


class KombuSimple(Idle):
    """Kombu's ``SimpleQueue`` on a virtual transport (SQS, memory): its own queue per topic."""

    key = "kombu"

    def __init__(self, url: str, label: str, guarantee: str, **options: Any) -> None:
        self.url, self.label, self.guarantee, self.options = url, label, guarantee, options

    def _connection(self) -> kombu.Connection:
        return kombu.Connection(self.url, transport_options=self.options)

    @staticmethod
    def _name(topic: Topic) -> str:
        return topic.name.replace(".", "-") + "-kombu"

    async def publish(self, topic: Topic, count: int, body: bytes, clock: Clock) -> None:
        def run() -> None:
            with self._connection() as conn:
                q = conn.SimpleQueue(self._name(topic), serializer="raw")
                clock.start()
                for _ in range(count):
                    q.put(body)
                clock.stop()
                q.close()

        await asyncio.to_thread(run)

    def _consume(self, topic: Topic, on_body: OnBody, keep_going: Callable[[], bool],
                 delete: bool, on_ready: Callable[[], None] = lambda: None) -> None:
        with self._connection() as conn:
            q = conn.SimpleQueue(self._name(topic))
            on_ready()
            while keep_going():
                try:
                    message = q.get(timeout=0.05)
                except stdlib_queue.Empty:
                    continue
                message.ack()
                on_body(message.body)
            if delete:
                q.queue.delete()
            q.close()

    async def consume(self, topic: Topic, count: int, clock: Clock, feed: Feed) -> int:
        counter = _Counter(count, clock)
        await asyncio.to_thread(self._consume, topic, lambda body: counter.add(1),
                                lambda: counter.running, True, clock.start)
        return counter.got

    async def latency(self, topic: Topic, count: int, size: int, rate: float) -> list[float]:
        def consume_loop(on_body: OnBody, stop: threading.Event) -> None:
            self._consume(topic, on_body, lambda: not stop.is_set(), False)

        def run() -> list[float]:
            with self._connection() as conn:
                q = conn.SimpleQueue(self._name(topic), serializer="raw")
                try:
                    return sync_latency(consume_loop, lambda bodies: [q.put(b) for b in bodies]
                                        and None, count, size, rate)
                finally:
                    q.clear()
                    q.queue.delete()
                    q.close()

        return await asyncio.to_thread(run)
