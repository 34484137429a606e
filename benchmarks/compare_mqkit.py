"""mqkit's contenders in ``benchmarks/compare.py``, the same code for every broker URL.

- ``Bare``: the transport alone: ``publish`` in batches of ``BATCH`` (each returns when the
  broker confirmed its batch), up to ``IN_FLIGHT`` batches at once as an asyncio producer
  would (the raw clients keep every message in flight until one final flush; on Kafka the
  window is the raw producer's own, librdkafka's 100,000-message queue), ``subscribe``
  and ack each delivery (SQS: ``take`` up to 10, then ``ack_many``, one
  ``DeleteMessageBatch``, as boto3's column deletes ten per call).
- ``FullStack``: the ``Client`` with the whole stack (logging, dead-letter, retry, then
  idempotency on an in-memory or a Redis store), ``publish_batch`` in batches of ``BATCH``
  (``IN_FLIGHT`` at once),
  a decorated handler run with ``CONCURRENCY`` in flight, acked after it returns.
- ``BatchHandler``: the ``Client`` with a batch handler (``batch_size=BATCH``): one call per
  list, each message acked after the call returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from compare_core import (
    BATCH,
    Clock,
    Feed,
    Topic,
    age,
    budget,
    paced,
    stamped,
    wait_for_event,
)

from mqkit import registry
from mqkit.bench_runners import ack_then_count
from mqkit.client import Client, default_middleware
from mqkit.message import Delivery, Message, new_id
from mqkit.middleware import Idempotency
from mqkit.middleware.base import Middleware
from mqkit.stores.base import IdempotencyStore
from mqkit.stores.memory import MemoryIdempotencyStore
from mqkit.stores.redis import RedisIdempotencyStore
from mqkit.transport import Transport

CONCURRENCY = 16
SETTLE = 0.5
"""Seconds a live-only consumer (NATS core) is given to subscribe before the feed starts."""
WARM_EVERY = 0.2


IN_FLIGHT = 8
"""Batches a publishing column keeps waiting for their confirms at once."""


async def in_batches(
    count: int, send: Callable[[int], Awaitable[object]], in_flight: int = IN_FLIGHT
) -> None:
    """``send(n)`` for batches of ``BATCH`` covering ``count``, ``in_flight`` at a time."""
    window = asyncio.Semaphore(in_flight)

    async def one(n: int) -> None:
        async with window:
            await send(n)

    await asyncio.gather(*(one(min(BATCH, count - start)) for start in range(0, count, BATCH)))


class Consuming:
    """Counts deliveries, sets ``done`` at ``count``. The clock was started when the
    subscription was ready; the first delivery starts it only if it won that race."""

    def __init__(self, count: int, clock: Clock | None) -> None:
        self.count, self.clock, self.got = count, clock, 0
        self.done = asyncio.Event()

    def seen(self, n: int = 1) -> None:
        if self.clock is not None and self.got == 0:
            self.clock.start()
        self.got += n
        if self.got >= self.count:
            if self.clock is not None:
                self.clock.stop()
            self.done.set()


class _Latency:
    """Collects ages of stamped bodies; a warm-up probe (not stamped) only sets ``ready``."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.ages: list[float] = []
        self.ready = asyncio.Event()
        self.done = asyncio.Event()

    def seen(self, body: bytes) -> None:
        if not body[:1].isdigit():
            self.ready.set()
            return
        self.ages.append(age(body))
        if len(self.ages) >= self.count:
            self.done.set()


async def warm(send_probe: Callable[[], Any], ready: asyncio.Event) -> None:
    """Send probes until the consumer saw one: its subscription is live and assigned."""
    for _ in range(int(60 / WARM_EVERY)):
        await send_probe()
        if await wait_for_event(ready, WARM_EVERY):
            return
    raise TimeoutError("the consumer never saw a warm-up probe")


