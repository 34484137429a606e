"""Run one subscription: fetch deliveries, run the middleware chain, settle, shut down cleanly.

``concurrency`` workers take turns fetching from the transport (bounded by prefetch) and
each handles what it fetched. Two messages with the same key never run at once: a delivery whose
key is busy waits behind it and runs on the same worker afterwards, which keeps order per key
on brokers that hand out several messages of a key before the first is acked (Kafka).

Settlement: a chain that returns leaves the delivery acked (unless a middleware already
settled it); a chain that raises leaves it nacked, so the broker redelivers it: nothing is
acked that did not succeed or get dead-lettered.

Shutdown (``stop``): stop fetching, let workers finish and settle what was fetched, then
close the subscription. Past ``shutdown_timeout`` the remaining handlers are cancelled and
their deliveries left unsettled, which every at-least-once broker redelivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mqkit.errors import ConfigurationError
from mqkit.message import Delivery
from mqkit.middleware.base import Handler

log = logging.getLogger("mqkit.consumer")

ReplyFn = Callable[[Delivery, Any], Awaitable[None]]


@dataclass(frozen=True)
class SubscriptionSpec:
    topic: str
    group: str
    concurrency: int = 8
    prefetch: int | None = None
    reply: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError("concurrency must be >= 1")
        if self.prefetch is not None and self.prefetch < 1:
            raise ConfigurationError("prefetch must be >= 1")

    @property
    def effective_prefetch(self) -> int:
        return self.prefetch or self.concurrency * 2


class Consumer:
    """Runs ``handler`` over one subscription until stopped. Not restartable.

    Each worker fetches its own next delivery under a lock (so async-generator sources see
    one ``__anext__`` at a time) and handles it itself: no queue and no task switch between
    fetching and handling, which keeps the per-message cost close to the transport's. A
    source with ``poll_ready() -> Delivery | None`` (Kafka) is asked that first: a delivery
    already fetched then costs a plain call instead of an awaited ``__anext__``.
    """

    def __init__(
        self,
        spec: SubscriptionSpec,
        source: AsyncIterator[Delivery],
        handler: Handler,
        reply: ReplyFn | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.spec = spec
        self._source = source
        self._iterator = aiter(source)
        self._handler = handler
        self._reply = reply
        self._shutdown_timeout = shutdown_timeout
        self._fetch_lock = asyncio.Lock()
        # Sources that say so (the memory transport) take concurrent __anext__ calls; async
        # generators do not, so everyone else fetches one at a time under the lock.
        self._shared_fetch = bool(getattr(source, "concurrent_fetch", False))
        self._poll_ready: Callable[[], Delivery | None] | None = getattr(
            source, "poll_ready", None
        )
        self._fetching: set[asyncio.Task[Any]] = set()  # workers waiting on the source
        self._busy_keys: dict[str, deque[Delivery]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._error: BaseException | None = None
        self.handled = 0
        self.failed = 0

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"mqkit-worker-{self.spec.topic}-{i}")
            for i in range(self.spec.concurrency)
        ]

    async def wait(self) -> None:
        """Until the consumer stopped (after ``stop``, or when its source ended or failed).

        Re-raises the error that ended the source, if one did.
        """
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._error is not None:
            raise self._error

    async def stop(self) -> None:
        """Stop fetching, finish in-flight work, close the source. Safe to call twice."""
        self._stopping = True
        for fetching in list(self._fetching):
            fetching.cancel()  # only workers waiting for a new delivery are interrupted
        workers = [w for w in self._workers if not w.done()]
        if workers:
            _, pending = await asyncio.wait(workers, timeout=self._shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "%d handler(s) on %s did not finish within %.1fs; their messages will be "
                    "redelivered",
                    len(pending),
                    self.spec.topic,
                    self._shutdown_timeout,
                )
                await asyncio.gather(*pending, return_exceptions=True)
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(RuntimeError):  # a generator already closed by the cancel
                await aclose()

    async def _next(self, worker: asyncio.Task[Any] | None) -> Delivery | None:
        if self._shared_fetch:
            return await self._fetch(worker)
        async with self._fetch_lock:
            return await self._fetch(worker)

    async def _fetch(self, worker: asyncio.Task[Any] | None) -> Delivery | None:
        if self._stopping:
            return None
        if worker is not None:
            self._fetching.add(worker)
        try:
            delivery = await anext(self._iterator)
        except StopAsyncIteration:
            self._stopping = True
            return None
        except asyncio.CancelledError:
            if self._stopping:
                return None
            raise
        except Exception as exc:
            self._error = exc
            self._stopping = True
            log.error("subscription to %s failed: %s", self.spec.topic, exc)
            return None
        finally:
            self._fetching.discard(worker)
        delivery.state["group"] = self.spec.group
        return delivery

    async def _work(self) -> None:
        busy = self._busy_keys
        me = asyncio.current_task()
        poll_ready = self._poll_ready
        group = self.spec.group
        while True:
            delivery = None if poll_ready is None or self._stopping else poll_ready()
            if delivery is not None:
                delivery.state["group"] = group
            else:
                delivery = await self._next(me)
                if delivery is None:
                    return
            key = delivery.message.key
            if key is None:
                await self._run(delivery)
                continue
            waiting = busy.get(key)
            if waiting is not None:
                waiting.append(delivery)  # runs after the one in progress, on its worker
                continue
            busy[key] = waiting = deque()
            try:
                await self._run(delivery)
                while waiting:
                    await self._run(waiting.popleft())
            finally:
                del busy[key]

    async def _run(self, delivery: Delivery) -> None:
        try:
            result = await self._handler(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed += 1
            if delivery.settled is None:
                log.error(
                    "handler for %s failed and no dead-letter middleware took it; "
                    "nacking for redelivery: %s: %s",
                    delivery.message.topic,
                    type(exc).__name__,
                    exc,
                )
                await _settle_safely(delivery.nack())
            return
        self.handled += 1
        if delivery.settled is None:
            if self._reply is not None and result is not None:
                try:
                    await self._reply(delivery, result)
                except Exception as exc:
                    # The work is done: a requester that went away must not undo it.
                    log.warning("could not send the reply to %s: %s", delivery.message.id, exc)
            try:  # _settle_safely inlined: this runs for every message
                await delivery.ack()
            except Exception as exc:
                log.warning("could not settle a delivery (it will be redelivered): %s", exc)


async def _settle_safely(settlement: Awaitable[None]) -> None:
    # A failed ack means the broker will redeliver; the consumer must keep running.
    try:
        await settlement
    except Exception as exc:
        log.warning("could not settle a delivery (it will be redelivered): %s", exc)
