"""Subscriptions: core NATS queue groups and JetStream durable pull consumers.

Core NATS (at most once): one subscription per subject filter, joined to the queue group
``group`` so members of a group compete and each group sees every message. Messages arrive
whether or not anyone keeps up; a consumer that falls too far behind is cut off by the server
(slow consumer) and loses messages. ``ack`` is a no-op; ``nack(delay)`` redelivers *inside this
subscription only*, from memory (the attempt count grows), so retries and dead-lettering work
while the process lives; what is waiting for redelivery when the subscription closes is lost
(logged), as core NATS promises nothing more.

JetStream (at least once): a durable pull consumer per group (explicit ack). One background
task keeps at most ``prefetch`` messages fetched-or-unsettled, with one pull request at a time
on the subscription's own inbox (``JetStreamSubscription``); ``ack`` acks (queued on
``mqkit_nats.wire.FastWire`` when the connection has it: a burst of acks is one write; else
nats-py's ``Msg.ack``; either way sent, like nats-py's, without awaiting a reply), ``nack(delay)``
naks with that delay, dead-lettering publishes the copy then *terminates* the original (the
server never redelivers it); ``attempt`` is the server's ``num_delivered``. A message whose
lease (the consumer's AckWait, counted from its fetch or its last ``+WPI``) was last renewed
``heartbeat`` seconds ago is marked in progress again while its handler runs, so AckWait does
not expire under it; ``heartbeat=0`` turns this off. A settlement that comes after the lease ran
out unrenewed is still sent, and logged as a "stale ack" warning: the server may have given the
message to another consumer meanwhile. On ``aclose`` the subscription stops pulling, waits for
its last pull (at most ``fetch_wait``) and naks what it fetched but never handed out (only then:
a nak while the pull is open would be redelivered into it), so another consumer gets it at
once; deliveries already handed out can still be settled. After a reconnect pulling simply
resumes: the durable consumer lives on the server.

Both subscriptions also hand out deliveries in bulk: ``take(max_items, timeout)`` waits up to
``timeout`` seconds for a first one, then returns up to ``max_items`` of those already received
(the core's batch handlers use it: one wake-up per batch instead of one per message).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from mqkit import headers as h
from mqkit.errors import ConfigurationError
from mqkit.message import DeadLetterPublisher, Delivery, Message
from mqkit_nats.config import NatsConfig
from mqkit_nats.headers import decode_message
from mqkit_nats.wire import FastWire

log = logging.getLogger("mqkit.nats")

_STATUS = "Status"
_DESCRIPTION = "Description"


def _is_status(msg: Msg) -> bool:
    return not msg.data and bool(msg.headers) and _STATUS in (msg.headers or {})


class _Gate:
    """An event that many waiters can await and any state change can set."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def open(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None = None) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            pass
        self._event.clear()


# --- core NATS --------------------------------------------------------------------------------


class CoreDelivery(Delivery):
    __slots__ = ("_raw", "_subscription")

    def __init__(
        self,
        message: Message,
        attempt: int,
        raw: Msg,
        subscription: CoreSubscription,
        dead_letter_publisher: DeadLetterPublisher,
    ) -> None:
        super().__init__(message, attempt, dead_letter_publisher)
        self._raw = raw
        self._subscription = subscription

    async def _ack(self) -> None:
        self._subscription._settled()

    async def _nack(self, delay: float | None) -> None:
        self._subscription._redeliver(self, delay)


