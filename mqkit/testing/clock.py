"""A virtual clock for the in-memory transport: time moves only when a test says so.

    clock = VirtualClock()
    client = Client("memory://t", clock=clock)
    ...
    await clock.advance(300)   # a 5-minute backoff elapses at once, deterministically

Delayed redeliveries, ack timeouts and anything else scheduled through ``mqkit.clock.Clock``
follow it. ``advance`` fires due timers in time order and lets the event loop run the work
they released before moving on, so the effects of each timer are visible to the next.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable


class _Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """A ``Clock`` whose time starts at ``start`` and advances only through ``advance``."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def next_due(self) -> float | None:
        """When the earliest pending timer fires, or None if there is none."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running every timer that falls due on the way."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        target = self._now + seconds
        while True:
            due = self.next_due()
            if due is None or due > target:
                break
            _, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, timer.when)
            timer.callback()
            await settle()
        self._now = target
        await settle()


async def settle(rounds: int = 20) -> None:
    """Let the event loop run ready callbacks for a few rounds (work released by a timer)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
