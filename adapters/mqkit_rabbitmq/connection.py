"""AMQP connections on the event loop (pika's asyncio adapter), reconnecting with backoff.

pika is not thread-safe; here every pika object lives on the event loop thread that created
it and is only touched from there, so nothing crosses threads. pika's callbacks resolve
asyncio futures; ``Chan.rpc`` turns a callback-style channel method into an awaitable that
fails (instead of hanging) when the channel closes. Heartbeats are timers on the same loop,
so they keep flowing while handlers await; a handler that *blocks* the loop (CPU work or
blocking I/O without ``asyncio.to_thread``) stops them like it stops every asyncio task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel
from pika.connection import Connection
from pika.heartbeat import HeartbeatChecker

from mqkit.errors import ConnectionFailed, MqkitError
from mqkit_rabbitmq import wire
from mqkit_rabbitmq.config import RabbitConfig
from mqkit_rabbitmq.errors import ChannelLost, connect_error

log = logging.getLogger("mqkit.rabbitmq")

ReadyHook = Callable[[], Awaitable[None]]


class Chan:
    """A pika channel plus the futures waiting on it. Loop thread only."""

    __slots__ = ("_close_hooks", "_pending", "body_max", "closed", "generation", "number", "raw")

    def __init__(self, raw: Channel, generation: int) -> None:
        self.raw = raw
        self.number: int = raw.channel_number
        # The largest body frame the connection negotiated (frame_max less the framing).
        self.body_max: int = raw.connection.params.frame_max - wire.FRAME_OVERHEAD
        self.generation = generation
        self.closed: BaseException | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._close_hooks: list[Callable[[BaseException], None]] = []
        raw.add_on_close_callback(self._on_close)

    @property
    def is_open(self) -> bool:
        return self.closed is None and bool(self.raw.is_open)

    def on_close(self, hook: Callable[[BaseException], None]) -> None:
        """Call ``hook(reason)`` once the channel closes (at once if it already has)."""
        if self.closed is not None:
            hook(self.closed)
        else:
            self._close_hooks.append(hook)

    def _on_close(self, _channel: Channel, reason: BaseException) -> None:
        self.closed = reason
        pending, self._pending = self._pending, set()
        for fut in pending:
            if not fut.done():
                fut.set_exception(reason)
        for hook in self._close_hooks:
            try:
                hook(reason)
            except Exception:  # a hook must not stop the others
                log.exception("channel close hook failed")

    async def rpc(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a pika channel method taking ``callback=`` and await that callback's frame.

        Raises the channel's close reason (a pika exception) if it closes first.
        """
        if self.closed is not None:
            raise self.closed
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.add(fut)

        def done(frame: Any) -> None:
            if not fut.done():
                fut.set_result(frame)

        try:
            method(*args, callback=done, **kwargs)
            return await fut
        finally:
            self._pending.discard(fut)

    def write(self, data: bytes) -> None:
        """Send ``data``, whole frames of this channel, on the connection as one write.

        Writes where pika's own frames go (``_adapter_emit_data``, the one method pika's
        connection writes through since 1.0), so they keep their order with pika's frames.
        Raises ``ChannelLost`` when the channel or its connection is not open.
        """
        conn = self.raw.connection
        if self.closed is not None or not self.raw.is_open or not conn.is_open:
            raise ChannelLost("the channel closed")
        conn.bytes_sent += len(data)
        conn._adapter_emit_data(data)

    async def close(self) -> None:
        """Close the channel; safe to call twice or on a lost channel."""
        if self.closed is None and self.raw.is_open:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.on_close(lambda _reason: None if fut.done() else fut.set_result(None))
            self.raw.close()
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(5):
                    await fut


class _PromptHeartbeat(HeartbeatChecker):  # type: ignore[misc]
    """pika's heartbeat checker, with a check window of one heartbeat timeout.

    pika pads its window to timeout + 5 s and drops the connection after one silent window,
    so a silent peer took up to 2 x (timeout + 5) s to notice (12 s with ``heartbeat=1``).
    The broker sends a heartbeat every timeout / 2 s, so a healthy connection receives bytes
    in every window of one timeout; a silent one is now dropped within two heartbeats.
    """

    def _start_check_timer(self) -> None:
        self._check_interval = self._timeout
        super()._start_check_timer()


class _Connection(AsyncioConnection):  # type: ignore[misc]
    """pika's asyncio connection with ``_PromptHeartbeat``."""

    def _create_heartbeat_checker(self) -> HeartbeatChecker | None:
        timeout = self.params.heartbeat  # the negotiated value, once tuned
        return _PromptHeartbeat(self, timeout) if timeout else None


