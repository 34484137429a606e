"""``RabbitMQTransport``: mqkit's transport contract on RabbitMQ (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pika
from pika.spec import Basic

from mqkit import headers as h
from mqkit.errors import (
    ConfigurationError,
    ConnectionFailed,
    MessageTooLarge,
    MqkitError,
    RequestTimeout,
)
from mqkit.message import Delivery, Message
from mqkit.transport import Capabilities, TopicSpec
from mqkit.url import BrokerURL
from mqkit_rabbitmq.config import RETRY_BUCKETS_MS, RabbitConfig
from mqkit_rabbitmq.connection import Chan, Link
from mqkit_rabbitmq.errors import channel_error
from mqkit_rabbitmq.headers import encode_properties, from_delivery, properties_later
from mqkit_rabbitmq.publisher import Outgoing, Publisher
from mqkit_rabbitmq.subscriber import Subscription
from mqkit_rabbitmq.topology import PER_TOPIC_EXCHANGES, REPLY_TO, Topology

log = logging.getLogger("mqkit.rabbitmq")


class RabbitMQTransport:
    """RabbitMQ through pika's asyncio adapter. Construct with a URL; see the package doc.

    Two connections: one publishes (confirm-mode channels, declarations, request/reply), one
    consumes (a channel per subscription), as RabbitMQ advises, so flow control on the
    publishing side never stalls acks. Every method runs on the event loop that called
    ``connect``; ``publish`` and ``subscribe`` may be used from many tasks at once.
    """

    def __init__(self, url: BrokerURL | str, **options: Any) -> None:
        parsed = url if isinstance(url, BrokerURL) else BrokerURL.parse(url)
        self.config = config = RabbitConfig.from_url(parsed, **options)
        self.capabilities = Capabilities(
            at_least_once=True,
            persistent=True,
            retains_unconsumed=True,
            ordered_by_key=False,
            consumer_groups=True,
            native_delay=True,
            max_delay=RETRY_BUCKETS_MS[-1] / 1000,
            native_dead_letter=True,
            replay=False,
            transactions=False,
            request_reply=True,
            wildcards=config.exchange_type == "topic",
            max_message_bytes=config.max_message_bytes,
        )
        self.topology = Topology(config)
        self._pub_link = Link(config, "publish")
        self._sub_link = Link(config, "consume")
        self.publisher = Publisher(self._pub_link, config)
        self._rpc = Publisher(self._pub_link, config, on_open=self._consume_replies)
        self._replies: dict[str, asyncio.Future[Message]] = {}
        self._admin: Chan | None = None
        self._admin_lock = asyncio.Lock()
        self._subscriptions: list[Subscription] = []
        self._starting: set[asyncio.Task[None]] = set()
        self.closed = True

    def __repr__(self) -> str:
        return f"<RabbitMQTransport {self.config.url.safe()}>"

    # --- lifecycle ---------------------------------------------------------------------
    async def connect(self) -> None:
        """Open both connections and declare the shared exchanges. Safe to call twice.

        Raises ``ConnectionFailed`` within about ``connect_timeout`` seconds when the broker
        is unreachable or refuses the credentials.
        """
        if not self.closed:
            return
        try:
            await self._pub_link.open()
            await self._sub_link.open()
            self.closed = False
            await self.topology.declare_base(await self._admin_channel())
        except BaseException:
            self.closed = True
            await self._pub_link.close()
            await self._sub_link.close()
            raise
        self._pub_link.on_ready(self._redeclare)

    async def close(self) -> None:
        """Stop subscriptions and close both connections. Safe to call twice.

        Unsettled deliveries go back to their queues (the broker requeues them).
        """
        if self.closed:
            return
        self.closed = True
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.aclose()
        self._subscriptions.clear()
        for fut in self._replies.values():
            if not fut.done():
                fut.cancel()
        self._replies.clear()
        self._pub_link.remove_hook(self._redeclare)
        await self._sub_link.close()
        await self._pub_link.close()
        self._admin = None

    async def _admin_channel(self) -> Chan:
        chan = self._admin
        if chan is not None and chan.is_open:
            return chan
        async with self._admin_lock:
            if self._admin is None or not self._admin.is_open:
                self._admin = await self._pub_link.channel(self.config.publish_timeout)
            return self._admin

    async def _redeclare(self) -> None:
        chan = await self._admin_channel()
        await self.topology.replay(chan)

    # --- publishing --------------------------------------------------------------------
    async def publish(self, messages: Sequence[Message]) -> None:
        """Publish persistently with mandatory routing; return once all are confirmed.

        Raises ``MessageTooLarge`` (nothing sent), ``PublishError`` (unroutable, refused,
        unconfirmed) or ``ConnectionFailed`` (no connection within ``publish_timeout``).
        """
        if self.closed:
            raise ConnectionFailed("the RabbitMQ transport is not connected")
        limit = self.config.max_message_bytes
        for m in messages:
            if m.size > limit:
                raise MessageTooLarge(
                    f"message {m.id} to {m.topic!r} is {m.size} bytes; "
                    f"amqp:// accepts at most {limit}"
                )
        if self._starting:
            await self._subscriptions_bound()
        route = self.topology.route
        items: list[Outgoing] = [
            (route(m.topic), m.body, properties_later(m), m.id) for m in messages
        ]
        await self._check_exchanges(items)
        await self.publisher.publish(items)

    async def _subscriptions_bound(self) -> None:
        # Subscriptions made before this publish get it: wait until their queues are bound
        # (their errors surface on their own iterators, not here).
        starting = list(self._starting)
        await asyncio.wait(starting)
        self._starting.difference_update(starting)

    async def _publish_one(self, message: Message) -> None:
        await self.publish((message,))

    async def _check_exchanges(self, items: Sequence[Outgoing]) -> None:
        needs = self.topology.needs_exchange_check
        exchanges = {item[0].exchange for item in items}
        for exchange in [name for name in exchanges if needs(name)]:
            try:
                await self.topology.check_exchange(await self._admin_channel(), exchange)
            except MqkitError:
                self._admin = None  # a failed passive declare closes the channel
                raise

    async def ensure_retry_queue(self, delay_ms: int) -> None:
        try:
            await self.topology.ensure_retry_queue(await self._admin_channel(), delay_ms)
        except MqkitError:
            self._admin = None
            raise

    # --- consuming ---------------------------------------------------------------------
    def subscribe(self, topic: str, group: str, *, prefetch: int = 10) -> AsyncIterator[Delivery]:
        """Consume ``topic`` (or a ``*``/``#`` pattern) as ``group``; ``prefetch`` bounds the
        unacked deliveries (``basic_qos``). The queue is declared on first iteration."""
        if self.closed:
            raise ConfigurationError("connect the transport before subscribing")
        sub = Subscription(self, topic, group, prefetch)
        self._subscriptions.append(sub)
        self._starting.add(sub.start())
        return sub

    async def ensure_topic(self, spec: TopicSpec) -> None:
        """Declare the topic's exchange and a durable queue per group, bound to it.

        ``retention_seconds`` becomes the queues' message TTL and ``retention_messages``
        their max length (both dead-letter to ``<topic>.dlq``); ``options`` may set
        ``queue_type``, ``max_priority``, ``message_ttl``, ``max_length``, and on a headers
        exchange ``match.<header>`` / ``x-match`` (the groups' binding arguments). Raises
        ``ConfigurationError`` for compacted topics, or a queue that exists with other
        arguments.
        """
        if spec.compacted:
            raise ConfigurationError("RabbitMQ has no compacted topics")
        queue_opts = {k: v for k, v in spec.options.items()
                      if not k.startswith("match.") and k != "x-match"}
        matches = {k[len("match."):]: v for k, v in spec.options.items() if k.startswith("match.")}
        if matches:
            if self.config.exchange_type != "headers":
                raise ConfigurationError("match.* options need exchange_type=headers")
            matches["x-match"] = spec.options.get("x-match", "all")
            for group in spec.groups:
                self.topology.header_matches[self.topology.queue_name(spec.name, group)] = matches
        options = self.config.queue.merged(
            queue_opts, spec.retention_seconds, spec.retention_messages
        )
        chan = await self._admin_channel()
        try:
            topology = self.topology
            if not spec.groups and self.config.exchange_type in PER_TOPIC_EXCHANGES:
                await topology.declare_exchange(
                    chan, topology.exchange_for(spec.name), topology.exchange_type_for(spec.name)
                )
            for group in spec.groups:
                await topology.declare_group(chan, spec.name, group, options)
        except MqkitError:
            self._admin = None
            raise

    async def bind(
        self,
        topic: str,
        group: str,
        *,
        routing_key: str | None = None,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """Bind the group's queue once more: another routing key (topic or direct
        exchanges) or header arguments (headers exchange, e.g. ``{"x-match": "any",
        "region": "eu"}``). The queue must exist (``ensure_topic``)."""
        chan = await self._admin_channel()
        topology = self.topology
        try:
            await topology.bind(
                chan, topology.queue_name(topic, group), topology.exchange_for(topic),
                topic if routing_key is None else routing_key, arguments,
            )
        except MqkitError:
            self._admin = None
            raise

    # --- request/reply -----------------------------------------------------------------
    async def _consume_replies(self, chan: Chan) -> None:
        try:
            await chan.rpc(
                chan.raw.basic_consume, REPLY_TO, self._on_reply, auto_ack=True
            )
        except Exception as exc:
            raise channel_error(exc, "consume direct replies") from exc

    def _on_reply(
        self, _ch: object, method: Basic.Deliver, props: pika.BasicProperties, body: bytes
    ) -> None:
        fut = self._replies.pop(props.correlation_id or "", None)
        if fut is None or fut.done():
            log.debug("a reply nobody waits for (late or unknown correlation id)")
            return
        fut.set_result(from_delivery(method, props, body)[0])

    async def request(self, message: Message, timeout: float) -> Message:
        """Publish ``message`` with RabbitMQ's direct reply-to and await the reply.

        The correlation id (the message id when unset) pairs them. Raises
        ``RequestTimeout`` after ``timeout`` seconds.
        """
        if self.closed:
            raise ConnectionFailed("the RabbitMQ transport is not connected")
        correlation = message.correlation_id or message.id
        request = message.with_headers(**{h.REPLY_TO: REPLY_TO, h.CORRELATION_ID: correlation})
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._replies[correlation] = fut
        try:
            async with asyncio.timeout(timeout):
                item = (self.topology.route(request.topic), request.body,
                        encode_properties(request), request.id)
                await self._check_exchanges((item,))
                await self._rpc.publish((item,))
                return await fut
        except TimeoutError as exc:
            raise RequestTimeout(
                f"no reply to {message.topic!r} within {timeout:g}s (is a responder subscribed?)"
            ) from exc
        finally:
            self._replies.pop(correlation, None)

    # --- introspection -----------------------------------------------------------------
    @property
    def reconnects(self) -> int:
        """How many times either connection was re-established."""
        return self._pub_link.reconnects + self._sub_link.reconnects

