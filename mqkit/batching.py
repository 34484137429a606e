"""Batch handlers: a handler that takes a list of payloads, for throughput.

``@client.subscribe("events", group="g", batch_size=500, batch_timeout=0.05)`` on
``async def handle(events: list[Event]) -> None`` collects up to ``batch_size`` deliveries (or
what arrived within ``batch_timeout`` seconds of the first) and calls the handler once.

Settlement is still per message, and nothing is acked that did not succeed:
- a message that does not decode is dead-lettered on its own; the rest of the batch runs;
- the handler returning acks every message of the batch;
- the handler raising a permanent error dead-letters the whole batch; a transient one nacks
  each message with the retry policy's backoff, or dead-letters it once out of attempts.
One batch runs at a time per subscription, so order per key is kept. A source with an
optional ``take(max_items, timeout) -> list[Delivery]`` (Kafka) is read a batch at a time
instead of one ``__anext__`` per message, and one with ``async ack_many(deliveries)`` acks a
handled batch in one call. One with ``take_batch(max_items, timeout) -> SourceBatch`` (Kafka)
hands out a batch as one object: bodies without a ``Message`` or ``Delivery`` per message,
one ``ack`` for all, and per-message deliveries only when something went wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, get_args, get_origin

from mqkit import headers as h
from mqkit.errors import ConfigurationError, DecodeError, ErrorKind
from mqkit.handlers import UserHandler, body_decoder, payload_type
from mqkit.message import Delivery, Message
from mqkit.middleware.deadletter import PERMANENT
from mqkit.middleware.retry import EXHAUSTED, RetryPolicy

log = logging.getLogger("mqkit.batch")

IDLE_TAKE_SECONDS = 1.0
"""How long one ``take`` call waits for a first delivery before asking again."""
EMPTY_AT_ONCE_PAUSE = 0.05
"""An empty ``take`` that returned at once (a closed source answers so) is retried after this
pause rather than straight away: a take that never suspends would hold the event loop."""


class SourceBatch(Protocol):
    """What a source's ``take_batch`` returns: some messages, handed out together."""

    def __len__(self) -> int: ...

    def extend(self, other: Any) -> None:
        """Append a later batch of the same source (which is left empty)."""

    def bodies(self) -> list[bytes]:
        """The bodies, in order."""

    def messages(self) -> list[Message]:
        """The messages, in order."""

    def deliveries(self) -> Sequence[Delivery]:
        """One delivery per message, each settled on its own from then on."""

    async def ack(self) -> None:
        """Ack every message of the batch."""


async def _pause_if_at_once(loop: asyncio.AbstractEventLoop, asked: float) -> None:
    """After an empty take: pause if it did not wait (see ``EMPTY_AT_ONCE_PAUSE``)."""
    if loop.time() - asked < IDLE_TAKE_SECONDS / 2:
        await asyncio.sleep(EMPTY_AT_ONCE_PAUSE)


def item_type(func: UserHandler) -> Any:
    """``T`` for a handler whose payload parameter is ``list[T]``; else a clear error."""
    annotation = payload_type(func)
    if get_origin(annotation) is not list:
        raise ConfigurationError(
            f"batch handler {getattr(func, '__qualname__', func)!r} must take list[T] payloads"
        )
    args = get_args(annotation)
    return args[0] if args else Any


