"""Confirmed, persistent, mandatory publishing with pipelined confirms.

One confirm-mode channel per ``Publisher``. A batch is written to the channel at once and
the call returns when the broker confirmed every message of it (confirms of many messages
arrive together, ``multiple=True``), so the round trip is paid once per batch, not once per
message. A message the broker returns (mandatory, no queue bound) or nacks makes the call
raise ``PublishError``.

Connection loss: messages whose confirm was lost with the channel are sent again once the
connection is back, until ``publish_timeout``; then the call raises ``ConnectionFailed``. A
message is therefore never silently dropped; after a loss it may arrive twice
(at-least-once), which the idempotency middleware absorbs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import pika
from pika import exceptions as px
from pika.frame import Method
from pika.spec import Basic

from mqkit.errors import ConnectionFailed, MqkitError, PublishError, PublishTimeout
from mqkit.message import Message
from mqkit_rabbitmq import wire
from mqkit_rabbitmq.config import RabbitConfig
from mqkit_rabbitmq.connection import Chan, Link
from mqkit_rabbitmq.errors import NO_ROUTE, ChannelLost, channel_error
from mqkit_rabbitmq.headers import encode_properties
from mqkit_rabbitmq.topology import Route

log = logging.getLogger("mqkit.rabbitmq")

Outgoing = tuple[Route, bytes, bytes | Message, str | None]
"""Route, body, encoded properties (or the message to encode them from, see
``headers.properties_later``) and the message id."""
ChannelHook = Callable[[Chan], Awaitable[None]]

WRITE_RUN = 64
"""Messages written to the socket at once. A large batch goes out in runs, so the broker
routes and stores the first while the next are encoded, instead of waiting for the last."""

FRAMES_REMEMBERED = 1024
"""Encoded ``Basic.Publish`` frames kept per channel (one per route in use)."""


class _Batch:
    """The messages of one ``publish`` call still waiting for their confirm."""

    __slots__ = ("errors", "fut", "lost", "remaining")

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.errors: list[MqkitError] = []
        self.lost: list[int] = []

    def done_one(self) -> None:
        self.remaining -= 1
        if self.remaining == 0 and not self.fut.done():
            self.fut.set_result(None)


class Publisher:
    """Publishes on one confirm-mode channel of ``link``. Safe to use from many tasks."""

    def __init__(self, link: Link, config: RabbitConfig, on_open: ChannelHook | None = None):
        self._link = link
        self._config = config
        self._on_open = on_open
        self._chan: Chan | None = None
        self._lock = asyncio.Lock()
        self._tag = 0
        # delivery tag -> (batch, index in batch, message id); insertion order = tag order
        self._pending: dict[int, tuple[_Batch, int, str | None]] = {}
        self._returned: dict[int, str] = {}
        self._unsettled_from = 1  # no tag below this one waits for a multiple ack
        # The Basic.Publish frame on this channel, by its payload (``Route.method``)
        self._frames: dict[bytes, bytes] = {}

    @property
    def channel(self) -> Chan | None:
        return self._chan

    async def open_channel(self, timeout: float) -> Chan:
        """The confirm-mode channel, (re)opened when needed."""
        chan = self._chan
        if chan is not None and chan.is_open:
            return chan
        async with self._lock:
            chan = self._chan
            if chan is not None and chan.is_open:
                return chan
            chan = await self._link.channel(timeout)
            try:
                await chan.rpc(chan.raw.confirm_delivery, self._on_confirm)
            except Exception as exc:
                raise channel_error(exc, "turn on publisher confirms") from exc
            chan.raw.add_on_return_callback(self._on_return)
            chan.on_close(self._on_close)
            self._tag = 0
            self._unsettled_from = 1
            self._pending = {}
            self._returned = {}
            self._frames = {}
            if self._on_open is not None:
                await self._on_open(chan)
            self._chan = chan
            return chan

    async def close(self) -> None:
        chan, self._chan = self._chan, None
        if chan is not None:
            await chan.close()

    # --- pika callbacks (loop thread) ------------------------------------------------------
    def _on_confirm(self, frame: Method[Basic.Ack | Basic.Nack]) -> None:
        method = frame.method
        tag = method.delivery_tag
        if method.multiple:
            # Every tag up to ``tag``: those not settled one by one before.
            tags: range | tuple[int] = range(self._unsettled_from, tag + 1)
            self._unsettled_from = max(self._unsettled_from, tag + 1)
        else:
            tags = (tag,)
        pop = self._pending.pop
        ok = isinstance(method, Basic.Ack)
        for each in tags:
            entry = pop(each, None)
            if entry is None:
                continue
            batch = entry[0]
            if not ok or self._returned:
                self._check_refused(each, batch, ok)
            batch.done_one()

    def _check_refused(self, tag: int, batch: _Batch, ok: bool) -> None:
        if not ok:
            batch.errors.append(PublishError("the broker refused (nacked) a message"))
            return
        why = self._returned.pop(tag, None)
        if why is not None:
            batch.errors.append(PublishError(why))

    def _on_return(
        self, _ch: object, method: Basic.Return, props: pika.BasicProperties, _body: bytes
    ) -> None:
        # A return precedes the confirm of the same message: find its oldest pending copy.
        for tag, (_batch, _index, message_id) in self._pending.items():
            if message_id == props.message_id and tag not in self._returned:
                where = f"exchange {method.exchange!r} with routing key {method.routing_key!r}"
                if method.reply_code == NO_ROUTE:
                    why = (f"unroutable: no queue is bound for {where}; declare the topic "
                           "with a group first (ensure_topic) or publish with mandatory=false")
                else:
                    why = (f"returned by the broker ({method.reply_code} {method.reply_text}) "
                           f"for {where}")
                self._returned[tag] = why
                return

    def _on_close(self, reason: BaseException) -> None:
        if self._chan is not None and self._chan.closed is reason:
            self._chan = None
        pending, self._pending = self._pending, {}
        broker_closed = isinstance(reason, px.ChannelClosedByBroker)
        for _tag, (batch, index, _mid) in pending.items():
            if broker_closed:
                batch.errors.append(PublishError(str(channel_error(reason, "publish"))))
            else:
                batch.lost.append(index)
            batch.done_one()

    # --- publishing ------------------------------------------------------------------------
    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Publish ``items`` and wait for every confirm. See the module docstring."""
        if not items:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.publish_timeout
        todo = list(items)
        while True:
            chan = await self.open_channel(deadline - loop.time())
            batch = await self._send(chan, todo)
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await asyncio.shield(batch.fut)
            except TimeoutError as exc:
                raise PublishTimeout(
                    f"the broker did not confirm {batch.remaining} of {len(todo)} message(s) "
                    f"within {self._config.publish_timeout:g}s"
                ) from exc
            if batch.errors:
                raise batch.errors[0]
            if not batch.lost:
                return
            todo = [todo[i] for i in sorted(batch.lost)]
            if loop.time() >= deadline:
                raise ConnectionFailed(
                    f"{len(todo)} message(s) unconfirmed: the connection to RabbitMQ was lost "
                    f"and did not come back within {self._config.publish_timeout:g}s"
                )
            log.info("connection lost before %d confirm(s); publishing them again", len(todo))

    def _method_frame(self, channel: int, payload: bytes) -> bytes:
        frames = self._frames
        if len(frames) >= FRAMES_REMEMBERED:  # one-off routes, such as reply addresses
            frames.clear()
        frame = frames[payload] = wire.method_frame(channel, payload)
        return frame

    async def _send(self, chan: Chan, todo: Sequence[Outgoing]) -> _Batch:
        """Write ``todo`` in runs of ``WRITE_RUN`` (one socket write each), yielding to the
        loop between runs so the broker stores each run while the next is encoded."""
        batch = _Batch(len(todo))
        total, sent = len(todo), 0
        number, body_max = chan.number, chan.body_max
        frames = self._frames
        while sent < total:
            if sent:
                await asyncio.sleep(0)
            if chan is not self._chan or not chan.is_open:
                break  # closed while we yielded: its confirms are lost (see _on_close)
            stop = min(sent + WRITE_RUN, total)
            out: list[bytes] = []
            for index in range(sent, stop):
                route, body, props, _mid = todo[index]
                frame = frames.get(route.method)
                if frame is None:
                    frame = self._method_frame(number, route.method)
                out.append(frame)
                if not isinstance(props, bytes):
                    props = encode_properties(props)
                wire.add_content(out, number, props, body, body_max)
            try:
                chan.write(b"".join(out))
            except ChannelLost:
                break  # nothing of this run went out
            # The broker numbers the messages of the channel 1, 2, ... as they arrive.
            pending, tag = self._pending, self._tag
            for index in range(sent, stop):
                tag += 1
                pending[tag] = (batch, index, todo[index][3])
            self._tag, sent = tag, stop
        if sent < total:
            # The rest goes again after a reconnect.
            batch.lost.extend(range(sent, total))
            for _ in range(sent, total):
                batch.done_one()
        return batch
