"""Message (what is sent) and Delivery (what is received, with its settlement).

A ``Message`` is immutable. Its conventional headers (idempotency key, correlation and
causation ids, content type) live in ``headers`` under the names in ``mqkit.headers`` so that
they cross every broker the same way; the properties below are read-only views of them.

A ``Delivery`` wraps a received message with the broker's attempt count and exactly one
settlement: ``ack()``, ``nack(delay)`` or ``dead_letter(reason)``. A second settlement raises
``AlreadySettledError``. Adapters subclass ``Delivery`` and implement ``_ack`` and ``_nack``;
dead-lettering defaults to "publish to ``<topic>.dlq`` through the transport, then ack", so a
message is removed from its queue only once its dead-letter copy was confirmed.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mqkit import headers as h
from mqkit.errors import AlreadySettledError
from mqkit.url import redact_urls_in_text

DLQ_SUFFIX = ".dlq"


def new_id() -> str:
    """A fresh, unique message id: 128 random bits as 32 hex digits.

    Every slice of it is random, so ``new_id()[:12]`` is a fine unique suffix. The bits come
    from ``os.urandom`` 256 ids at a time (one system call per id cost more than the rest of
    a ``Message``), cut in advance: taking one is a ``list.pop``, atomic under the GIL, so no
    lock. A forked child starts with an empty pool, so it never repeats its parent's ids.
    """
    try:
        return _id_pool.pop()
    except IndexError:
        return _refill_id_pool()


_ID_BATCH = 256
_id_pool: list[str] = []


def _refill_id_pool() -> str:
    digits = os.urandom(16 * _ID_BATCH).hex()
    ids = [digits[at : at + 32] for at in range(0, len(digits), 32)]
    mine = ids.pop()
    # Threads refilling at once each add their own fresh ids: more ids, never a repeat.
    _id_pool.extend(ids)
    return mine


os.register_at_fork(after_in_child=_id_pool.clear)


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``."""
    return topic if topic.endswith(DLQ_SUFFIX) else topic + DLQ_SUFFIX


@dataclass(frozen=True, slots=True, init=False)
class Message:
    """One message. ``body`` is bytes; codecs turn payloads into bodies and back.

    ``headers`` defaults to a new empty dict, ``id`` to ``new_id()``, ``timestamp`` to now.
    """

    topic: str
    body: bytes
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    timestamp: float = field(default_factory=time.time)
    _size: int = field(default=-1, init=False, repr=False, compare=False)

    def __init__(
        self,
        topic: str,
        body: bytes,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        id: str | None = None,
        timestamp: float | None = None,
    ) -> None:
        # The frozen dataclass's own __init__ goes through object.__setattr__ once per field;
        # the slot descriptors make construction (every publish builds one) about 2x cheaper.
        set_topic, set_body, set_key, set_headers, set_id, set_timestamp, set_size = _SET_FIELDS
        set_topic(self, topic)
        set_body(self, body)
        set_key(self, key)
        set_headers(self, {} if headers is None else headers)
        set_id(self, new_id() if id is None else id)
        set_timestamp(self, time.time() if timestamp is None else timestamp)
        set_size(self, -1)

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get(h.IDEMPOTENCY_KEY)

    @property
    def dedup_id(self) -> str | None:
        """What a de-duplicating broker should drop repeats of (see ``headers.DEDUP_ID``)."""
        return self.headers.get(h.DEDUP_ID) or self.headers.get(h.IDEMPOTENCY_KEY)

    @property
    def correlation_id(self) -> str | None:
        return self.headers.get(h.CORRELATION_ID)

    @property
    def causation_id(self) -> str | None:
        return self.headers.get(h.CAUSATION_ID)

    @property
    def content_type(self) -> str | None:
        return self.headers.get(h.CONTENT_TYPE)

    @property
    def size(self) -> int:
        """Bytes on the wire, roughly: body plus header names and values in UTF-8 (computed
        once). Bytes, not characters: a header of multi-byte text counts what it weighs."""
        if not self.headers:  # the usual case, checked once per message on every publish
            return len(self.body)
        if self._size < 0:
            size = len(self.body)
            for k, v in self.headers.items():
                if k.isascii() and v.isascii():
                    size += len(k) + len(v)
                else:
                    size += len(k.encode("utf-8", "surrogatepass"))
                    size += len(v.encode("utf-8", "surrogatepass"))
            object.__setattr__(self, "_size", size)
        return self._size

    def with_headers(self, **extra: str) -> Message:
        """A copy with ``extra`` headers merged in (underscores become dashes)."""
        merged = dict(self.headers)
        merged.update({k.replace("_", "-"): v for k, v in extra.items()})
        return replace(self, headers=merged)

    def evolve(self, **changes: Any) -> Message:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return replace(self, **changes)


# The slot descriptors of Message, for ``received_message``.
_SET_FIELDS = tuple(
    Message.__dict__[name].__set__
    for name in ("topic", "body", "key", "headers", "id", "timestamp", "_size")
)


