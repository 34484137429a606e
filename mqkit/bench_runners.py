"""The mqkit contenders of ``mqkit bench``: (a) the bare transport, (b) the full ``Client``.

Each runner measures two separate phases and knows nothing of rounds, medians or tables
(``mqkit.bench`` does that; the baselines live in ``mqkit.bench_baselines``):

- ``throughput(count, size, tag)``: a consumer is started, then ``count`` messages of ``size``
  bytes are published; the clock (wall and process CPU) starts at the first publish and
  stops at the last ack. The publish clock stops when the last publish call returned, so
  publish msgs/s is what the producer saw while the consumer ran beside it.
- ``latency(count, size, rate, tag)``: messages are published at a fixed ``rate``; returns,
  for each one, seconds from its publish timestamp to the start of its handler.

Runners create fresh topics (named by ``tag``) and, on ``memory://``, drop them afterwards
so one phase's retained log does not weigh on the next. Not safe to run two at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mqkit import registry
from mqkit.client import Client, default_middleware
from mqkit.memory import MemoryTransport
from mqkit.message import Delivery, Message
from mqkit.middleware import Idempotency
from mqkit.middleware.base import Handler, Middleware
from mqkit.stores.memory import MemoryIdempotencyStore
from mqkit.transport import TopicSpec, Transport

BATCH = 500
"""Messages per publish call (bare transport and client)."""
PREFETCH = 100
GROUP = "bench"
PACE_TICK = 0.0005
"""Seconds the paced producer sleeps between bursts in the latency phase."""


@dataclass(frozen=True)
class Throughput:
    """One throughput phase: seconds are wall-clock from the first publish."""

    count: int
    consumed: int
    publish_seconds: float
    total_seconds: float
    cpu_seconds: float


class Runner(Protocol):
    key: str
    label: str

    async def throughput(self, count: int, size: int, tag: str) -> Throughput: ...

    async def latency(self, count: int, size: int, rate: float, tag: str) -> list[float]: ...


class Stopwatch:
    """Wall and process-CPU time from ``start`` to ``published`` and ``done``."""

    def __init__(self) -> None:
        self._t0 = self._c0 = 0.0
        self.published = self.done = self.cpu = 0.0
        self.stopped = False

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()

    def mark_published(self) -> None:
        self.published = time.perf_counter() - self._t0

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.done = time.perf_counter() - self._t0
            self.cpu = time.process_time() - self._c0

    def result(self, count: int, consumed: int) -> Throughput:
        self.stop()
        return Throughput(count, consumed, self.published, self.done, self.cpu)


def wait_budget(count: int) -> float:
    """Seconds to wait for the last message before giving up on a phase."""
    return 60.0 + count / 500


async def _wait(event: asyncio.Event, count: int) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), wait_budget(count))


async def paced(send: Callable[[int], Awaitable[None]], count: int, rate: float) -> None:
    """Call ``send(n)`` with the messages due so far, so ``count`` go out at ``rate``/s."""
    start = time.perf_counter()
    sent = 0
    while sent < count:
        due = min(count, int((time.perf_counter() - start) * rate) + 1)
        if due > sent:
            await send(due - sent)
            sent = due
        await asyncio.sleep(PACE_TICK)


def _forget(transport: Transport, *topics: str) -> None:
    """Drop benchmark topics from an in-memory broker (their logs hold every message)."""
    if isinstance(transport, MemoryTransport):
        for topic in topics:
            transport.broker.topics.pop(topic, None)


async def _close_source(source: AsyncIterator[Delivery]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()


class BareTransport:
    """(a) The transport alone: batches of ``BATCH`` per publish, ack on each delivery."""

    key = "bare"
    label = "(a) bare transport, batches of 500, ack each"

    def __init__(self, url: str) -> None:
        self.url = url

    async def _open(self, topic: str) -> Transport:
        transport = registry.create(self.url)
        await transport.connect()
        await transport.ensure_topic(TopicSpec(topic, groups=(GROUP,)))
        return transport

    async def _run(
        self, topic: str, count: int, on_delivery: Callable[[Delivery], None],
        publish: Callable[[Transport], Awaitable[None]], watch: Stopwatch,
    ) -> int:
        transport = await self._open(topic)
        source = transport.subscribe(topic, GROUP, prefetch=PREFETCH)
        done = asyncio.Event()
        consumed = 0

        async def consume() -> None:
            nonlocal consumed
            async for delivery in source:
                on_delivery(delivery)
                await delivery.ack()
                consumed += 1
                if consumed >= count:
                    watch.stop()
                    done.set()
                    return

        task = asyncio.create_task(consume())
        try:
            await _warm_up(transport)
            watch.start()
            await publish(transport)
            watch.mark_published()
            await _wait(done, count)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await _close_source(source)
            await transport.close()
            _forget(transport, topic)
        return consumed

    async def throughput(self, count: int, size: int, tag: str) -> Throughput:
        topic = f"{tag}.bare"
        body = b"x" * size
        watch = Stopwatch()

        async def publish(transport: Transport) -> None:
            for start in range(0, count, BATCH):
                n = min(BATCH, count - start)
                await transport.publish([Message(topic, body) for _ in range(n)])

        consumed = await self._run(topic, count, lambda d: None, publish, watch)
        return watch.result(count, consumed)

    async def latency(self, count: int, size: int, rate: float, tag: str) -> list[float]:
        topic = f"{tag}.bare-latency"
        body = b"x" * size
        seen: list[float] = []

        def record(delivery: Delivery) -> None:
            seen.append(time.time() - delivery.message.timestamp)

        async def publish(transport: Transport) -> None:
            async def send(n: int) -> None:
                await transport.publish([Message(topic, body) for _ in range(n)])

            await paced(send, count, rate)

        await self._run(topic, count, record, publish, Stopwatch())
        return seen


async def _warm_up(transport: Transport) -> None:
    """Give a real broker's subscription a moment to attach (nothing to do in memory)."""
    await asyncio.sleep(0 if isinstance(transport, MemoryTransport) else 0.5)


