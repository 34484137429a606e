"""What every contender of ``benchmarks/compare.py`` shares: the contract, clocks and probes.

A contender moves ``count`` messages of one size through one broker in three phases, each on
a fresh topic prepared by the harness (``Topic``):

- ``publish``: send ``count`` messages and return once the broker confirmed every one (the
  column's guarantee says what "confirmed" means there);
- ``consume``: receive and acknowledge ``count`` messages: on brokers that keep messages the
  backlog left by ``publish``; on NATS core, which keeps nothing, messages sent by a shared
  feeder once the contender's subscription is live;
- ``latency``: with a consumer running, send messages at a fixed rate, the send time written
  in the first bytes of each body; return, per message, seconds from send to handler.

Contenders call ``clock.start()`` when the measured work begins and ``clock.stop()`` when
the last confirm or ack is done. Publishers start after connecting. Consumers start once
subscribed with the backlog waiting: on Kafka when the group assigned the partitions (the raw
client's ``on_assign``, mqkit's ``wait_assigned()``, FastStream's rebalance callbacks), so
the group join is not timed but each client's prefetch of the backlog is; elsewhere when the
subscribe call (consume-ok, the pull consumer bound, ...) returned. On NATS core the clock is
``held``: it starts when the shared feeder starts sending, for every column alike.
"""

from __future__ import annotations

import asyncio
import gc
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

GROUP = "g"
BATCH = 500
"""Messages per publish call or per window of in-flight confirms, for every contender that
can pipeline (the raw clients of Kafka and JetStream, mqkit, FastStream)."""
LATENCY_RATE = 1000.0
LATENCY_SECONDS = 2.0
STAMP = 18
"""Bytes at the start of a latency-phase body holding its send time."""

Feed = Callable[[], Awaitable[None]] | None
"""What a consumer starts once subscribed (NATS core's feeder), or None on a backlog."""


@dataclass
class Topic:
    """A fresh destination prepared by the harness; ``extra`` holds broker-specific names."""

    name: str
    group: str = GROUP
    extra: dict[str, Any] = field(default_factory=dict)


class _CollectorTime:
    """Seconds this process has spent in the garbage collector's passes (any generation,
    any thread), from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.total = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._began


COLLECTOR = _CollectorTime()
gc.callbacks.append(COLLECTOR)


class Clock:
    """Wall, process-CPU and garbage-collector seconds between ``start`` (first call wins)
    and ``stop``.

    A ``held`` clock ignores the contenders' ``start()``: only the harness's
    ``start(force=True)`` (the live feed beginning) starts it."""

    def __init__(self, held: bool = False) -> None:
        self._wall = self._cpu = self._gc = 0.0
        self.wall = self.cpu = self.gc = math.nan
        self.started = False
        self.held = held

    def start(self, force: bool = False) -> None:
        if self.held and not force:
            return
        if not self.started:
            self.started = True
            self._wall, self._cpu = time.perf_counter(), time.process_time()
            self._gc = COLLECTOR.total

    def stop(self) -> None:
        if self.started and math.isnan(self.wall):
            self.wall = time.perf_counter() - self._wall
            self.cpu = time.process_time() - self._cpu
            self.gc = COLLECTOR.total - self._gc


class Contender(Protocol):
    key: str
    """Column key: raw, bare, full-memory, full-redis, batch, faststream[-confluent], kombu."""
    label: str
    guarantee: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, topic: Topic, count: int, body: bytes, clock: Clock) -> None: ...

    async def consume(self, topic: Topic, count: int, clock: Clock, feed: Feed) -> int: ...

    async def latency(self, topic: Topic, count: int, size: int, rate: float) -> list[float]: ...


PEERS = {"faststream": "FastStream", "faststream-confluent": "FastStream (confluent-kafka)",
         "kombu": "Kombu"}
"""Column key -> name of the peer frameworks' columns, as opposed to the raw clients and
mqkit."""


def is_peer(contender: Contender) -> bool:
    return contender.key in PEERS


class Idle:
    """``open``/``close`` for contenders that connect inside each phase."""

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None


def stamped(size: int) -> bytes:
    """A body of ``size`` bytes (at least ``STAMP``) starting with the current time."""
    return f"{time.time():<{STAMP}.6f}".encode()[:STAMP].ljust(max(size, STAMP), b"x")


def age(body: bytes) -> float:
    """Seconds since ``body`` was ``stamped``."""
    return time.time() - float(body[:STAMP])


def due(start: float, rate: float, count: int) -> int:
    """How many of ``count`` messages paced at ``rate``/s should have been sent by now."""
    return min(count, int((time.perf_counter() - start) * rate) + 1)


async def paced(send: Callable[[int], Awaitable[None]], count: int, rate: float) -> None:
    """Call ``send(n)`` with the messages due so far, so ``count`` go out at ``rate``/s."""
    start, sent = time.perf_counter(), 0
    while sent < count:
        now_due = due(start, rate, count)
        if now_due > sent:
            await send(now_due - sent)
            sent = now_due
        await asyncio.sleep(0.001)


def paced_sync(send: Callable[[int], None], count: int, rate: float) -> None:
    """``paced`` for a blocking client, on its own thread."""
    start, sent = time.perf_counter(), 0
    while sent < count:
        now_due = due(start, rate, count)
        if now_due > sent:
            send(now_due - sent)
            sent = now_due
        time.sleep(0.001)


async def wait_for_event(event: asyncio.Event | threading.Event, seconds: float) -> bool:
    """True if ``event`` was set within ``seconds``."""
    if isinstance(event, asyncio.Event):
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            return False
        return True
    return await asyncio.to_thread(event.wait, seconds)


def budget(count: int) -> float:
    """Seconds a phase may take before it is abandoned (and reported as such)."""
    return 60.0 + count / 200


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(pct / 100 * len(ordered)))) - 1]


# --- memory ------------------------------------------------------------------------------
_STATUS = "/proc/self/status"


def _status_kib(name: str) -> float:
    with open(_STATUS) as f:
        found = re.search(rf"^{name}:\s+(\d+) kB", f.read(), re.MULTILINE)
    return float(found.group(1)) if found else math.nan


def reset_peak_rss() -> bool:
    """Reset the process's VmHWM to its current RSS (Linux: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """VmHWM: the highest RSS since the last reset, in MiB."""
    return _status_kib("VmHWM") / 1024


def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


def is_probe(body: bytes) -> bool:
    """Warm-up probes are not stamped: their first byte is not a digit."""
    return not body[:1].isdigit()


def sync_latency(
    consume_loop: Callable[[Callable[[bytes], None], threading.Event], None],
    send: Callable[[list[bytes]], None],
    count: int,
    size: int,
    rate: float,
) -> list[float]:
    """The latency phase for a blocking client: ``consume_loop(on_body, stop)`` runs on its
    own thread until ``stop`` is set; ``send`` publishes bodies (and waits for their confirms
    if the client has them) on this one. Probes go out until the consumer sees one."""
    ages: list[float] = []
    ready, done = threading.Event(), threading.Event()

    def on_body(body: bytes) -> None:
        if is_probe(body):
            ready.set()
            return
        ages.append(age(body))
        if len(ages) >= count:
            done.set()

    thread = threading.Thread(target=consume_loop, args=(on_body, done), daemon=True)
    thread.start()
    try:
        for _ in range(300):
            send([b"warm"])
            if ready.wait(0.2):
                break
        else:
            raise TimeoutError("the consumer never saw a warm-up probe")
        paced_sync(lambda n: send([stamped(size) for _ in range(n)]), count, rate)
        done.wait(budget(count))
    finally:
        done.set()
        thread.join(30)
    return ages
