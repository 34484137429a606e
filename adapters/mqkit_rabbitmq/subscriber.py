"""Consuming one group's queue: prefetch, manual acks, nack with delay, reconnects.

A ``Subscription`` owns one channel on the consuming connection with ``basic_qos(prefetch)``
and a consumer on the group's queue (declared first, so wildcard subscriptions work without
``ensure_topic``). pika's callback appends deliveries to a local buffer that ``__anext__``
hands out; at most ``prefetch`` are unacked at once, the broker's own bound.
``take(max_items, timeout)`` hands out many at once: it waits up to ``timeout`` seconds for
a first delivery, then returns up to ``max_items`` of those buffered (the core's batch
handlers use it: one wake-up per batch instead of one per message).

Settlement:
- ``ack``: ``basic_ack`` on the channel the delivery came on. If that channel is gone
  (connection lost) the ack cannot reach the broker, which redelivers the message:
  ``ChannelLost`` is raised so the caller knows.
- ``nack(delay)``: a copy with the next attempt number is published with confirms (straight
  back to the queue, or through the TTL retry queue of the delay rounded up, see
  ``topology``), then the original is acked. If the copy cannot be published the original is
  requeued (``basic_nack``) and the error raised: the message comes back either way.
- ``dead_letter``: mqkit's default, the copy with error headers goes to ``<topic>.dlq``
  (confirmed), then the original is acked.

After a reconnect the subscription declares its queue again and resumes consuming;
deliveries buffered from the lost channel are dropped (the broker redelivers them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import pika
from pika import exceptions as px
from pika.spec import Basic

from mqkit.errors import ConfigurationError, MqkitError
from mqkit.message import Delivery, Message
from mqkit_rabbitmq.config import retry_bucket_ms
from mqkit_rabbitmq.connection import Chan
from mqkit_rabbitmq.errors import ChannelLost, channel_error
from mqkit_rabbitmq.headers import encode_pika_properties, from_delivery, retry_properties

if TYPE_CHECKING:
    from mqkit_rabbitmq.transport import RabbitMQTransport

log = logging.getLogger("mqkit.rabbitmq")

_Raw = tuple[Chan, Basic.Deliver, pika.BasicProperties, bytes]


class RabbitDelivery(Delivery):
    """A delivery from a RabbitMQ queue; settled on the channel it came on."""

    __slots__ = ("_body", "_chan", "_props", "_sub", "_tag")

    def __init__(self, message: Message, attempt: int, sub: Subscription, raw: _Raw) -> None:
        super().__init__(message, attempt, sub.transport._publish_one)
        self._sub = sub
        self._chan, method, self._props, self._body = raw
        self._tag: int = method.delivery_tag

    async def _ack(self) -> None:
        self._sub._ack(self)

    async def _nack(self, delay: float | None) -> None:
        await self._sub._nack(self, delay)


class Subscription:
    """An async iterator of deliveries of one group. See the module docstring."""

    def __init__(self, transport: RabbitMQTransport, topic: str, group: str, prefetch: int):
        if prefetch < 1:
            raise ConfigurationError("prefetch must be >= 1")
        self.transport = transport
        self.topic = topic
        self.group = group
        self.prefetch = prefetch
        self.queue = transport.topology.queue_name(topic, group)
        self._buffer: deque[_Raw] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._chan: Chan | None = None
        self._consumer_tag: str | None = None
        self._started = False
        self._closed = False
        self._error: MqkitError | None = None
        self._unsettled = 0
        self._setup_lock = asyncio.Lock()
        self.ready: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None

    def start(self) -> asyncio.Task[None]:
        """Declare and start consuming now, in the background (the first ``__anext__``
        waits for it). A publish from this process waits for it too, so a subscription made
        before a publish receives it, even a wildcard one that ``ensure_topic`` never saw."""
        if self.ready is None:
            self.transport._sub_link.on_ready(self._resume)
            self.ready = asyncio.ensure_future(self._setup())
        return self.ready

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> RabbitDelivery:
        if not self._started:
            self._started = True
            await self.start()
        buffer = self._buffer
        while True:
            if self._closed or self.transport.closed:
                raise StopAsyncIteration
            while buffer:
                raw = buffer.popleft()
                if raw[0].closed is not None:
                    continue  # its channel is gone: the broker redelivers it
                message, attempt = from_delivery(raw[1], raw[2], raw[3])
                self._unsettled += 1
                return RabbitDelivery(message, attempt, self, raw)
            self._raise_error()
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup

    async def take(self, max_items: int, timeout: float) -> list[RabbitDelivery]:
        """Up to ``max_items`` deliveries: waits at most ``timeout`` seconds for the first,
        then returns those already buffered (never waits to fill). ``[]`` once closed."""
        if not self._started:
            self._started = True
            await self.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        buffer = self._buffer
        out: list[RabbitDelivery] = []
        while True:
            if self._closed or self.transport.closed:
                return out
            while buffer and len(out) < max_items:
                raw = buffer.popleft()
                if raw[0].closed is not None:
                    continue  # its channel is gone: the broker redelivers it
                message, attempt = from_delivery(raw[1], raw[2], raw[3])
                self._unsettled += 1
                out.append(RabbitDelivery(message, attempt, self, raw))
            if out:
                return out
            self._raise_error()
            left = deadline - loop.time()
            if left <= 0:
                return out
            wakeup = self._wakeup = loop.create_future()
            try:
                async with asyncio.timeout(left):
                    await wakeup
            except TimeoutError:
                return out

    def _raise_error(self) -> None:
        """Raise (once) the error that ended consuming, after the buffer was handed out."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # --- the channel -----------------------------------------------------------------------
    async def _setup(self) -> None:
        async with self._setup_lock:
            if self._closed or (self._chan is not None and self._chan.is_open):
                return
            link = self.transport._sub_link
            topology = self.transport.topology
            chan = await link.channel(self.transport.config.connect_timeout)
            try:
                try:
                    await topology.declare_group(chan, self.topic, self.group)
                except ConfigurationError:
                    # The queue exists with other arguments (declared elsewhere): use it.
                    chan = await link.channel(self.transport.config.connect_timeout)
                    await topology.declare_group(chan, self.topic, self.group, passive=True)
                await chan.rpc(chan.raw.basic_qos, prefetch_count=self.prefetch)
                self._consumer_tag = chan.raw.basic_consume(
                    self.queue, lambda _ch, m, p, b: self._on_message(chan, m, p, b)
                )
                chan.raw.add_on_cancel_callback(self._on_cancelled)
            except MqkitError:
                await chan.close()
                raise
            except Exception as exc:
                await chan.close()
                raise channel_error(exc, f"consume from queue {self.queue!r}") from exc
            chan.on_close(self._on_channel_closed)
            self._chan = chan

    async def _resume(self) -> None:
        """After a reconnect: consume again."""
        if not self._closed:
            await self._setup()
            log.info("resumed consuming %s", self.queue)

    def _on_message(self, chan: Chan, method: Basic.Deliver, props: pika.BasicProperties,
                    body: bytes) -> None:
        if self._closed:
            with contextlib.suppress(Exception):
                chan.raw.basic_reject(method.delivery_tag, requeue=True)
            return
        self._buffer.append((chan, method, props, body))
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _on_cancelled(self, _frame: Any) -> None:
        self._fail(ChannelLost(f"the broker cancelled the consumer of {self.queue!r} "
                               "(queue deleted?)"))

    def _on_channel_closed(self, reason: BaseException) -> None:
        if self._closed or self.transport.closed:
            return
        if isinstance(reason, px.ChannelClosedByBroker):
            # Not a lost connection: reopen now (e.g. after a 406 from a stale ack).
            log.warning("channel of %s closed by the broker (%s); reopening", self.queue, reason)
            task = asyncio.ensure_future(self._setup())
            task.add_done_callback(self._setup_done)

    def _setup_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self._fail(exc if isinstance(exc, MqkitError) else ChannelLost(str(exc)))

    def _fail(self, error: MqkitError) -> None:
        self._error = error
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    # --- settlement ------------------------------------------------------------------------
    def _settled(self) -> None:
        self._unsettled -= 1
        if self._closed and self._unsettled == 0 and self._chan is not None:
            chan, self._chan = self._chan, None
            self._closing = asyncio.ensure_future(chan.close())

    def _ack(self, delivery: RabbitDelivery) -> None:
        chan = delivery._chan
        try:
            if not chan.is_open:
                raise ChannelLost(
                    f"cannot ack {delivery.message.id}: its channel is gone; "
                    "RabbitMQ redelivers it"
                )
            chan.raw.basic_ack(delivery._tag)
        finally:
            self._settled()

    async def _nack(self, delivery: RabbitDelivery, delay: float | None) -> None:
        transport = self.transport
        chan = delivery._chan
        topology = transport.topology
        try:
            if delay:
                bucket = retry_bucket_ms(delay)
                await transport.ensure_retry_queue(bucket)
                route = topology.retry_route(self.queue)
            else:
                bucket, route = None, topology.requeue_route(self.queue)
            props = retry_properties(
                delivery._props, delivery.message.topic, delivery.attempt + 1, bucket
            )
            encoded = encode_pika_properties(props)
            await transport.publisher.publish(((route, delivery._body, encoded, props.message_id),))
        except BaseException:
            self._settled()
            if chan.is_open:
                chan.raw.basic_nack(delivery._tag, requeue=True)
            raise
        self._ack(delivery)

    async def aclose(self) -> None:
        """Stop consuming; unhanded buffered messages go back to the queue. Deliveries
        already handed out can still be settled; the channel closes after the last one."""
        if self._closed:
            return
        self._closed = True
        self.transport._sub_link.remove_hook(self._resume)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        chan = self._chan
        if chan is None or not chan.is_open:
            return
        tag = self._consumer_tag
        if tag is not None and tag in chan.raw.consumer_tags:  # not cancelled by the broker
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.transport.config.connect_timeout):
                    await chan.rpc(chan.raw.basic_cancel, tag)
        while self._buffer:
            raw = self._buffer.popleft()
            if raw[0].is_open:
                raw[0].raw.basic_reject(raw[1].delivery_tag, requeue=True)
        if self._unsettled <= 0:
            self._chan = None
            await chan.close()
