"""``memory://[name][?max_message_bytes=N]``: the embedded broker and reference transport.

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

from mqkit.errors import ConfigurationError, MessageTooLarge, PublishError
from mqkit.memory._broker import Entry, Group, MemoryBroker
from mqkit.message import Delivery, Message
from mqkit.transport import Capabilities, TopicSpec
from mqkit.url import BrokerURL

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024


class MemoryDelivery(Delivery):
    __slots__ = ("_entry", "_group", "_subscription")

    def __init__(
        self, entry: Entry, group: Group, subscription: _Subscription, transport: MemoryTransport
    ) -> None:
        super().__init__(entry.message, entry.attempt, transport._publish_one)
        self._entry = entry
        self._group = group
        self._subscription = subscription

    async def _ack(self) -> None:
        self._group.settle(self._entry)
        self._subscription._settled()

    async def _nack(self, delay: float | None) -> None:
        self._group.redeliver(self._entry, delay)
        self._subscription._settled()


class _Subscription:
    """An async iterator of deliveries for one consumer of a group, bounded by prefetch."""

    def __init__(self, transport: MemoryTransport, group: Group, prefetch: int) -> None:
        if prefetch < 1:
            raise ConfigurationError("prefetch must be >= 1")
        self._transport = transport
        self._group = group
        self._prefetch = prefetch
        self._unsettled = 0
        self._capacity: asyncio.Future[None] | None = None
        self._closed = False

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> MemoryDelivery:
        group = self._group
        while True:
            if self._closed or self._transport._closed:
                raise StopAsyncIteration
            if self._unsettled >= self._prefetch:
                self._capacity = asyncio.get_running_loop().create_future()
                await self._capacity
                continue
            entry = group.take()
            if entry is None:
                await group.wait()
                continue
            self._unsettled += 1
            return MemoryDelivery(entry, group, self, self._transport)

    def _settled(self) -> None:
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


class MemoryTransport:
    """The in-memory transport. See the module docstring for URL and features."""

    def __init__(self, url: BrokerURL | str = "memory://", **options: Any) -> None:
        parsed = url if isinstance(url, BrokerURL) else BrokerURL.parse(url)
        if parsed.scheme != "memory":
            raise ConfigurationError(f"MemoryTransport needs memory://, got {parsed}")
        merged: dict[str, Any] = {**parsed.options, **options}
        self.name = (parsed.host or "") + parsed.path.strip("/")
        self._broker: MemoryBroker = merged.pop("broker", None) or MemoryBroker.named(self.name)
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
        self._subscriptions.clear()

    async def publish(self, messages: Sequence[Message]) -> None:
        if self._closed:
            raise PublishError("transport is closed")
        limit = self.capabilities.max_message_bytes
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