async def flush_after_pending(nc: NatsClient, limit: float = 2.0) -> None:
    """A server round trip that really follows the commands already queued.

    nats-py's ``flush()`` puts its PING at the front of the pending buffer, so a PONG alone
    does not prove the server has seen a SUB still waiting in that buffer (a queue-group
    member could miss messages published right after). Wait, boundedly, until the buffer
    has been handed to the socket, then flush.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    # nats-py has no event for "buffer written": poll its public counter.
    while nc.pending_data_size and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    await nc.flush()


class CoreSubscription:
    """Async iterator of deliveries from a core NATS queue group. See the module docstring."""

    def __init__(
        self,
        nc: NatsClient,
        filters: list[str],
        group: str,
        prefetch: int,
        dead_letter_publisher: DeadLetterPublisher,
        on_close: Callable[[Any], None],
    ) -> None:
        if prefetch < 1:
            raise ConfigurationError("prefetch must be >= 1")
        self._nc = nc
        self._filters = filters
        self._group = group
        self._prefetch = prefetch
        self._dead_letter_publisher = dead_letter_publisher
        self._on_close = on_close
        self._subs: list[Subscription] = []
        # Received, not yet handed out; at most _room_for of them, then nats-py's own
        # pending queue holds the rest (and the server cuts off a consumer too slow for both).
        self._incoming: collections.deque[Msg] = collections.deque()
        self._room_for = max(prefetch, 1024)
        self._room = _Gate()  # _incoming has room again, or closed
        self._again: collections.deque[CoreDelivery] = collections.deque()
        self._timers: set[asyncio.TimerHandle] = set()
        self._unsettled = 0
        self._gate = _Gate()
        self._started: asyncio.Future[None] | None = None
        self._closed = False

    def __aiter__(self) -> CoreSubscription:
        return self

    def start(self) -> asyncio.Future[None]:
        """Subscribe (once; the transport starts it as soon as it is created).

        Awaiting the result returns when the server has the subscription: a message
        published after that reaches it.
        """
        if self._started is None:
            self._started = asyncio.ensure_future(self._subscribe())
        return self._started

    async def _subscribe(self) -> None:
        for subject in self._filters:
            self._subs.append(await self._nc.subscribe(subject, queue=self._group, cb=self._on_msg))
        await flush_after_pending(self._nc)

    async def _on_msg(self, msg: Msg) -> None:
        if self._closed:
            return
        incoming = self._incoming
        while len(incoming) >= self._room_for:
            await self._room.wait()
            if self._closed:
                return
        incoming.append(msg)
        self._gate.open()

    async def __anext__(self) -> CoreDelivery:
        started = self._started
        if started is None or not started.done():
            await self.start()
        else:
            started.result()  # a failed subscribe raises here, as awaiting it would
        while True:
            if self._closed:
                raise StopAsyncIteration
            delivery = self._next_ready()
            if delivery is not None:
                return delivery
            await self._gate.wait()

    async def take(self, max_items: int, timeout: float) -> list[CoreDelivery]:
        """Up to ``max_items`` deliveries: waits at most ``timeout`` seconds for the first,
        then returns those already received (never waits to fill). ``[]`` once closed."""
        started = self._started
        if started is None or not started.done():
            await self.start()
        else:
            started.result()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        out: list[CoreDelivery] = []
        while True:
            if self._closed:
                return out
            while len(out) < max_items:
                delivery = self._next_ready()
                if delivery is None:
                    break
                out.append(delivery)
            if out:
                return out
            left = deadline - loop.time()
            if left <= 0:
                return out
            await self._gate.wait(left)

    def _next_ready(self) -> CoreDelivery | None:
        """A redelivery or a received message, within ``prefetch``; None if there is none."""
        if self._unsettled >= self._prefetch:
            return None
        if self._again:
            delivery = self._again.popleft()
            self._unsettled += 1
            return CoreDelivery(
                delivery.message, delivery.attempt + 1, delivery._raw, self,
                self._dead_letter_publisher,
            )
        incoming = self._incoming
        if not incoming:
            return None
        if len(incoming) >= self._room_for:
            self._room.open()
        msg = incoming.popleft()
        self._unsettled += 1
        return CoreDelivery(_decode_core(msg), 1, msg, self, self._dead_letter_publisher)

    def _settled(self) -> None:
        self._unsettled -= 1
        self._gate.open()

    def _redeliver(self, delivery: CoreDelivery, delay: float | None) -> None:
        self._unsettled -= 1
        if not delay:
            self._again.append(delivery)
            self._gate.open()
            return
        loop = asyncio.get_running_loop()

        def due() -> None:
            self._timers.discard(handle)
            self._again.append(delivery)
            self._gate.open()

        handle = loop.call_later(delay, due)
        self._timers.add(handle)

    async def aclose(self) -> None:
        """Unsubscribe. What waits for local redelivery is lost (core NATS is at most once)."""
        if self._closed:
            return
        self._closed = True
        self._gate.open()
        self._room.open()
        for timer in self._timers:
            timer.cancel()
        lost = len(self._timers) + len(self._again) + len(self._incoming)
        if lost:
            log.warning(
                "core NATS subscription %s/%s closed with %d message(s) not handled "
                "(core NATS is at most once; use jetstream:// to keep them)",
                ",".join(self._filters), self._group, lost,
            )
        self._timers.clear()
        self._again.clear()
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except (nats.errors.Error, OSError) as exc:
                log.debug("unsubscribe failed: %s", exc)
        if self._started is not None and not self._started.done():
            self._started.cancel()
        self._on_close(self)


def _decode_core(msg: Msg) -> Message:
    message = decode_message(msg.subject, msg.data, msg.headers)
    if msg.reply and h.REPLY_TO not in message.headers:
        # A raw NATS request (nc.request): answer its inbox like an mqkit request.
        message = message.with_headers(**{h.REPLY_TO: msg.reply})
    return message


# --- JetStream --------------------------------------------------------------------------------


class JetStreamDelivery(Delivery):
    __slots__ = ("_lapsed", "_raw", "_subscription", "lease_ends", "received_at", "sequence")

    def __init__(
        self,
        message: Message,
        attempt: int,
        raw: Msg,
        subscription: JetStreamSubscription,
        dead_letter_publisher: DeadLetterPublisher,
        sequence: int,
        lease_ends: float,
    ) -> None:
        super().__init__(message, attempt, dead_letter_publisher)
        self._raw = raw
        self._subscription = subscription
        self.sequence = sequence
        """The message's stream sequence (what ``seek(offset=...)`` counts, minus one)."""
        self.received_at = time.monotonic()
        self.lease_ends = lease_ends
        """When (``time.monotonic()``) AckWait runs out unless renewed by ``in_progress``."""
        self._lapsed = False  # a renewal came after the lease had run out

    def _check_lease(self) -> None:
        now = time.monotonic()
        if self._lapsed or now > self.lease_ends:
            sub = self._subscription
            log.warning(
                "stale %s: delivery %s of %s/%s passed its ack timeout (AckWait %gs, %.1fs ago) "
                "and may have been redelivered; sending it anyway",
                _SETTLEMENT.get(self.settled or "", "ack"), self.message.id,
                sub.stream, sub.consumer, sub.ack_wait, now - self.lease_ends,
            )

    async def _ack(self) -> None:
        self._check_lease()
        try:
            if self.settled == "dead-lettered":
                await self._raw.term()
            elif not self._subscription._ack_command(self._raw):
                await self._raw.ack()
        finally:
            self._subscription._settled(self)

    async def _nack(self, delay: float | None) -> None:
        self._check_lease()
        try:
            limit = self._subscription.max_deliver
            if limit > 0 and self.attempt >= limit:
                # The server will not redeliver past MaxDeliver: dead-letter instead of
                # letting the message vanish from the group.
                await self._publish_dead_letter(
                    _max_deliver_letter(self.message, self.attempt, limit)
                )
                await self._raw.term()
            else:
                await self._raw.nak(delay=delay)
        finally:
            self._subscription._settled(self)

    async def in_progress(self) -> None:
        """Tell the server the handler is still working (resets AckWait)."""
        now = time.monotonic()
        if now > self.lease_ends:
            self._lapsed = True  # too late: the server may have redelivered it already
        await self._raw.in_progress()
        self.lease_ends = now + self._subscription.ack_wait


