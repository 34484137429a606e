"""The two transports: ``NatsTransport`` (core NATS) and ``JetStreamTransport``.

Both own one nats-py connection, opened by ``connect`` (bounded by ``connect_timeout``; an
unreachable server or refused credentials raise ``ConnectionFailed`` fast, with no secret in
the message) and closed by ``close``; both are safe to call twice. Once connected, nats-py
reconnects by itself (forever, every 0.5 s) and re-subscribes; meanwhile core publishes are
buffered and JetStream publishes wait for their PubAck up to ``request_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any, TypeGuard

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api

from mqkit import headers as h
from mqkit.errors import (
    ConfigurationError,
    ConnectionFailed,
    PublishError,
    RequestTimeout,
)
from mqkit.message import Delivery, Message
from mqkit.transport import Capabilities, TopicSpec
from mqkit.url import BrokerURL, redact_text
from mqkit_nats.config import NatsConfig, encrypted
from mqkit_nats.errors import convert, translate
from mqkit_nats.headers import decode_message, encode_headers
from mqkit_nats.publisher import CorePublisher, JetStreamPublisher
from mqkit_nats.subjects import (
    consumer_name,
    filters,
    is_pattern,
    stream_name,
    subject,
)
from mqkit_nats.subscriber import CoreSubscription, JetStreamSubscription
from mqkit_nats.tls_guard import client_class
from mqkit_nats.wire import FastWire

log = logging.getLogger("mqkit.nats")

_NO_RESPONDERS = "503"


class _Base:
    """Connection handling shared by both transports."""

    capabilities: Capabilities

    def __init__(self, url: BrokerURL | str, **options: Any) -> None:
        parsed = url if isinstance(url, BrokerURL) else BrokerURL.parse(url)
        self.config = NatsConfig.from_url(parsed, options)
        self._nc: NatsClient | None = None
        self._publisher: CorePublisher | JetStreamPublisher | None = None
        self._subscriptions: set[Any] = set()
        self._last_error: BaseException | None = None
        self._connect_lock = asyncio.Lock()
        self._connecting: asyncio.Future[None] | None = None
        self._tls_refusal: ssl.SSLError | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config.url.safe()}>"

    @property
    def nc(self) -> NatsClient:
        """The nats-py connection (for what mqkit does not wrap). Raises before ``connect``."""
        if self._nc is None or self._nc.is_closed:
            raise ConnectionFailed(f"{self.config.url.safe()} is not connected")
        return self._nc

    async def connect(self) -> None:
        async with self._connect_lock:
            if self._nc is not None and not self._nc.is_closed:
                return
            config = self.config
            nc = client_class(config.tls)()
            self._last_error = self._tls_refusal = None
            self._connecting = connecting = asyncio.ensure_future(
                nc.connect(
                    **config.connect_kwargs(),
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
            )
            try:
                async with asyncio.timeout(config.connect_timeout):
                    await connecting
            except BaseException as exc:
                connecting.cancel()
                with contextlib.suppress(Exception):
                    await nc.close()
                refusal = self._tls_refusal
                if refusal is not None:  # certificates do not fix themselves: no retry
                    raise self._connect_error(refusal, refusal) from refusal
                if isinstance(exc, asyncio.CancelledError) and not isinstance(
                    exc.__context__, TimeoutError
                ):
                    raise
                cause = self._last_error or exc
                raise self._connect_error(cause, exc) from cause
            finally:
                self._connecting = None
            if config.tls and not encrypted(nc):
                await nc.close()
                raise ConnectionFailed(
                    f"could not connect to {config.url.safe()}: TLS was asked for but the "
                    "connection is not encrypted; refused before any message was sent"
                )
            self._nc = nc
            self.capabilities = replace(self.capabilities, max_message_bytes=nc.max_payload)
            await self._after_connect(nc)

    def _connect_error(self, cause: BaseException, exc: BaseException) -> ConnectionFailed:
        what = f"could not connect to {self.config.url.safe()}"
        if isinstance(exc, TimeoutError):
            what += f" within {self.config.connect_timeout:g}s"
        error = convert(cause, what, ConnectionFailed)
        if not isinstance(error, ConnectionFailed):
            error = ConnectionFailed(str(error))
        error.args = (redact_text(str(error), self.config.secrets),)
        return error

    async def _after_connect(self, nc: NatsClient) -> None:
        pass

    def _check_wire(self) -> None:
        """Give the publisher the fast path if this connection passes its feature check."""
        if self._publisher is not None and self._nc is not None:
            self._publisher.wire = FastWire.detect(self._nc) if self.config.fast_publish else None

    def _current_wire(self) -> FastWire | None:
        return self._publisher.wire if self._publisher is not None else None

    @property
    def fast_publish(self) -> bool:
        """Whether publishes currently go through ``mqkit_nats.wire.FastWire``."""
        return self._publisher is not None and self._publisher.wire is not None

    async def _on_error(self, exc: Exception) -> None:
        if not isinstance(self._last_error, ssl.SSLError) or isinstance(exc, ssl.SSLError):
            self._last_error = exc  # a TLS error says more than the broken pipe after it
        if self._connecting is not None and _tls_refusal(exc):
            self._tls_refusal = exc
            self._connecting.cancel()
        log.warning(
            "NATS %s: %s: %s",
            self.config.url.safe(),
            type(exc).__name__,
            redact_text(str(exc), self.config.secrets),
        )

    async def _on_disconnected(self) -> None:
        if self._nc is None:
            return  # closing
        log.warning("NATS %s: disconnected, reconnecting", self.config.url.safe())

    async def _on_reconnected(self) -> None:
        log.warning("NATS %s: reconnected", self.config.url.safe())
        self._check_wire()  # another server of the cluster may answer now

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        for sub in list(self._subscriptions):
            if isinstance(sub, JetStreamSubscription):
                await sub.cancel()
            else:
                await sub.aclose()
        self._subscriptions.clear()
        wire = self._current_wire()
        if wire is not None:
            await wire.drain()  # acks queued by handlers, into nats-py's buffer
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)  # acks and naks still buffered
            await nc.close()

    async def _publish_one(self, message: Message) -> None:
        await self.publish((message,))  # type: ignore[attr-defined]

    async def request(self, message: Message, timeout: float) -> Message:
        """Send ``message`` and wait for one reply on a fresh inbox.

        Raises ``RequestTimeout`` when nothing answers in ``timeout`` seconds; on core NATS,
        at once when no responder is subscribed (the server says so).
        """
        nc = self.nc
        inbox = nc.new_inbox()
        with translate(f"request on {message.topic!r}", RequestTimeout):
            sub = await nc.subscribe(inbox, max_msgs=1)
        try:
            await self._send_request(message.with_headers(**{h.REPLY_TO: inbox}), inbox)
            try:
                reply = await sub.next_msg(timeout=timeout)
            except nats.errors.TimeoutError as exc:
                raise RequestTimeout(
                    f"no reply to {message.topic!r} within {timeout:g}s "
                    "(is a responder subscribed?)"
                ) from exc
            if not reply.data and (reply.headers or {}).get("Status") == _NO_RESPONDERS:
                raise RequestTimeout(f"no responder is subscribed to {message.topic!r}")
            return decode_message(reply.subject, reply.data, reply.headers)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _send_request(self, message: Message, inbox: str) -> None:
        raise NotImplementedError

    def _forget(self, subscription: Any) -> None:
        self._subscriptions.discard(subscription)


def _tls_refusal(exc: BaseException) -> TypeGuard[ssl.SSLError]:
    """A TLS handshake the peer or this side refused (a certificate not trusted, missing or
    for another host; no shared protocol): retrying cannot help. End-of-stream and system
    call errors may be a server restarting, so they are retried like any other."""
    transient = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError,
                 ssl.SSLWantReadError, ssl.SSLWantWriteError)
    return isinstance(exc, ssl.SSLError) and not isinstance(exc, transient)


class NatsTransport(_Base):
    """Core NATS (``nats://``): fast, at most once, nothing stored. See the package docstring."""

    def __init__(self, url: BrokerURL | str, **options: Any) -> None:
        super().__init__(url, **options)
        if self.config.url.scheme != "nats":
            raise ConfigurationError(f"NatsTransport needs nats://, got {self.config.url}")
        self.capabilities = Capabilities(
            at_least_once=False,
            persistent=False,
            retains_unconsumed=False,
            ordered_by_key=False,
            consumer_groups=True,
            native_delay=False,
            native_dead_letter=False,
            replay=False,
            transactions=False,
            request_reply=True,
            wildcards=True,
        )
        self._starting: set[asyncio.Future[None]] = set()

    async def _after_connect(self, nc: NatsClient) -> None:
        self._publisher = CorePublisher(nc, self.config)
        self._check_wire()

    async def publish(self, messages: Sequence[Message]) -> None:
        if self._publisher is None or self._nc is None:
            raise PublishError(f"{self.config.url.safe()} is not connected")
        await self._subscribed()
        await self._publisher.publish(messages)

    async def _subscribed(self) -> None:
        """Until every subscription created so far is known to the server."""
        if self._starting:
            starting, self._starting = self._starting, set()
            await asyncio.gather(*starting, return_exceptions=True)

    def subscribe(self, topic: str, group: str, *, prefetch: int = 10) -> AsyncIterator[Delivery]:
        sub = CoreSubscription(
            self.nc, filters(topic), group, prefetch, self._publish_one, self._forget
        )
        self._subscriptions.add(sub)
        # Subscribe at once rather than on first iteration, and make this transport's next
        # publish wait for it: a message published after subscribe() reaches it.
        self._starting.add(sub.start())
        return sub

    async def ensure_topic(self, spec: TopicSpec) -> None:
        """Core subjects need no declaration; the name is only checked."""
        if is_pattern(spec.name):
            filters(spec.name)
        else:
            subject(spec.name)

    async def _send_request(self, message: Message, inbox: str) -> None:
        nc = self.nc
        await self._subscribed()
        body_headers = encode_headers(message)
        with translate(f"request on {message.topic!r}"):
            await nc.publish(
                subject(message.topic), message.body, reply=inbox, headers=body_headers
            )


class JetStreamTransport(_Base):
    """JetStream (``jetstream://``): streams, durable pull consumers, at least once."""

    def __init__(self, url: BrokerURL | str, **options: Any) -> None:
        super().__init__(url, **options)
        if self.config.url.scheme != "jetstream":
            raise ConfigurationError(
                f"JetStreamTransport needs jetstream://, got {self.config.url}"
            )
        self.capabilities = Capabilities(
            at_least_once=True,
            persistent=self.config.storage == "file",
            retains_unconsumed=True,
            ordered_by_key=False,
            consumer_groups=True,
            native_delay=True,
            native_dead_letter=False,
            replay=True,
            transactions=False,
            request_reply=True,
            wildcards=False,
            # The idempotency key travels as Nats-Msg-Id unless msg_id=message-id.
            deduplicates=self.config.msg_id == "idempotency-key",
        )
        self._js: JetStreamContext | None = None
        self._streams: dict[str, str] = {}  # subject filter -> stream name

    async def _after_connect(self, nc: NatsClient) -> None:
        js = nc.jetstream(timeout=self.config.request_timeout)
        try:
            await js.account_info()
        except Exception as exc:
            await nc.close()
            self._nc = None
            raise ConnectionFailed(
                f"{self.config.url.safe()}: JetStream is not available on this server "
                f"(start nats-server with -js): {type(exc).__name__}"
            ) from exc
        self._js = js
        publisher = JetStreamPublisher(nc, self.config)
        await publisher.start()
        self._publisher = publisher
        self._check_wire()

    @property
    def js(self) -> JetStreamContext:
        """The nats-py JetStream context. Raises before ``connect``."""
        if self._js is None:
            raise ConnectionFailed(f"{self.config.url.safe()} is not connected")
        return self._js

    async def publish(self, messages: Sequence[Message]) -> None:
        if self._publisher is None or self._nc is None:
            raise PublishError(f"{self.config.url.safe()} is not connected")
        await self._publisher.publish(messages)

    # --- streams and consumers -----------------------------------------------------------
    async def _stream_for(self, subject_filter: str) -> str | None:
        found = self._streams.get(subject_filter)
        if found is not None:
            return found
        try:
            name = await self.js.find_stream_name_by_subject(subject_filter)
        except nats.js.errors.NotFoundError:
            return None
        self._streams[subject_filter] = name
        return name

    async def ensure_topic(self, spec: TopicSpec) -> None:
        """Make sure a stream captures ``spec.name``, and create a durable consumer per group.

        An existing stream capturing the subject is used as is (so a stream made for
        ``orders.#`` serves ``orders.created``); otherwise a stream ``mqkit_<topic>`` is
        created with file storage (``storage`` option), ``retention_seconds`` as MaxAge,
        ``retention_messages`` as MaxMsgs, and the ``duplicate_window``. ``spec.options`` may
        set ``max_bytes``, ``replicas``, ``duplicate_window``, ``max_msgs_per_subject``.
        Safe to call twice; an existing stream's settings are not changed.
        """
        if spec.compacted:
            raise ConfigurationError(
                "JetStream has no key compaction (keys are headers, not subjects); "
                "create the topic without compacted=True"
            )
        wanted = filters(spec.name) if is_pattern(spec.name) else [subject(spec.name)]
        stream = None
        for subject_filter in wanted:
            stream = await self._stream_for(subject_filter)
            if stream is not None:
                break
        if stream is None:
            stream = await self._create_stream(spec, wanted)
        for group in spec.groups:
            await self._ensure_consumer(stream, group, wanted)

    async def _create_stream(self, spec: TopicSpec, subjects: list[str]) -> str:
        config = self.config
        options = dict(spec.options)
        name = options.pop("stream", None) or stream_name(spec.name)
        try:
            stream_config = api.StreamConfig(
                name=name,
                subjects=subjects,
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE
                if config.storage == "file"
                else api.StorageType.MEMORY,
                max_age=spec.retention_seconds,
                max_msgs=spec.retention_messages or -1,
                max_bytes=int(options.pop("max_bytes", -1)),
                max_msgs_per_subject=int(options.pop("max_msgs_per_subject", -1)),
                num_replicas=int(options.pop("replicas", config.replicas)),
                duplicate_window=float(options.pop("duplicate_window", config.duplicate_window)),
                discard=api.DiscardPolicy.OLD,
            )
        except ValueError as exc:
            raise ConfigurationError(f"bad stream option for {spec.name!r}: {exc}") from exc
        if options:
            raise ConfigurationError(
                f"unknown topic option(s) for jetstream://: {', '.join(sorted(options))}"
            )
        with translate(f"create stream {name} for {spec.name!r}", ConfigurationError):
            try:
                await self.js.add_stream(stream_config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != 10058:  # stream name already in use (a concurrent create)
                    raise
        for subject_filter in subjects:
            self._streams[subject_filter] = name
        return name

    async def _ensure_consumer(
        self, stream: str, group: str, subject_filters: list[str], **policy: Any
    ) -> str:
        name = consumer_name(group)
        js = self.js
        if not policy:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.consumer_info(stream, name)
                return name
        config = self.config
        consumer = api.ConsumerConfig(
            name=name,
            durable_name=name,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=config.ack_wait,
            max_deliver=config.max_deliver,
            max_ack_pending=config.max_ack_pending,
            deliver_policy=policy.pop("deliver_policy", api.DeliverPolicy.ALL),
            opt_start_seq=policy.pop("opt_start_seq", None),
            opt_start_time=policy.pop("opt_start_time", None),
            description=f"mqkit group {group}",
        )
        if len(subject_filters) == 1:
            consumer.filter_subject = subject_filters[0]
        else:
            consumer.filter_subjects = subject_filters
        with translate(f"create consumer {name} on stream {stream}", ConfigurationError):
            await js.add_consumer(stream, consumer)
        return name

    def subscribe(self, topic: str, group: str, *, prefetch: int = 10) -> AsyncIterator[Delivery]:
        wanted = filters(topic) if is_pattern(topic) else [subject(topic)]

        async def bind() -> tuple[str, str]:
            found: dict[str, str] = {}
            for subject_filter in wanted:
                stream = await self._stream_for(subject_filter)
                if stream is not None:
                    found[subject_filter] = stream
            streams = set(found.values())
            if not streams:
                raise ConfigurationError(
                    f"no JetStream stream captures {topic!r}: create it with ensure_topic"
                    + (" (a pattern needs a stream covering it, e.g. ensure_topic('a.#'))"
                       if is_pattern(topic) else "")
                )
            if len(streams) > 1:
                raise ConfigurationError(
                    f"{topic!r} spans several streams ({', '.join(sorted(streams))}); a "
                    "JetStream consumer reads one stream"
                )
            [stream] = streams
            return stream, await self._ensure_consumer(stream, group, list(found))

        sub = JetStreamSubscription(
            self.nc, self.js, bind, self.config, prefetch, self._publish_one, self._forget,
            self._current_wire,
        )
        self._subscriptions.add(sub)
        return sub

    async def seek(
        self, topic: str, group: str, *, offset: int | None = None, timestamp: float | None = None
    ) -> None:
        """Replay ``group`` from ``offset`` (0-based: stream sequence ``offset + 1``) or from
        the first message at or after ``timestamp`` (Unix seconds).

        JetStream cannot move a consumer, so the durable consumer is deleted and re-created
        at that position with the same name; running subscriptions keep pulling from it.
        Messages then unacked are delivered again from the new position.
        """
        if (offset is None) == (timestamp is None):
            raise ConfigurationError("seek needs exactly one of offset or timestamp")
        wanted = filters(topic) if is_pattern(topic) else [subject(topic)]
        stream = None
        for subject_filter in wanted:
            stream = stream or await self._stream_for(subject_filter)
        if stream is None:
            raise ConfigurationError(f"no JetStream stream captures {topic!r}")
        policy: dict[str, Any]
        if offset is not None:
            if offset < 0:
                raise ConfigurationError("offset must be >= 0")
            policy = {"deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE,
                      "opt_start_seq": offset + 1}
        else:
            assert timestamp is not None
            policy = {
                "deliver_policy": api.DeliverPolicy.BY_START_TIME,
                "opt_start_time": datetime.datetime.fromtimestamp(timestamp, datetime.UTC),
            }
        name = consumer_name(group)
        with translate(f"seek {group!r} on {topic!r}", ConfigurationError):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_consumer(stream, name)
        await self._ensure_consumer(stream, group, wanted, **policy)

    async def _send_request(self, message: Message, inbox: str) -> None:
        await self.publish((message,))
