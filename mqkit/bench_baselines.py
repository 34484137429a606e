"""The baselines of ``mqkit bench`` on ``memory://``: what mqkit's figures are read against.

(c) a bounded ``asyncio.Queue`` between one producer and one consumer, the ceiling for
anything built on asyncio; (d) Kombu's ``memory://`` transport, run synchronously as it is.
Same phases and measures as ``mqkit.bench_runners``.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from typing import Any

from mqkit.bench_runners import PACE_TICK, Stopwatch, Throughput, paced

QUEUE_MAXSIZE = 1000


class PlainQueue:
    """(c) The ceiling: the same bodies through a bounded ``asyncio.Queue``, one consumer."""

    key = "queue"
    label = "(c) asyncio.Queue(maxsize=1000), the ceiling"

    async def throughput(self, count: int, size: int, tag: str) -> Throughput:
        body = b"x" * size
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUE_MAXSIZE)
        watch = Stopwatch()
        consumed = 0

        async def consume() -> None:
            nonlocal consumed
            while consumed < count:
                await queue.get()
                queue.task_done()
                consumed += 1
            watch.stop()

        task = asyncio.create_task(consume())
        watch.start()
        for _ in range(count):
            await queue.put(body)
        watch.mark_published()
        await task
        return watch.result(count, consumed)

    async def latency(self, count: int, size: int, rate: float, tag: str) -> list[float]:
        body = b"x" * size
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=QUEUE_MAXSIZE)
        seen: list[float] = []

        async def consume() -> None:
            while len(seen) < count:
                sent, _ = await queue.get()
                seen.append(time.time() - sent)
                queue.task_done()

        async def send(n: int) -> None:
            for _ in range(n):
                await queue.put((time.time(), body))

        task = asyncio.create_task(consume())
        await paced(send, count, rate)
        await task
        return seen


class KombuMemory:
    """(d) Kombu's ``memory://`` transport with ``SimpleQueue``, run synchronously as is.

    It has no batch publish and no async API: ``count`` puts, then ``count`` gets with an
    ack each, on the event loop thread (which it blocks meanwhile).
    """

    key = "kombu"
    label = "(d) kombu memory:// SimpleQueue, synchronous"

    async def throughput(self, count: int, size: int, tag: str) -> Throughput:
        return _kombu_throughput(count, size, f"{tag}.kombu")

    async def latency(self, count: int, size: int, rate: float, tag: str) -> list[float]:
        return _kombu_latency(count, size, rate, f"{tag}.kombu-latency")


def _kombu_connection() -> Any:
    """A ``kombu.Connection("memory://")`` (Kombu is untyped, hence ``Any``)."""
    return importlib.import_module("kombu").Connection("memory://")


def _kombu_throughput(count: int, size: int, name: str) -> Throughput:
    body = b"x" * size
    watch = Stopwatch()
    consumed = 0
    with _kombu_connection() as conn:
        queue = conn.SimpleQueue(name)
        try:
            watch.start()
            for _ in range(count):
                queue.put(body)
            watch.mark_published()
            for _ in range(count):
                queue.get_nowait().ack()
                consumed += 1
            watch.stop()
        finally:
            queue.clear()
            queue.close()
    return watch.result(count, consumed)


def _kombu_latency(count: int, size: int, rate: float, name: str) -> list[float]:
    body = b"x" * size
    seen: list[float] = []
    with _kombu_connection() as conn:
        queue = conn.SimpleQueue(name)
        try:
            start = time.perf_counter()
            sent = 0
            while len(seen) < count:
                due = min(count, int((time.perf_counter() - start) * rate) + 1)
                for _ in range(due - sent):
                    queue.put(body, headers={"sent": repr(time.time())})
                sent = due
                while len(seen) < sent:
                    message = queue.get_nowait()
                    seen.append(time.time() - float(message.headers["sent"]))
                    message.ack()
                time.sleep(PACE_TICK)
        finally:
            queue.clear()
            queue.close()
    return seen


def kombu_available() -> bool:
    try:
        importlib.import_module("kombu")
    except ImportError:
        return False
    return True