_SETTLEMENT = {"acked": "ack", "nacked": "nack", "dead-lettered": "dead-letter"}


def _max_deliver_letter(message: Message, attempt: int, limit: int) -> Message:
    from mqkit.message import dead_letter_message

    return dead_letter_message(
        message, attempt, "max-deliver", extra_headers={"x-nats-max-deliver": str(limit)}
    )


class _Pull:
    """The one pull request in flight: done when its batch arrived or a status ended it."""

    __slots__ = ("done", "got", "reply", "status", "wanted")

    def __init__(self, reply: str, wanted: int) -> None:
        self.reply = reply
        self.wanted = wanted
        self.got = 0
        self.status: tuple[str, str] | None = None  # (code, description) of a status reply
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def end(self, status: tuple[str, str] | None = None) -> None:
        if not self.done.done():
            self.status = status
            self.done.set_result(None)


# A pull request is given up locally this long after it should have expired on the server
# (its status reply was lost with the connection): the loop then sends another.
_PULL_MARGIN = 1.0
# Statuses that end a pull normally: 408 it expired, 404 nothing to fetch (no_wait).
_PULL_ENDED = ("408", "404")


class JetStreamSubscription:
    """Async iterator of deliveries from a durable pull consumer. See the module docstring.

    It pulls through its own inbox subscription rather than nats-py's ``fetch``, which waits
    for each message with a task of its own (a third of a consumer's CPU per message): one
    pull request at a time asks for the room left under ``prefetch`` (when at least half of
    it is free, or nothing is left to hand out), and each message is buffered as it arrives.
    """

    def __init__(
        self,
        nc: NatsClient,
        js: JetStreamContext,
        bind: Callable[[], Awaitable[tuple[str, str]]],
        config: NatsConfig,
        prefetch: int,
        dead_letter_publisher: DeadLetterPublisher,
        on_close: Callable[[Any], None],
        wire: Callable[[], FastWire | None] = lambda: None,
    ) -> None:
        if prefetch < 1:
            raise ConfigurationError("prefetch must be >= 1")
        self._nc = nc
        self._js = js
        self._bind = bind
        self._config = config
        self._prefetch = prefetch
        self._refill = max(1, prefetch // 2)
        self._dead_letter_publisher = dead_letter_publisher
        self._on_close = on_close
        self._wire = wire
        self.max_deliver = config.max_deliver
        self.ack_wait = config.ack_wait
        """The consumer's AckWait in seconds (read from the server when the subscription
        starts: a consumer made elsewhere may differ from this transport's option)."""
        self._inbox: Subscription | None = None
        self._next_subject = ""  # where pull requests go
        self._replies = ""  # this subscription's inbox prefix; a pull's reply adds a number
        self._numbers = itertools.count()
        self._pull: _Pull | None = None
        # Fetched, not yet handed out, each with when its lease runs out.
        self._buffer: collections.deque[tuple[Msg, float]] = collections.deque()
        self._unsettled: dict[int, JetStreamDelivery] = {}
        self._gate = _Gate()  # something to hand out, or closed
        self._capacity = _Gate()  # room to pull more, or closed
        self._wants_room = False  # the pull loop waits on _capacity
        self._fetcher: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._closed = False
        self._drained = False  # closed, and the last pull ended
        self.stream = ""
        self.consumer = ""

    def __aiter__(self) -> JetStreamSubscription:
        return self

    async def start(self) -> None:
        """Bind to the durable consumer and start pulling (``__anext__`` does it on first use)."""
        async with self._start_lock:
            if self._inbox is not None or self._closed:
                return
            self.stream, self.consumer = await self._bind()
            self._next_subject = f"{api.DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{self.stream}." \
                f"{self.consumer}"
            replies = self._nc.new_inbox() + "."
            self._inbox = await self._nc.subscribe(replies + "*", cb=self._on_msg)
            self._replies = replies
            await self._read_ack_wait()
            self._fetcher = asyncio.create_task(
                self._fetch_loop(), name=f"mqkit-nats-fetch-{self.stream}-{self.consumer}"
            )
            if self._config.heartbeat > 0:
                self._ticker = asyncio.create_task(
                    self._heartbeats(), name=f"mqkit-nats-wpi-{self.stream}-{self.consumer}"
                )

    async def _read_ack_wait(self) -> None:
        try:
            info = await self._js.consumer_info(self.stream, self.consumer)
        except Exception as exc:  # keep the option's value: only the stale-ack check uses it
            log.debug("consumer info of %s/%s: %s", self.stream, self.consumer, exc)
            return
        if info.config.ack_wait:
            self.ack_wait = float(info.config.ack_wait)

    async def __anext__(self) -> JetStreamDelivery:
        if self._inbox is None:
            await self.start()
        while True:
            if self._closed:
                raise StopAsyncIteration
            buffer = self._buffer
            if buffer:
                delivery = self._deliver(*buffer.popleft())
                if not buffer:
                    self._room_changed()
                return delivery
            await self._gate.wait()

    async def take(self, max_items: int, timeout: float) -> list[JetStreamDelivery]:
        """Up to ``max_items`` deliveries: waits at most ``timeout`` seconds for the first,
        then returns those already fetched (never waits to fill). ``[]`` once closed."""
        if self._inbox is None:
            await self.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._closed:
                return []
            buffer = self._buffer
            if buffer:
                deliver = self._deliver
                popleft = buffer.popleft
                out = [deliver(*popleft()) for _ in range(min(max_items, len(buffer)))]
                if not buffer:
                    self._room_changed()
                return out
            left = deadline - loop.time()
            if left <= 0:
                return []
            await self._gate.wait(left)

    def _deliver(self, msg: Msg, lease_ends: float) -> JetStreamDelivery:
        stream, sequence, delivered, timestamp = _ack_metadata(msg)
        message = decode_message(
            msg.subject,
            msg.data,
            msg.headers,
            fallback_id=f"{stream}:{sequence}",
            timestamp=timestamp,
        )
        delivery = JetStreamDelivery(
            message, delivered, msg, self, self._dead_letter_publisher, sequence, lease_ends
        )
        self._unsettled[id(delivery)] = delivery
        return delivery

    def _ack_command(self, msg: Msg) -> bool:
        """Queue the ack of ``msg`` on the fast wire; ``False`` when there is none."""
        wire = self._wire()
        if wire is None:
            return False
        wire.queue(b"PUB %b 0\r\n\r\n" % msg.reply.encode())
        return True

    def _settled(self, delivery: JetStreamDelivery) -> None:
        self._unsettled.pop(id(delivery), None)
        self._room_changed()

    def _room(self) -> int:
        """How many more messages to pull now (0: not yet)."""
        buffer = self._buffer
        room = self._prefetch - len(buffer) - len(self._unsettled)
        # Pull when half the room is free, or when nothing is left to hand out: a pull per
        # settled message would cost a request per message.
        return room if room >= self._refill or (room > 0 and not buffer) else 0

    def _room_changed(self) -> None:
        if self._wants_room and self._room():
            self._capacity.open()

    async def _on_msg(self, msg: Msg) -> None:
        """Every reply to this subscription's pulls: messages, and statuses that end a pull."""
        pull = self._pull
        headers = msg.headers
        if headers and not msg.data and _STATUS in headers:
            if pull is not None and msg.subject == pull.reply:
                pull.end((headers[_STATUS], headers.get(_DESCRIPTION, "")))
            return  # a status of a pull given up on: nothing to do
        if self._drained:
            await _nak_all([msg])  # arrived after the last pull ended: to another consumer
            return
        self._buffer.append((msg, time.monotonic() + self.ack_wait))
        self._gate.open()
        if pull is not None:
            pull.got += 1
            if pull.got >= pull.wanted:
                pull.end()

    async def _fetch_loop(self) -> None:
        nc = self._nc
        wait = self._config.fetch_wait
        expires = int(wait * 1e9) - 100_000  # the server's clock ends the pull a bit earlier
        failures = 0
        while not self._closed:
            room = self._room()
            if room <= 0:
                self._wants_room = True
                await self._capacity.wait()
                self._wants_room = False
                continue
            if not nc.is_connected:
                # Reconnecting: a pull now would wait in nats-py's buffer and reach the server
                # with those of later rounds, asking for more than prefetch.
                await asyncio.sleep(0.05)
                continue
            pull = _Pull(f"{self._replies}{next(self._numbers)}", room)
            self._pull = pull
            try:
                await nc.publish(
                    self._next_subject, b'{"batch":%d,"expires":%d}' % (room, expires), pull.reply
                )
                async with asyncio.timeout(wait + _PULL_MARGIN):
                    await pull.done
            except TimeoutError:
                continue  # its status was lost (connection dropped): pull again
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures = await self._pull_failed(failures, f"{type(exc).__name__}: {exc}")
                continue
            finally:
                self._pull = None
            if pull.status is None or pull.status[0] in _PULL_ENDED:
                failures = 0
            else:
                # Consumer deleted (seek re-creates it), leadership change, no responders...:
                # keep pulling; the durable consumer keeps every unacked message for us.
                code, description = pull.status
                failures = await self._pull_failed(failures, f"status {code} {description}")

    async def _pull_failed(self, failures: int, why: str) -> int:
        failures += 1
        log.warning("pulling from %s/%s failed (%s); retrying", self.stream, self.consumer, why)
        await asyncio.sleep(min(0.05 * 2**failures, 2.0))
        return failures

    async def _heartbeats(self) -> None:
        every = self._config.heartbeat
        while not (self._closed and not self._unsettled):
            await asyncio.sleep(every)
            # Renew leases not renewed for ``every`` seconds, and any that would run out
            # before the next round.
            renew_before = time.monotonic() + max(self.ack_wait - every, every)
            for delivery in list(self._unsettled.values()):
                if delivery.lease_ends <= renew_before and delivery.settled is None:
                    try:
                        await delivery.in_progress()
                    except Exception as exc:  # the ack may still succeed: keep going
                        log.debug("in-progress for %s failed: %s", delivery.message.id, exc)

    async def aclose(self) -> None:
        """Stop pulling; nak what was fetched but not handed out. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._gate.open()
        self._capacity.open()
        if self._fetcher is not None:
            try:
                async with asyncio.timeout(self._config.fetch_wait + _PULL_MARGIN):
                    await asyncio.shield(self._fetcher)  # the last pull ends
            except TimeoutError:
                self._fetcher.cancel()
            except Exception as exc:
                log.debug("fetch loop ended with %s", exc)
        # Nak only now: a nak while a pull is still open would be redelivered into it.
        self._drained = True
        buffered, self._buffer = [msg for msg, _ in self._buffer], collections.deque()
        await _nak_all(buffered)
        if self._inbox is not None:
            try:
                await self._inbox.unsubscribe()
            except (nats.errors.Error, OSError, ValueError) as exc:
                log.debug("unsubscribe failed: %s", exc)
        if not self._unsettled and self._ticker is not None:
            self._ticker.cancel()
        self._on_close(self)

    async def cancel(self) -> None:
        """Transport closing: stop everything now (unsettled messages return after AckWait)."""
        await self.aclose()
        for task in (self._fetcher, self._ticker):
            if task is not None and not task.done():
                task.cancel()


def _ack_metadata(msg: Msg) -> tuple[str, int, int, float | None]:
    """Stream, stream sequence, delivery count and stream time (seconds) of ``msg``.

    Read from its ack subject, ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.
    <pending>`` or the same after ``<domain>.<account hash>`` (v2): the same fields nats-py's
    ``Msg.metadata`` reads, at a fifth of its cost (it builds dataclasses and a datetime);
    anything else goes through ``Msg.metadata`` (which raises for a non-JetStream message).
    """
    tokens = msg.reply.split(".")
    count = len(tokens)
    if count >= 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
        first = 2 if count == 9 else 4 if count >= 11 else 0
        if first:
            try:
                return (
                    tokens[first],
                    int(tokens[first + 3]),
                    int(tokens[first + 2]),
                    int(tokens[first + 5]) / 1e9,
                )
            except ValueError:
                pass
    meta = msg.metadata
    return (
        meta.stream,
        meta.sequence.stream,
        meta.num_delivered,
        meta.timestamp.timestamp() if meta.timestamp else None,
    )


async def _nak_all(msgs: list[Msg]) -> None:
    for msg in msgs:
        try:
            await msg.nak()
        except Exception as exc:  # AckWait will bring it back anyway
            log.debug("nak failed: %s", exc)
