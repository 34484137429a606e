"""``memory://[name][?max_message_bytes=N&ack_timeout=S]``: the embedded, reference transport.

Options (URL query or keyword): ``max_message_bytes``; ``ack_timeout`` (seconds an unsettled
delivery may stay out before it is redelivered, like a visibility timeout; default none);
``clock`` (a ``mqkit.testing.VirtualClock``); ``chaos`` (a ``mqkit.memory.Chaos``).

Features: topics with a retained log and replay (``seek``), groups (competing inside a group,
every group sees every message), order per key, ack/nack, delayed redelivery, attempt
counting, dead-lettering through the core, wildcards with RabbitMQ's semantics, request/reply.
Limits: one process; nothing survives it (``persistent`` is false). Transports with the same
``name`` in one process share one broker, so a producer and a consumer can talk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from mqkit.errors import (
    ConfigurationError,
    ConnectionFailed,
    DeliveryExpired,
    MessageTooLarge,
    PublishError,
)
from mqkit.memory._broker import Entry, Group, MemoryBroker
from mqkit.memory._chaos import SimulatedCrash
from mqkit.message import Delivery, Message
from mqkit.transport import Capabilities, TopicSpec
from mqkit.url import BrokerURL

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024


class MemoryDelivery(Delivery):
    __slots__ = ("_entry", "_group", "_lease", "_subscription")

    def __init__(
        self, entry: Entry, group: Group, subscription: _Subscription, transport: MemoryTransport
    ) -> None:
        super().__init__(entry.message, entry.attempt, transport._publish_one)
        self._entry = entry
        self._lease = entry.lease
        self._group = group
        self._subscription = subscription

    partition = 0
    """The memory broker keeps one log per topic: everything is partition 0."""

    @property
    def offset(self) -> int:
        """The message's position in its topic's log (what ``seek(offset=...)`` takes)."""
        return self._entry.offset

    def _check_current(self) -> None:
        if not self._group.is_current(self._entry, self._lease):
            self._subscription._settled(self._entry)
            raise DeliveryExpired(
                f"delivery {self.message.id} passed its ack timeout and was redelivered"
            )

    async def _ack(self) -> None:
        self._check_current()
        chaos = self._group.broker.chaos
        if chaos is not None:
            if chaos.chance(chaos.crash_before_ack_rate):
                self._group.redeliver(self._entry, None)
                self._subscription._settled(self._entry)
                raise SimulatedCrash(f"chaos: consumer crashed before acking {self.message.id}")
            if chaos.chance(chaos.redeliver_rate):
                self._group.redeliver(self._entry, None)  # the ack was lost on the way
                self._subscription._settled(self._entry)
                return
        self._group.settle(self._entry)
        self._subscription._settled(self._entry)

    async def _nack(self, delay: float | None) -> None:
        self._check_current()
        self._group.redeliver(self._entry, delay)
        self._subscription._settled(self._entry)


class _Subscription:
    """An async iterator of deliveries for one consumer of a group, bounded by prefetch.

    Not a generator: several tasks may await ``__anext__`` at once (``concurrent_fetch``).
    """

    concurrent_fetch = True

    def __init__(self, transport: MemoryTransport, group: Group, prefetch: int) -> None:
        if prefetch < 1:
            raise ConfigurationError("prefetch must be >= 1")
        self._transport = transport
        self._group = group
        self._prefetch = prefetch
        self._unsettled = 0
        self._capacity: asyncio.Future[None] | None = None
        self._closed = False
        # Handed out and not yet settled, with the lease they were handed out under.
        self._outstanding: dict[Entry, int] = {}

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> MemoryDelivery:
        group = self._group
        while True:
            if self._closed or self._transport._closed:
                raise StopAsyncIteration
            if self._unsettled >= self._prefetch:
                if self._capacity is None or self._capacity.done():
                    self._capacity = asyncio.get_running_loop().create_future()
                await self._capacity
                continue
            entry = group.take()
            if entry is None:
                await group.wait()
                continue
            self._unsettled += 1
            self._outstanding[entry] = entry.lease
            return MemoryDelivery(entry, group, self, self._transport)

    def _settled(self, entry: Entry) -> None:
        self._outstanding.pop(entry, None)
        self._unsettled -= 1
        cap = self._capacity
        if cap is not None and not cap.done():
            cap.set_result(None)

    async def aclose(self) -> None:
        """Stop fetching. Deliveries already handed out can still be settled."""
        self._closed = True
        self._group._wake()
        if self._capacity is not None and not self._capacity.done():
            self._capacity.set_result(None)

    def abandon(self) -> None:
        """Give back every delivery still unsettled, as a broker does when a consumer leaves."""
        for entry, lease in list(self._outstanding.items()):
            if self._group.is_current(entry, lease):
                self._group.redeliver(entry, None)
        self._outstanding.clear()


class MemoryTransport:
    """The in-memory transport. See the module docstring for URL and features."""

    def __init__(self, url: BrokerURL | str = "memory://", **options: Any) -> None:
        parsed = url if isinstance(url, BrokerURL) else BrokerURL.parse(url)
        if parsed.scheme != "memory":
            raise ConfigurationError(f"MemoryTransport needs memory://, got {parsed}")
        merged: dict[str, Any] = {**parsed.options, **options}
        self.name = (parsed.host or "") + parsed.path.strip("/")
        self._broker: MemoryBroker = merged.pop("broker", None) or MemoryBroker.named(self.name)
        clock = merged.pop("clock", None)
        if clock is not None:
            self._broker.clock = clock
        chaos = merged.pop("chaos", None)
        if chaos is not None:
            self._broker.chaos = chaos
        if "ack_timeout" in merged:
            self._broker.ack_timeout = float(merged.pop("ack_timeout"))
        max_bytes = int(merged.pop("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES))
        if merged:
            raise ConfigurationError(f"unknown memory:// options: {sorted(merged)}")
        self.capabilities = Capabilities(
            at_least_once=True,
            persistent=False,
            retains_unconsumed=True,
            ordered_by_key=True,
            consumer_groups=True,
            native_delay=True,
            native_dead_letter=False,
            replay=True,
            transactions=False,
            request_reply=True,
            wildcards=True,
            max_message_bytes=max_bytes,
        )
        self._closed = False
        self._subscriptions: list[_Subscription] = []

    def __repr__(self) -> str:
        return f"<MemoryTransport memory://{self.name}>"

    @property
    def broker(self) -> MemoryBroker:
        return self._broker

    async def connect(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        for sub in self._subscriptions:
            await sub.aclose()
            sub.abandon()
        self._subscriptions.clear()

    async def publish(self, messages: Sequence[Message]) -> None:
        if self._closed:
            raise PublishError("transport is closed")
        limit = self.capabilities.max_message_bytes
        chaos = self._broker.chaos
        if chaos is not None and chaos.chance(chaos.publish_failure_rate):
            raise ConnectionFailed("chaos: the broker did not answer this publish")
        # Check the whole batch first so a rejected batch publishes nothing.
        for message in messages:
            if len(message.body) > limit or message.size > limit:
                raise MessageTooLarge(
                    f"message {message.id} to {message.topic!r} is {message.size} bytes; "
                    f"memory:// accepts at most {limit}"
                )
        publish = self._broker.publish
        for message in messages:
            publish(message)

    async def _publish_one(self, message: Message) -> None:
        await self.publish((message,))

    def subscribe(self, topic: str, group: str, *, prefetch: int = 10) -> AsyncIterator[Delivery]:
        sub = _Subscription(self, self._broker.group(topic, group), prefetch)
        self._subscriptions.append(sub)
        return sub

    async def ensure_topic(self, spec: TopicSpec) -> None:
        self._broker.topic(spec.name, spec)
        for group in spec.groups:
            self._broker.group(spec.name, group)

    async def seek(
        self, topic: str, group: str, *, offset: int | None = None, timestamp: float | None = None
    ) -> None:
        if (offset is None) == (timestamp is None):
            raise ConfigurationError("seek needs exactly one of offset or timestamp")
        if offset is None:
            offset = self._broker.topic(topic).offset_for_time(timestamp or 0.0)
        self._broker.seek(topic, group, offset)

    async def request(self, message: Message, timeout: float) -> Message:
        from mqkit import headers as h
        from mqkit.errors import RequestTimeout

        inbox = f"_inbox.{message.id}"
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._broker.inboxes[inbox] = fut
        try:
            await self.publish((message.with_headers(**{h.REPLY_TO: inbox}),))
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError as exc:
            raise RequestTimeout(
                f"no reply to {message.topic!r} within {timeout:g}s (is a responder subscribed?)"
            ) from exc
        finally:
            self._broker.inboxes.pop(inbox, None)