def received_message(
    topic: str,
    body: bytes,
    key: str | None,
    headers: Mapping[str, str],
    id: str,
    timestamp: float,
) -> Message:
    """``Message(topic, body, key, headers, id, timestamp)`` at about half the cost, for
    adapters building a message per received record: it fills the slots directly instead of
    going through the frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field).
    Trusted: the caller passes every field, already of its declared type."""
    message = _new_object(Message)
    set_topic, set_body, set_key, set_headers, set_id, set_timestamp, set_size = _SET_FIELDS
    set_topic(message, topic)
    set_body(message, body)
    set_key(message, key)
    set_headers(message, headers)
    set_id(message, id)
    set_timestamp(message, timestamp)
    set_size(message, -1)
    return message


_new_object = object.__new__

DeadLetterPublisher = Callable[[Message], Awaitable[None]]


class Delivery:
    """A received message plus its settlement. Not safe to settle from several tasks at once.

    ``attempt`` is 1 on first delivery and comes from the broker's own count where it keeps
    one. ``state`` is a free dict for middleware to pass facts to the handler.
    """

    __slots__ = ("_dead_letter_publisher", "attempt", "message", "settled", "state")

    def __init__(
        self,
        message: Message,
        attempt: int,
        dead_letter_publisher: DeadLetterPublisher | None = None,
    ) -> None:
        self.message = message
        self.attempt = attempt
        self.settled: str | None = None
        self.state: dict[str, Any] = {}
        self._dead_letter_publisher = dead_letter_publisher

    def __repr__(self) -> str:
        m = self.message
        return (
            f"<{type(self).__name__} topic={m.topic!r} id={m.id!r} key={m.key!r} "
            f"attempt={self.attempt} settled={self.settled}>"
        )

    def _claim(self, how: str) -> None:
        if self.settled is not None:
            raise AlreadySettledError(
                f"delivery {self.message.id} already {self.settled}; cannot {how}"
            )
        self.settled = how

    async def ack(self) -> None:
        """The message was handled: remove it from its group's queue."""
        self._claim("acked")
        await self._ack()

    async def nack(self, delay: float | None = None) -> None:
        """Hand the message back for redelivery, not before ``delay`` seconds if given."""
        if delay is not None and delay < 0:
            raise ValueError("delay must be >= 0 seconds")
        self._claim("nacked")
        await self._nack(delay)

    async def dead_letter(
        self,
        reason: str,
        error: BaseException | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        """Move the message to ``<topic>.dlq`` with why it failed, then remove the original.

        The original is acked only after the dead-letter copy was confirmed; if publishing
        the copy fails the delivery is left unsettled (the broker will redeliver) and the
        error propagates.
        """
        if self.settled is not None:
            raise AlreadySettledError(f"delivery {self.message.id} already {self.settled}")
        letter = dead_letter_message(self.message, self.attempt, reason, error, extra_headers)
        await self._publish_dead_letter(letter)
        self._claim("dead-lettered")
        await self._ack()

    async def _publish_dead_letter(self, letter: Message) -> None:
        if self._dead_letter_publisher is None:
            raise NotImplementedError(f"{type(self).__name__} cannot dead-letter")
        await self._dead_letter_publisher(letter)

    async def _ack(self) -> None:
        raise NotImplementedError

    async def _nack(self, delay: float | None) -> None:
        raise NotImplementedError


def dead_letter_message(
    message: Message,
    attempt: int,
    reason: str,
    error: BaseException | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> Message:
    """The copy of ``message`` that goes to its dead-letter topic, with the error headers."""
    extra: dict[str, str] = {
        h.DLQ_REASON: reason,
        # Only a dead letter's own header names its original topic: on any other message
        # it is a publisher's data, and trusting it would let a replay misroute the message.
        h.DLQ_ORIGINAL_TOPIC: (
            message.headers.get(h.DLQ_ORIGINAL_TOPIC, message.topic)
            if message.topic.endswith(DLQ_SUFFIX)
            else message.topic
        ),
        h.DLQ_ATTEMPTS: str(attempt),
        h.DLQ_FAILED_AT: f"{time.time():.6f}",
        # De-duplicated by its own id: two different messages sharing an idempotency key
        # must both reach the dead-letter topic of a de-duplicating broker.
        h.DEDUP_ID: message.id,
    }
    if error is not None:
        extra[h.DLQ_ERROR_TYPE] = type(error).__qualname__
        # The error may quote a connection URL: its secrets must not travel with the letter.
        extra[h.DLQ_ERROR_MESSAGE] = _one_line(redact_urls_in_text(str(error)))[:1000]
        tb = redact_urls_in_text("".join(traceback.format_exception(error)))
        extra[h.DLQ_TRACEBACK] = tb[-4000:]
    if extra_headers:
        extra.update(extra_headers)
    if h.DLQ_GROUP in extra:
        # Each group that gives up on a message writes its own letter: one id for all of
        # them would let a de-duplicating broker (JetStream) keep only the first group's.
        extra[h.DEDUP_ID] = f"{message.id}:{extra[h.DLQ_GROUP]}"
    merged = dict(message.headers)
    merged.update(extra)
    # The dead letter keeps the original id so replay can name it as causation.
    return Message(
        topic=dlq_topic(message.topic),
        body=message.body,
        key=message.key,
        headers=merged,
        id=message.id,
        timestamp=message.timestamp,
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())