def ack_then_count(on_settled: Callable[[], None]) -> Middleware:
    """Outermost layer: ack as the consumer would, then count, so the clock sees the ack."""

    def layer(inner: Handler) -> Handler:
        async def counted(delivery: Delivery) -> Any:
            result = await inner(delivery)
            if delivery.settled is None:
                await delivery.ack()
            on_settled()
            return result

        return counted

    return layer


class FullStack:
    """(b) ``Client``: logging, dead-letter, retry, idempotency (in memory) and timeout."""

    key = "client"
    label = "(b) Client, full stack: logging, dead-letter, retry, idempotency (memory store)"

    def __init__(self, url: str) -> None:
        self.url = url

    async def _run(
        self, topic: str, count: int, seen: list[float] | None,
        publish: Callable[[Client], Awaitable[None]], watch: Stopwatch,
    ) -> int:
        client = Client(self.url)
        done = asyncio.Event()
        consumed = 0

        def settled() -> None:
            nonlocal consumed
            consumed += 1
            if consumed >= count:
                watch.stop()
                done.set()

        stack: Sequence[Middleware] = [
            ack_then_count(settled),
            *default_middleware(),
            Idempotency(MemoryIdempotencyStore()),
        ]

        @client.subscribe(topic, group=GROUP, middleware=stack)
        async def handle(body: bytes, message: Message) -> None:
            if seen is not None:
                seen.append(time.time() - message.timestamp)

        try:
            await client.start()
            await _warm_up(client.transport)
            watch.start()
            await publish(client)
            watch.mark_published()
            await _wait(done, count)
        finally:
            await client.close()
            _forget(client.transport, topic, f"{topic}.dlq")
        return consumed

    async def throughput(self, count: int, size: int, tag: str) -> Throughput:
        topic = f"{tag}.client"
        body = b"x" * size
        watch = Stopwatch()

        async def publish(client: Client) -> None:
            for start in range(0, count, BATCH):
                await client.publish_batch(topic, [body] * min(BATCH, count - start))

        consumed = await self._run(topic, count, None, publish, watch)
        return watch.result(count, consumed)

    async def latency(self, count: int, size: int, rate: float, tag: str) -> list[float]:
        topic = f"{tag}.client-latency"
        body = b"x" * size
        seen: list[float] = []

        async def publish(client: Client) -> None:
            async def send(n: int) -> None:
                await client.publish_batch(topic, [body] * n)

            await paced(send, count, rate)

        await self._run(topic, count, seen, publish, Stopwatch())
        return seen
