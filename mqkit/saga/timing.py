"""Sleeping and timing out by a ``mqkit.clock.Clock``, so tests can drive time virtually.

With ``LoopClock`` these behave like ``asyncio.sleep`` and ``asyncio.timeout``; with
``mqkit.testing.VirtualClock`` they end when the test advances the clock, without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from mqkit.clock import Clock

T = TypeVar("T")


class StepTimeout(TimeoutError):
    """A step's action or compensation ran past its timeout (and was cancelled)."""


async def sleep(clock: Clock, seconds: float) -> None:
    """Wait ``seconds`` by ``clock``. Cancellable."""
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    timer = clock.call_at(clock.now() + seconds, wake)
    try:
        await done
    finally:
        timer.cancel()


async def within(clock: Clock, seconds: float, work: Awaitable[T]) -> T:
    """The result of ``work``, or ``StepTimeout`` (``work`` cancelled) after ``seconds``."""
    task = asyncio.ensure_future(work)
    expired = False

    def expire() -> None:
        nonlocal expired
        if not task.done():
            expired = True
            task.cancel()

    timer = clock.call_at(clock.now() + seconds, expire)
    try:
        return await task
    except asyncio.CancelledError:
        if expired:
            raise StepTimeout(f"timed out after {seconds:g}s") from None
        raise
    finally:
        timer.cancel()
        if not task.done():  # we were cancelled ourselves: take the work down with us
            task.cancel()
