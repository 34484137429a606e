"""The client: connect to a broker by URL, publish, subscribe, request, run.

    async with mqkit.Client("kafka://127.0.0.1:9092") as client:
        await client.publish("orders", Order(id="o-1"), key="o-1")

        @client.subscribe("orders", group="billing")
        async def bill(order: Order) -> None: ...

        await client.run()          # until SIGINT/SIGTERM, then a graceful stop

Every method may be called from many tasks. ``close`` is safe to call twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from pydantic import SecretStr

from mqkit import headers as h
from mqkit import registry
from mqkit.batching import BatchConsumer, item_type
from mqkit.codec import decode, encode
from mqkit.consumer import Consumer, SubscriptionSpec
from mqkit.errors import ConfigurationError, MessageTooLarge, MqkitError, RequestTimeout
from mqkit.handlers import UserHandler, adapt
from mqkit.message import Delivery, Message, dlq_topic, new_id
from mqkit.middleware import DeadLetter, Logging, Retry, RetryPolicy
from mqkit.middleware.base import Handler, Middleware, compose
from mqkit.settings import Settings
from mqkit.transport import RequestReply, Requirements, TopicSpec, Transport
from mqkit.url import BrokerURL, redact_text

log = logging.getLogger("mqkit.client")

F = TypeVar("F", bound=UserHandler)
DLQ_GROUP = "mqkit.dlq"
"""The group created on every dead-letter topic so dead letters wait for inspection."""


def default_middleware(retry: RetryPolicy | None = None) -> list[Middleware]:
    """The stack a subscription gets unless told otherwise: log, dead-letter, retry."""
    return [Logging(), DeadLetter(), Retry(retry)]


class Client:
    """A connection to one broker. See the module docstring."""

    def __init__(
        self,
        url: str | Settings | None = None,
        *,
        transport: Transport | None = None,
        middleware: Sequence[Middleware] | None = None,
        **options: Any,
    ) -> None:
        if isinstance(url, Settings):
            settings = url
        else:
            settings = Settings(url=SecretStr(url)) if url else Settings()
        self.settings = settings
        raw = settings.url.get_secret_value()
        self.url = BrokerURL.parse(raw)
        self._secrets = [self.url.password] if self.url.password else []
        self._middleware = list(middleware) if middleware is not None else None
        self.transport: Transport = transport or registry.create(
            self.url, **{**settings.options, **options}
        )
        self._subscriptions: list[tuple[SubscriptionSpec, UserHandler, list[Middleware]]] = []
        self._consumers: list[Consumer | BatchConsumer] = []
        self._sources: list[AsyncIterator[Delivery]] = []  # what the started consumers read
        self._batch_subscriptions: list[
            tuple[SubscriptionSpec, UserHandler, Any, int, float, RetryPolicy]
        ] = []
        self._started_batches = 0
        self._started = 0
        self._requirements: list[tuple[str, str, Requirements]] = []
        self.failures: list[tuple[Delivery, BaseException]] = []
        """Every exception a handler raised (retried or not), for tests: see mqkit.testing."""
        self._ensured: set[str] = set()
        self._connected = False
        self._stop = asyncio.Event()

    def __repr__(self) -> str:
        return f"<mqkit.Client {self.url.safe()}>"

    @property
    def capabilities(self) -> Any:
        return self.transport.capabilities

    # --- lifecycle --------------------------------------------------------------------
    async def connect(self) -> Client:
        if not self._connected:
            try:
                await self.transport.connect()
            except MqkitError as exc:
                # Driver messages sometimes echo the URL: make sure no secret leaks.
                exc.args = tuple(
                    redact_text(str(a), self._secrets) if isinstance(a, str) else a
                    for a in exc.args
                )
                raise
            self._connected = True
        return self

    async def close(self) -> None:
        await self.stop()
        if self._connected:
            self._connected = False
            await self.transport.close()

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- publishing -------------------------------------------------------------------
    def message(
        self,
        topic: str,
        payload: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        message_id: str | None = None,
    ) -> Message:
        """Build (without sending) the message ``publish`` would send."""
        body, content_type = encode(payload)
        merged: dict[str, str] = {h.CONTENT_TYPE: content_type}
        if headers:
            merged.update(_checked_headers(headers))
        if idempotency_key is not None:
            merged[h.IDEMPOTENCY_KEY] = idempotency_key
        if correlation_id is not None:
            merged[h.CORRELATION_ID] = correlation_id
        if causation_id is not None:
            merged[h.CAUSATION_ID] = causation_id
        return Message(
            topic=topic, body=body, key=key, headers=merged, id=message_id or new_id()
        )

    async def publish(self, topic: str, payload: Any, **fields: Any) -> Message:
        """Send one message; returns it once the broker confirmed it."""
        message = self.message(topic, payload, **fields)
        await self.publish_messages((message,))
        return message

    async def publish_batch(
        self,
        topic: str,
        payloads: Iterable[Any],
        *,
        key: Callable[[Any], str | None] | None = None,
        idempotency_key: Callable[[Any], str | None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[Message]:
        """Send many messages in one go; returns when the broker confirmed all of them."""
        # The shared headers are checked once for the batch, not once per message.
        base = _checked_headers(headers) if headers else {}
        messages: list[Message] = []
        for payload in payloads:
            body, content_type = encode(payload)
            merged = {h.CONTENT_TYPE: content_type, **base}
            if idempotency_key is not None:
                ikey = idempotency_key(payload)
                if ikey is not None:
                    merged[h.IDEMPOTENCY_KEY] = ikey
            messages.append(
                Message(topic, body, key(payload) if key is not None else None, merged)
            )
        await self.publish_messages(messages)
        return messages

    async def publish_messages(self, messages: Sequence[Message]) -> None:
        """Send ready-made messages (all checked for size before any is sent)."""
        await self.connect()
        limit = self.transport.capabilities.max_message_bytes
        for m in messages:
            if m.size > limit:
                raise MessageTooLarge(
                    f"message {m.id} to {m.topic!r} is {m.size} bytes; "
                    f"{self.url.scheme}:// accepts at most {limit}"
                )
        await self.transport.publish(messages)

    # --- consuming --------------------------------------------------------------------
    def subscribe(
        self,
        topic: str,
        *,
        group: str = "default",
        concurrency: int = 8,
        prefetch: int | None = None,
        middleware: Sequence[Middleware] | None = None,
        retry: RetryPolicy | None = None,
        batch_size: int | None = None,
        batch_timeout: float = 0.05,
        requires: Requirements | None = None,
        reply: bool = True,
    ) -> Callable[[F], F]:
        """Decorator: run the async function for each message of ``topic`` in ``group``.

        ``middleware`` replaces the client's stack for this subscription; ``retry`` tunes
        the default stack's retry policy. With ``batch_size`` the function takes
        ``list[T]`` and is called with up to that many payloads at once (see
        ``mqkit.batching``). ``requires`` names what the handler needs from the transport;
        ``start()`` refuses to run it where the transport cannot promise that. Handlers
        start with ``run()`` or ``start()``.
        """
        if requires is not None:
            self._requirements.append((topic, group, requires))
        if batch_size is not None:
            return self._subscribe_batch(
                topic, group, batch_size, batch_timeout, prefetch, retry or RetryPolicy()
            )
        spec = SubscriptionSpec(topic, group, concurrency, prefetch, reply)
        if middleware is not None:
            stack = list(middleware)
        elif self._middleware is not None:
            stack = list(self._middleware)
        else:
            stack = default_middleware(retry)

        def register(func: F) -> F:
            adapt(func)  # fail at decoration time on a bad signature
            self._subscriptions.append((spec, func, stack))
            return func

        return register

    def _subscribe_batch(
        self,
        topic: str,
        group: str,
        batch_size: int,
        batch_timeout: float,
        prefetch: int | None,
        retry: RetryPolicy,
    ) -> Callable[[F], F]:
        def register(func: F) -> F:
            target = item_type(func)
            if batch_size < 1 or batch_timeout <= 0:
                raise ConfigurationError("batch_size must be >= 1 and batch_timeout > 0")
            spec = SubscriptionSpec(topic, group, 1, prefetch or batch_size * 2)
            self._batch_subscriptions.append((spec, func, target, batch_size, batch_timeout,
                                              retry))
            return func

        return register

    async def consume(
        self, topic: str, *, group: str = "default", prefetch: int = 10
    ) -> AsyncGenerator[Delivery, None]:
        """Iterate over deliveries yourself; you ack, nack or dead-letter each one."""
        await self.connect()
        source = await self._open(topic, group, prefetch)
        try:
            async for delivery in source:
                delivery.state["group"] = group
                yield delivery
        finally:
            self._forget(source)
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    async def start(self) -> None:
        """Start every registered subscription in the background.

        Raises ``ConfigurationError`` before starting anything if a subscription's
        ``requires`` cannot be met by this transport.
        """
        await self.connect()
        self._check_requirements()
        self._stop.clear()
        for spec, func, stack in self._subscriptions[self._started :]:
            self._started += 1
            source = await self._open(
                spec.topic, spec.group, spec.effective_prefetch, _attempts(stack)
            )
            consumer = Consumer(
                spec,
                source,
                compose(self._recording(adapt(func)), stack),
                reply=self._reply if spec.reply else None,
                shutdown_timeout=self.settings.shutdown_timeout,
            )
            consumer.start()
            self._consumers.append(consumer)
        for spec, func, target, size, window, retry in self._batch_subscriptions[
            self._started_batches :
        ]:
            batch_consumer = BatchConsumer(
                spec.topic,
                spec.group,
                await self._open(
                    spec.topic, spec.group, spec.effective_prefetch, retry.max_attempts
                ),
                func,
                target,
                batch_size=size,
                batch_timeout=window,
                retry=retry,
            )
            batch_consumer.start()
            self._consumers.append(batch_consumer)
            self._started_batches += 1

    async def _open(
        self, topic: str, group: str, prefetch: int, max_deliveries: int | None = None
    ) -> AsyncIterator[Delivery]:
        """Declare the topic, its group and its dead-letter topic; subscribe and attach."""
        await self._ensure_dead_letter_topic(topic)
        if not _is_pattern(topic):
            await self.transport.ensure_topic(
                TopicSpec(topic, groups=(group,), max_deliveries=max_deliveries)
            )
        source = self.transport.subscribe(topic, group, prefetch=prefetch)
        await _attach(source)
        self._sources.append(source)
        return source

    def _forget(self, source: AsyncIterator[Delivery]) -> None:
        if source in self._sources:
            self._sources.remove(source)

    @property
    def sources(self) -> tuple[AsyncIterator[Delivery], ...]:
        """The transport subscriptions the started consumers (and open ``consume`` loops)
        read, to inspect what the transport offers (Kafka's ``assignment``...)."""
        return tuple(self._sources)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every started subscription is live: on Kafka, until its group's assignment
        reached it (a lone member then owns every partition; a member joining a busy group
        may get its share in a second, cooperative step, and none when members outnumber
        partitions); elsewhere a subscription is live once started. ``TimeoutError`` after
        ``timeout`` seconds.

        For tests and warm-ups that must not publish before the consumers are in place."""
        async with asyncio.timeout(timeout):
            for source in list(self._sources):
                # Only transports whose subscriptions join a group asynchronously have this.
                wait_assigned = getattr(source, "wait_assigned", None)
                if wait_assigned is not None:
                    await wait_assigned(timeout)

    def _check_requirements(self) -> None:
        problems = [
            f"{topic} (group {group}): {reason}"
            for topic, group, requires in self._requirements
            for reason in requires.unmet(self.transport.capabilities)
        ]
        if problems:
            raise ConfigurationError(
                f"{self.url.scheme}:// cannot run these subscriptions: " + "; ".join(problems)
            )

    def _recording(self, handler: Handler) -> Handler:
        failures = self.failures

        async def recorded(delivery: Delivery) -> Any:
            try:
                return await handler(delivery)
            except Exception as exc:
                failures.append((delivery, exc))
                raise

        return recorded

    async def stop(self) -> None:
        """Graceful stop: stop fetching, finish and settle what is in flight."""
        self._stop.set()
        consumers, self._consumers = self._consumers, []
        self._sources.clear()
        self._started = self._started_batches = 0
        await asyncio.gather(*(c.stop() for c in consumers))

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        """Run every subscription until ``stop()``, SIGINT or SIGTERM; then stop gracefully."""
        await self.start()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if install_signal_handlers:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self._stop.set)
                    installed.append(sig)
        try:
            await self._stop.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.stop()

    async def ensure_topic(self, name: str, *, groups: Iterable[str] = (), **spec: Any) -> None:
        """Create ``name`` (and its groups) if missing; see ``TopicSpec`` for ``spec``."""
        await self.connect()
        await self.transport.ensure_topic(TopicSpec(name, groups=tuple(groups), **spec))

    async def _ensure_dead_letter_topic(self, topic: str) -> None:
        dlq = dlq_topic(topic)
        if dlq not in self._ensured and not topic.endswith(".dlq"):
            if _is_pattern(topic):
                return  # a pattern's dead letters go to each concrete topic's .dlq
            await self.transport.ensure_topic(TopicSpec(dlq, groups=(DLQ_GROUP,)))
            self._ensured.add(dlq)

    # --- request/reply ----------------------------------------------------------------
    async def request(
        self, topic: str, payload: Any, *, timeout: float = 5.0, response_type: Any = Any,
        **fields: Any,
    ) -> Any:
        """Send a request and wait for its reply (decoded to ``response_type``)."""
        await self.connect()
        if not isinstance(self.transport, RequestReply):
            raise ConfigurationError(
                f"{self.url.scheme}:// does not support request/reply"
            )
        fields.setdefault("correlation_id", new_id())
        message = self.message(topic, payload, **fields)
        try:
            reply = await self.transport.request(message, timeout)
        except TimeoutError as exc:
            if isinstance(exc, RequestTimeout):
                raise
            raise RequestTimeout(f"no reply to {topic!r} within {timeout:g}s") from exc
        return decode(reply.body, reply.content_type, response_type)

    async def _reply(self, delivery: Delivery, result: Any) -> None:
        reply_to = delivery.message.headers.get(h.REPLY_TO)
        if reply_to is None:
            return
        body, content_type = encode(result)
        headers = {h.CONTENT_TYPE: content_type}
        if delivery.message.correlation_id:
            headers[h.CORRELATION_ID] = delivery.message.correlation_id
        headers[h.CAUSATION_ID] = delivery.message.id
        await self.transport.publish((Message(topic=reply_to, body=body, headers=headers),))


def _attempts(stack: Sequence[Middleware]) -> int | None:
    """The deliveries a stack's Retry layer makes before giving up (None without one)."""
    for layer in stack:
        if isinstance(layer, Retry):
            return layer.policy.max_attempts
    return None


def _checked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ConfigurationError(
                f"header {name!r} must map str to str, got {type(value).__name__}"
            )
        if name in h.RESERVED:
            raise ConfigurationError(f"header {name!r} is reserved for mqkit's bookkeeping")
        if not (name.isascii() and value.isascii()) and not _utf8(name + value):
            # Lone surrogates (undecodable bytes let through): no broker can carry them.
            raise ConfigurationError(f"header {name!r} is not valid UTF-8 text")
    return dict(headers)


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


async def _attach(source: Any) -> None:
    """Await the subscription's optional ``start()`` (see ``Transport``)."""
    start = getattr(source, "start", None)
    if start is not None:
        await start()


def _is_pattern(topic: str) -> bool:
    return any(word in ("*", "#") for word in topic.split("."))


async def connect(url: str | Settings | None = None, **options: Any) -> Client:
    """A connected client for ``url`` (default: ``$MQKIT_URL``, else ``memory://``)."""
    return await Client(url, **options).connect()