class BatchConsumer:
    """Runs a batch handler over one subscription until stopped."""

    def __init__(
        self,
        topic: str,
        group: str,
        source: AsyncIterator[Delivery],
        func: Callable[[list[Any]], Awaitable[Any]],
        target: Any,
        *,
        batch_size: int,
        batch_timeout: float,
        retry: RetryPolicy,
    ) -> None:
        if batch_size < 1 or batch_timeout <= 0:
            raise ConfigurationError("batch_size must be >= 1 and batch_timeout > 0")
        self.topic, self.group = topic, group
        self._dlq_headers = {h.DLQ_GROUP: group}  # names the group in its dead letters
        self._source = source
        self._func = func
        self._target = target
        self._to_payload = body_decoder(target)
        self._bodies_only = target is bytes  # the payloads are the bodies themselves
        self._ack_many: Callable[[list[Delivery]], Awaitable[None]] | None = getattr(
            source, "ack_many", None
        )
        self._size = batch_size
        self._timeout = batch_timeout
        self._retry = retry
        self._task: asyncio.Task[None] | None = None
        self._in_hand: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"mqkit-batch-{self.topic}")

    async def stop(self) -> None:
        """Finish the batch in hand, stop fetching, close the source."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await self._task
        if self._in_hand is not None and not self._in_hand.done():
            await self._in_hand
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _loop(self) -> None:
        take_batch = getattr(self._source, "take_batch", None)
        if take_batch is not None:
            await self._loop_batches(take_batch)
            return
        take = getattr(self._source, "take", None)
        if take is not None:
            await self._loop_taking(take)
            return
        iterator = aiter(self._source)
        pending: asyncio.Task[Delivery] | None = None
        batch: list[Delivery] = []
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(iterator))
                if not batch:
                    batch.append(await pending)
                    pending = None
                    continue
                # Collect more until the batch is full or the window closes.
                done, _ = await asyncio.wait({pending}, timeout=self._timeout)
                if done:
                    batch.append(pending.result())
                    pending = None
                if not done or len(batch) >= self._size:
                    current, batch = batch, []
                    # Shielded: a stop lets the batch in hand finish and settle.
                    self._in_hand = asyncio.ensure_future(self._handle(current))
                    await asyncio.shield(self._in_hand)
        except (asyncio.CancelledError, StopAsyncIteration):
            if pending is not None:
                pending.cancel()
            if batch:  # fetched but not yet handed over: finish it rather than strand it
                await self._handle(batch)
            raise

    async def _loop_taking(
        self, take: Callable[[int, float], Awaitable[list[Delivery]]]
    ) -> None:
        """The same loop for sources that hand out many deliveries per call (``take``)."""
        loop = asyncio.get_running_loop()
        batch: list[Delivery] = []
        try:
            while True:
                asked = loop.time()
                batch.extend(await take(self._size, IDLE_TAKE_SECONDS))
                if not batch:
                    await _pause_if_at_once(loop, asked)
                    continue
                window_ends = loop.time() + self._timeout
                while len(batch) < self._size:
                    left = window_ends - loop.time()
                    more = await take(self._size - len(batch), left) if left > 0 else []
                    if not more:
                        break
                    batch.extend(more)
                current, batch = batch, []
                self._in_hand = asyncio.ensure_future(self._handle(current))
                await asyncio.shield(self._in_hand)
        except asyncio.CancelledError:
            if batch:  # fetched but not yet handed over: finish it rather than strand it
                await self._handle(batch)
            raise

    async def _loop_batches(
        self, take_batch: Callable[[int, float], Awaitable[SourceBatch]]
    ) -> None:
        """The same loop for sources that hand out a batch as one object (``take_batch``)."""
        loop = asyncio.get_running_loop()
        batch: SourceBatch | None = None
        try:
            while True:
                asked = loop.time()
                batch = await take_batch(self._size, IDLE_TAKE_SECONDS)
                if not len(batch):
                    batch = None
                    await _pause_if_at_once(loop, asked)
                    continue
                window_ends = loop.time() + self._timeout
                while (missing := self._size - len(batch)) > 0:
                    left = window_ends - loop.time()
                    if left <= 0:
                        break
                    more = await take_batch(missing, left)
                    if not len(more):
                        break
                    batch.extend(more)
                current, batch = batch, None
                self._in_hand = asyncio.ensure_future(self._handle_batch(current))
                await asyncio.shield(self._in_hand)
        except asyncio.CancelledError:
            if batch is not None and len(batch):  # fetched, not handed over: finish it
                await self._handle_batch(batch)
            raise

    async def _handle_batch(self, batch: SourceBatch) -> None:
        """``_handle`` for a ``SourceBatch``: acked as one when every body decodes and the
        handler returns; otherwise split into deliveries and settled as ``_handle`` does."""
        if self._bodies_only:
            items = batch.bodies()
        else:
            to_payload = self._to_payload
            try:
                items = [to_payload(message) for message in batch.messages()]
            except DecodeError:  # dead-letter the bad ones alone, run the rest
                await self._handle(list(batch.deliveries()))
                return
        try:
            await self._func(items)
        except Exception as exc:
            deliveries = batch.deliveries()
            for delivery in deliveries:
                delivery.state["group"] = self.group
            await self._fail(deliveries, exc)
            return
        await batch.ack()

    async def _handle(self, batch: list[Delivery]) -> None:
        items: list[Any] = []
        good: list[Delivery] = []
        group, to_payload = self.group, self._to_payload
        for delivery in batch:
            delivery.state["group"] = group
            try:
                items.append(to_payload(delivery.message))
                good.append(delivery)
            except DecodeError as exc:
                await delivery.dead_letter(PERMANENT, error=exc, extra_headers=self._dlq_headers)
        if not good:
            return
        try:
            await self._func(items)
        except Exception as exc:
            await self._fail(good, exc)
            return
        if self._ack_many is not None:
            await self._ack_many(good)
            return
        for delivery in good:
            await delivery.ack()

    async def _fail(self, batch: Sequence[Delivery], exc: Exception) -> None:
        policy = self._retry
        permanent = policy.classifier.classify(exc) is ErrorKind.PERMANENT
        log.warning("batch of %d on %s failed: %s: %s", len(batch), self.topic,
                    type(exc).__name__, exc)
        for delivery in batch:
            if permanent:
                await delivery.dead_letter(PERMANENT, error=exc, extra_headers=self._dlq_headers)
            elif delivery.attempt >= policy.max_attempts:
                await delivery.dead_letter(EXHAUSTED, error=exc, extra_headers=self._dlq_headers)
            else:
                await delivery.nack(delay=policy.delay(delivery.attempt))