async def _close(source: AsyncIterator[Delivery]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()


async def subscribed(source: AsyncIterator[Delivery]) -> None:
    """Until ``source`` is live: started (its optional ``start()``, as the Client does) and,
    on Kafka, assigned its partitions (``wait_assigned()``)."""
    start = getattr(source, "start", None)
    if start is not None:
        await start()
    wait_assigned = getattr(source, "wait_assigned", None)
    if wait_assigned is not None:
        await wait_assigned(60.0)


async def close_client(client: Client) -> None:
    """Close ``client`` and its transport, even when ``connect`` or ``start`` failed half way
    (``Client.close`` skips the transport of a client that never connected)."""
    try:
        await client.close()
    finally:
        await client.transport.close()


class Bare:
    key = "bare"
    label = "mqkit bare transport"

    def __init__(
        self, url: str, prefetch: int, guarantee: str, in_flight: int = IN_FLIGHT
    ) -> None:
        self.url, self.prefetch, self.guarantee = url, prefetch, guarantee
        self.in_flight = in_flight
        self.transport: Transport | None = None

    async def open(self) -> None:
        self.transport = registry.create(self.url)
        await self.transport.connect()

    async def close(self) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            await transport.close()

    def _t(self) -> Transport:
        assert self.transport is not None
        return self.transport

    async def publish(self, topic: Topic, count: int, body: bytes, clock: Clock) -> None:
        t = self._t()
        clock.start()
        await in_batches(
            count, lambda n: t.publish([Message(topic.name, body) for _ in range(n)]),
            self.in_flight,
        )
        clock.stop()

    async def _drain(
        self, topic: Topic, on_delivery: Callable[[Delivery], None], until: asyncio.Event,
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        source = self._t().subscribe(topic.name, topic.group, prefetch=self.prefetch)
        try:
            await subscribed(source)
            on_ready()
            if self.url.startswith("sqs"):
                await self._drain_batches(source, on_delivery, until)
                return
            async for delivery in source:
                on_delivery(delivery)
                await delivery.ack()
                if until.is_set():
                    return
        finally:
            await _close(source)

    @staticmethod
    async def _drain_batches(
        source: Any, on_delivery: Callable[[Delivery], None], until: asyncio.Event
    ) -> None:
        """SQS: an ack returns once its delete is confirmed, and boto3's column deletes ten
        per call, so this one settles the same way: ``take`` up to 10, handle each, then
        ``ack_many`` (one ``DeleteMessageBatch``)."""
        while not until.is_set():
            batch = await source.take(10, 1.0)
            for delivery in batch:
                on_delivery(delivery)
            if batch:
                await source.ack_many(batch)

    async def consume(self, topic: Topic, count: int, clock: Clock, feed: Feed) -> int:
        state = Consuming(count, clock)
        task = asyncio.create_task(
            self._drain(topic, lambda d: state.seen(), state.done, clock.start)
        )
        try:
            if feed is not None:
                await asyncio.sleep(SETTLE)
                await feed()
            await wait_for_event(state.done, budget(count))
        finally:
            await _cancel(task)
        return state.got

    async def latency(self, topic: Topic, count: int, size: int, rate: float) -> list[float]:
        t, state = self._t(), _Latency(count)
        task = asyncio.create_task(
            self._drain(topic, lambda d: state.seen(d.message.body), state.done)
        )
        try:
            await warm(lambda: t.publish([Message(topic.name, b"warm")]), state.ready)

            async def send(n: int) -> None:
                await t.publish([Message(topic.name, stamped(size)) for _ in range(n)])

            await paced(send, count, rate)
            await wait_for_event(state.done, budget(count))
        finally:
            await _cancel(task)
        return state.ages


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _delete_keys(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


class FullStack:
    """The ``Client`` with log, dead-letter, retry and idempotency on ``store_name``."""

    def __init__(
        self, url: str, prefetch: int, guarantee: str, store_name: str, redis_url: str = "",
        in_flight: int = IN_FLIGHT,
    ) -> None:
        self.url, self.prefetch, self.guarantee = url, prefetch, guarantee
        self.in_flight = in_flight
        self.store_name, self.redis_url = store_name, redis_url
        self.key = f"full-{store_name}"
        self.label = f"mqkit full stack, idempotency on {store_name}"
        self.client: Client | None = None
        self.stores: list[IdempotencyStore] = []
        # This contender's own keys, deleted at close: they live a week otherwise, and
        # millions of them left by earlier runs slow every SCAN on the shared Redis.
        self.redis_prefix = f"mqkit:bench:{new_id()[:12]}:"

    async def open(self) -> None:
        self.client = Client(self.url)
        await self.client.connect()

    async def close(self) -> None:
        client, self.client = self.client, None
        try:
            if client is not None:
                await close_client(client)
        finally:
            for store in self.stores:
                close = getattr(store, "close", None)
                if close is not None:
                    await close()
            self.stores.clear()
            if self.store_name == "redis":
                await _delete_keys(self.redis_url, self.redis_prefix)

    async def _store(self) -> IdempotencyStore:
        store: IdempotencyStore
        if self.store_name == "redis":
            store = await RedisIdempotencyStore.open(self.redis_url, prefix=self.redis_prefix)
        else:
            store = MemoryIdempotencyStore()
        self.stores.append(store)
        return store

    async def publish(self, topic: Topic, count: int, body: bytes, clock: Clock) -> None:
        client = self.client
        assert client is not None
        clock.start()
        await in_batches(
            count, lambda n: client.publish_batch(topic.name, [body] * n), self.in_flight
        )
        clock.stop()

    def _consumer(self) -> Client:
        """A Client for one phase's subscription."""
        return Client(self.url)

    def _register(
        self, client: Client, topic: Topic, on_settled: Callable[..., None],
        on_body: Callable[[bytes], None], stack: Sequence[Middleware],
    ) -> None:
        @client.subscribe(topic.name, group=topic.group, middleware=stack,
                          concurrency=CONCURRENCY, prefetch=self.prefetch)
        async def handle(body: bytes) -> None:
            on_body(body)

    async def _subscribed(
        self, client: Client, topic: Topic,
        on_settled: Callable[..., None], on_body: Callable[[bytes], None],
    ) -> None:
        """Register the handler on ``client``, start it and wait until it is live."""
        stack: Sequence[Middleware] = [
            ack_then_count(on_settled), *default_middleware(), Idempotency(await self._store())
        ]
        self._register(client, topic, on_settled, on_body, stack)
        await client.start()
        await client.wait_ready(60.0)

    async def consume(self, topic: Topic, count: int, clock: Clock, feed: Feed) -> int:
        state = Consuming(count, clock)
        client = self._consumer()
        try:
            await self._subscribed(client, topic, state.seen, lambda body: None)
            clock.start()
            if feed is not None:
                await asyncio.sleep(SETTLE)
                await feed()
            await wait_for_event(state.done, budget(count))
        finally:
            await close_client(client)
        return state.got

    async def latency(self, topic: Topic, count: int, size: int, rate: float) -> list[float]:
        assert self.client is not None
        publisher, state = self.client, _Latency(count)
        client = self._consumer()
        try:
            await self._subscribed(client, topic, lambda *_: None, state.seen)
            await warm(lambda: publisher.publish(topic.name, b"warm"), state.ready)

            async def send(n: int) -> None:
                await publisher.publish_batch(topic.name, [stamped(size) for _ in range(n)])

            await paced(send, count, rate)
            await wait_for_event(state.done, budget(count))
        finally:
            await close_client(client)
        return state.ages


class BatchHandler(FullStack):
    """The ``Client`` with a batch handler; publishing is ``FullStack``'s."""

    key = "batch"
    label = "mqkit batch handler"

    def __init__(
        self, url: str, prefetch: int, guarantee: str, in_flight: int = IN_FLIGHT
    ) -> None:
        super().__init__(url, prefetch, guarantee, "memory", in_flight=in_flight)
        self.key, self.label = BatchHandler.key, BatchHandler.label

    def _register(
        self, client: Client, topic: Topic, on_settled: Callable[..., None],
        on_body: Callable[[bytes], None], stack: Sequence[Middleware],
    ) -> None:
        @client.subscribe(topic.name, group=topic.group, batch_size=BATCH, batch_timeout=0.05,
                          prefetch=max(self.prefetch, 2 * BATCH))
        async def handle(bodies: list[bytes]) -> None:
            for body in bodies:
                on_body(body)
            # Acked after return: count the batch once the consumer settled it, with one
            # call, as the raw column counts once per consume call.
            asyncio.get_running_loop().call_soon(on_settled, len(bodies))