class Link:
    """One AMQP connection that comes back after it is lost.

    ``open`` connects once and raises ``ConnectionFailed`` fast (``connect_timeout``). After
    that, a lost connection is reopened in the background with exponential backoff and
    jitter (capped at ``reconnect_max_delay``) until ``close``; each time it is back, the
    ``on_ready`` hooks run (re-declare, re-subscribe). ``generation`` grows with each
    connection so users can tell a channel of an old connection from a current one.
    """

    def __init__(self, config: RabbitConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.generation = 0
        self.reconnects = 0
        self._conn: AsyncioConnection | None = None
        self._ready = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._reconnector: asyncio.Task[None] | None = None
        self._hooks: list[ReadyHook] = []
        self._opening: set[asyncio.Future[Any]] = set()

    def __repr__(self) -> str:
        return f"<Link {self.name} {self.config.url.safe()} generation={self.generation}>"

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set()

    def on_ready(self, hook: ReadyHook) -> None:
        """Run ``hook`` after every reconnect (not after the first ``open``)."""
        self._hooks.append(hook)

    def remove_hook(self, hook: ReadyHook) -> None:
        with contextlib.suppress(ValueError):
            self._hooks.remove(hook)

    async def open(self) -> None:
        """Connect (no retry). Safe to call twice. Raises ``ConnectionFailed``."""
        self._closing = False
        if self._conn is not None:
            return
        self._conn = await self._connect()
        self.generation += 1
        self._closed.clear()
        self._ready.set()

    async def _connect(self) -> AsyncioConnection:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Connection] = loop.create_future()

        def opened(conn: Connection) -> None:
            if not fut.done():
                fut.set_result(conn)

        def failed(_conn: Connection, exc: BaseException | str) -> None:
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, BaseException) else ConnectionError(exc))

        conn = _Connection(
            self.config.parameters(),
            on_open_callback=opened,
            on_open_error_callback=failed,
            on_close_callback=self._on_closed,
            custom_ioloop=loop,
        )
        try:
            async with asyncio.timeout(self.config.connect_timeout + 0.5):
                await fut
        except asyncio.CancelledError:
            self._abort(conn)
            raise
        except BaseException as exc:
            self._abort(conn)
            raise connect_error(exc, self.config.url.safe()) from exc
        return conn

    @staticmethod
    def _abort(conn: AsyncioConnection) -> None:
        with contextlib.suppress(Exception):
            if not (conn.is_closing or conn.is_closed):
                conn.close()

    def _on_closed(self, conn: Connection, reason: BaseException) -> None:
        if conn is not self._conn:
            return  # a connection that never opened, or an old one
        self._conn = None
        self._ready.clear()
        opening, self._opening = self._opening, set()
        for fut in opening:
            if not fut.done():
                fut.set_exception(ChannelLost(f"connection lost while opening a channel: {reason}"))
        if self._closing:
            self._closed.set()
            return
        log.warning(
            "connection %r to %s lost (%s: %s); reconnecting",
            self.name, self.config.url.safe(), type(reason).__name__, reason,
        )
        self._reconnector = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._closing:
            attempt += 1
            ceiling = min(self.config.reconnect_max_delay, 0.1 * 2 ** min(attempt - 1, 16))
            await asyncio.sleep(random.uniform(ceiling / 2, ceiling))
            if self._closing:
                return
            try:
                conn = await self._connect()
            except MqkitError as exc:
                log.info("reconnect %d of %r failed: %s", attempt, self.name, exc)
                continue
            if self._closing:
                self._abort(conn)
                return
            self._conn = conn
            self.generation += 1
            self.reconnects += 1
            self._ready.set()
            log.warning("connection %r to %s is back", self.name, self.config.url.safe())
            for hook in list(self._hooks):
                try:
                    await hook()
                except Exception as exc:  # the next loss triggers another round
                    log.warning("after reconnecting %r: %s: %s", self.name,
                                type(exc).__name__, exc)
            return

    async def wait_ready(self, timeout: float) -> AsyncioConnection:
        """The open connection, waiting up to ``timeout`` seconds for a reconnect."""
        if self._closing:
            raise ConnectionFailed("the RabbitMQ transport is closed")
        if not self._ready.is_set():
            try:
                async with asyncio.timeout(max(timeout, 0.0)):
                    await self._ready.wait()
            except TimeoutError as exc:
                raise ConnectionFailed(
                    f"RabbitMQ at {self.config.url.safe()} is unreachable "
                    f"(no connection for {timeout:.1f}s)"
                ) from exc
        conn = self._conn
        if conn is None:
            raise ChannelLost("connection lost")
        return conn

    async def channel(self, timeout: float) -> Chan:
        """A new open channel on the current connection."""
        conn = await self.wait_ready(timeout)
        generation = self.generation
        fut: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()
        self._opening.add(fut)

        def opened(ch: Channel) -> None:
            if not fut.done():
                fut.set_result(ch)

        try:
            conn.channel(on_open_callback=opened)
            async with asyncio.timeout(max(timeout, self.config.connect_timeout)):
                raw = await fut
        except TimeoutError as exc:
            raise ChannelLost("the broker did not open a channel in time") from exc
        finally:
            self._opening.discard(fut)
        return Chan(raw, generation)

    async def close(self) -> None:
        """Close the connection and stop reconnecting. Safe to call twice."""
        self._closing = True
        self._ready.clear()
        task = self._reconnector
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        conn = self._conn
        if conn is not None and not (conn.is_closing or conn.is_closed):
            conn.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._closed.wait()
        self._conn = None
