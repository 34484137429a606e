"""The codec between mqkit's ``Message`` and AMQP's properties, headers and routing key.

Sending, a message's conventional headers become AMQP properties where AMQP has one:

    Message.id            -> message_id          content-type   -> content_type
    Message.timestamp     -> timestamp (whole s) correlation-id -> correlation_id
                             + x-mqkit-ns (int)
    Message.key           -> x-mqkit-key         reply-to       -> reply_to
    header ``priority``   -> priority (0-255, needs a queue with max_priority)
    header ``expiration`` -> expiration (per-message TTL, milliseconds, AMQP's own format)

and the rest travel as AMQP table headers (strings). ``x-mqkit-ns``, the nanoseconds past the
timestamp's second, gives the exact ``Message.timestamp`` back; a timestamp they cannot give
back exactly travels as text in ``x-mqkit-timestamp`` instead (what older mqkit versions
send; receivers read both). Small on purpose: a message without other headers and with a
32-character id has 64 bytes of properties, and RabbitMQ spends markedly less CPU on such a
message than on one with more (measured; likely the Erlang VM's 64-byte limit for binaries
kept on a process heap). Messages are persistent (``delivery_mode=2``). Receiving reverses
this; values other publishers put in headers (numbers, bytes, tables such as ``x-death``)
are turned into strings (tables as JSON) since mqkit headers map str to str. A message from
a plain AMQP publisher without ``message_id`` gets a fresh id.

Attempts: a copy republished by ``nack`` carries ``x-mqkit-attempt`` (the attempt its next
delivery is). Without it the count comes from the broker: ``x-delivery-count`` (quorum
queues), else the ``rejected`` entries of ``x-death``; a ``redelivered`` flag adds one.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import pika
from pika import exceptions as px
from pika.spec import Basic

from mqkit import headers as h
from mqkit.errors import PublishError
from mqkit.message import DLQ_SUFFIX, Message, new_id
from mqkit_rabbitmq import wire

KEY = "x-mqkit-key"
TIMESTAMP = "x-mqkit-timestamp"
"""The exact timestamp as text, when ``NANOS`` cannot give it back (and from older mqkit)."""
NANOS = "x-mqkit-ns"
"""Nanoseconds past the AMQP timestamp's whole second: with it, the exact timestamp."""
TOPIC = "x-mqkit-topic"
"""Set on copies republished straight to a queue, whose routing key is the queue's name."""
DELAY = "mqkit-retry-delay"
"""Set on copies sent to the retry exchange: names the TTL queue (milliseconds). Not an
``x-`` name: a headers exchange ignores those when matching."""
PRIORITY = "priority"
EXPIRATION = "expiration"

_AS_PROPERTY = frozenset((h.CONTENT_TYPE, h.CORRELATION_ID, h.REPLY_TO, PRIORITY, EXPIRATION))
_INTERNAL = frozenset((KEY, TIMESTAMP, NANOS, TOPIC, DELAY, h.ATTEMPT))
PERSISTENT = 2


_PLAIN_FLAGS = wire.HEADERS | wire.DELIVERY_MODE | wire.MESSAGE_ID | wire.TIMESTAMP
_NANOS_ENTRY = wire.shortstr(NANOS, NANOS) + b"I"  # a signed 32-bit int follows
_PLAIN_LAYOUTS: dict[int, struct.Struct] = {}
_PERSISTENT = bytes((PERSISTENT,))
_LATEST = 2.0**63  # AMQP's timestamp is 64 bits of seconds


def _nanos(stamp: float) -> int | None:
    """The nanoseconds past ``int(stamp)`` when they give ``stamp`` back exactly (whole
    seconds plus them, as ``from_delivery`` adds them); else None."""
    seconds = int(stamp)
    nanos = round((stamp - seconds) * 1e9)
    return nanos if seconds + nanos / 1e9 == stamp else None


def encode_properties(message: Message) -> bytes:
    """The AMQP properties of ``message`` (persistent), encoded for a content header.

    Raises ``PublishError`` for what AMQP cannot carry (a string property or header name
    over 255 bytes, a priority outside 0-255, a header value of a type AMQP lacks...).
    """
    stamp = message.timestamp
    if message.headers or message.key is not None or not 0.0 <= stamp < _LATEST:
        return _encode_full(message)
    nanos = _nanos(stamp)
    if nanos is None:
        return _encode_full(message)
    # The usual message, in one ``struct`` call (its layout made once per id length): 64
    # bytes with a 32-character id, the size RabbitMQ handles cheaply (module docstring).
    mid = message.id.encode()
    layout = _PLAIN_LAYOUTS.get(len(mid)) or _plain_layout(len(mid))
    return layout.pack(_PLAIN_FLAGS, len(_NANOS_ENTRY) + 4, _NANOS_ENTRY, nanos, PERSISTENT,
                       len(mid), mid, int(stamp))


def properties_later(message: Message) -> bytes | Message:
    """``encode_properties(message)``, or ``message`` itself when that cannot fail: the
    publisher then encodes it as it writes, so the broker starts on a batch's first
    messages while the rest are encoded. What can fail is encoded now, so a message AMQP
    cannot carry fails its call before anything is sent."""
    if message.headers or message.key is not None or len(message.id) > 63:
        return encode_properties(message)  # 63 characters are at most 252 UTF-8 bytes
    if not 0.0 <= message.timestamp < _LATEST:
        return encode_properties(message)
    return message


def _plain_layout(mid: int) -> struct.Struct:
    if mid > 255:
        raise PublishError(f"message id is {mid} bytes; AMQP allows at most 255")
    layout = struct.Struct(f">HI{len(_NANOS_ENTRY)}siBB{mid}sQ")
    if len(_PLAIN_LAYOUTS) < 64:  # id lengths barely vary; never grow without bound
        _PLAIN_LAYOUTS[mid] = layout
    return layout


def _encode_full(message: Message) -> bytes:
    src = message.headers
    stamp = message.timestamp
    if not 0.0 <= stamp < _LATEST:
        raise PublishError(f"timestamp {stamp!r} is outside what AMQP carries (0 to 2**63 s)")
    entries: dict[str, Any] = {k: v for k, v in src.items() if k not in _AS_PROPERTY}
    if message.key is not None:
        entries[KEY] = message.key
    # Ours, never a publisher's: exactly one of the two timestamp headers.
    entries.pop(TIMESTAMP, None)
    entries.pop(NANOS, None)
    nanos = _nanos(stamp)
    if nanos is None:
        entries[TIMESTAMP] = repr(stamp)
    else:
        entries[NANOS] = nanos
    mask = wire.HEADERS | wire.DELIVERY_MODE | wire.MESSAGE_ID | wire.TIMESTAMP
    pieces: list[bytes] = []
    content_type = src.get(h.CONTENT_TYPE)
    if content_type is not None:
        mask |= wire.CONTENT_TYPE
        pieces.append(wire.shortstr(content_type, "header content-type"))
    pieces.append(wire.table(entries))
    pieces.append(_PERSISTENT)
    priority = src.get(PRIORITY)
    if priority is not None:
        mask |= wire.PRIORITY
        pieces.append(bytes((_priority(priority),)))
    for flag, name in _SHORT_FIELDS:
        value = src.get(name)
        if value is not None:
            mask |= flag
            pieces.append(wire.shortstr(value, f"header {name}"))
    pieces.append(wire.shortstr(message.id, "message id"))
    pieces.append(wire.u64(int(stamp)))
    return wire.flags(mask) + b"".join(pieces)


_SHORT_FIELDS = (
    (wire.CORRELATION_ID, h.CORRELATION_ID), (wire.REPLY_TO, h.REPLY_TO),
    (wire.EXPIRATION, EXPIRATION),
)


def encode_pika_properties(props: pika.BasicProperties) -> bytes:
    """``props`` encoded for a content header (pika's own encoding)."""
    try:
        return b"".join(props.encode())
    except (AssertionError, ValueError, TypeError, px.AMQPError) as exc:
        # pika's message is the offending value, maybe long: name the error only.
        raise PublishError(
            f"cannot encode the message's properties ({type(exc).__name__})"
        ) from exc


def _priority(text: str) -> int:
    try:
        prio = int(text)
    except ValueError as exc:
        raise PublishError(f"header priority must be an integer, got {text!r}") from exc
    if not 0 <= prio <= 255:
        raise PublishError(f"header priority must be 0-255, got {prio}")
    return prio


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, default=str, separators=(",", ":"))


def from_delivery(
    method: Basic.Deliver, props: pika.BasicProperties, body: bytes
) -> tuple[Message, int]:
    """The ``Message`` a delivery carries, and its attempt number (1 on first delivery)."""
    raw: Mapping[str, Any] = props.headers or {}
    headers: dict[str, str] = {}
    for name, value in raw.items():
        if name not in _INTERNAL:
            headers[name] = _text(value)
    if props.content_type is not None:
        headers[h.CONTENT_TYPE] = props.content_type
    if props.correlation_id is not None:
        headers[h.CORRELATION_ID] = props.correlation_id
    if props.reply_to is not None:
        headers[h.REPLY_TO] = props.reply_to
    if props.priority is not None:
        headers[PRIORITY] = str(props.priority)
    if props.expiration is not None:
        headers[EXPIRATION] = props.expiration
    topic = method.routing_key
    if method.exchange == "" and TOPIC in raw:
        topic = _text(raw[TOPIC])
    if method.exchange != "" and not topic.endswith(DLQ_SUFFIX) and h.ATTEMPT in raw:
        # Only mqkit's own copies (requeue and retry routes, which arrive through the
        # default exchange) and the broker's dead letters carry a real attempt count: on a
        # topic's exchange it is a publisher's claim, and a forged 99 would dead-letter a
        # healthy message at its first failure.
        raw = {name: value for name, value in raw.items() if name != h.ATTEMPT}
    attempt = attempt_of(raw, bool(method.redelivered))
    if topic.endswith(DLQ_SUFFIX) and h.DLQ_REASON not in headers:
        _explain_native_dead_letter(raw, headers, topic, attempt)
    key = raw.get(KEY)
    message = Message(
        topic=topic,
        body=body,
        key=_text(key) if key is not None else None,
        headers=headers,
        id=props.message_id or new_id(),
        timestamp=_timestamp(raw, props.timestamp),
    )
    return message, attempt


def _timestamp(raw: Mapping[str, Any], seconds: int | None) -> float:
    """The exact timestamp (see ``encode_properties``); whole seconds from plain AMQP."""
    stamp = raw.get(TIMESTAMP)
    if stamp is not None:
        try:
            return float(_text(stamp))
        except ValueError:
            pass
    nanos = raw.get(NANOS)
    if seconds is not None and isinstance(nanos, int) and 0 <= nanos < 1_000_000_000:
        return seconds + nanos / 1e9
    return float(seconds or 0)


def _explain_native_dead_letter(
    raw: Mapping[str, Any], headers: dict[str, str], topic: str, attempt: int
) -> None:
    # The broker dead-lettered it (TTL, max-length, reject): say why in mqkit's headers.
    deaths = raw.get("x-death")
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], dict):
        return
    last = deaths[0]  # the broker puts the most recent death first
    headers[h.DLQ_REASON] = _text(last.get("reason", "dead-lettered"))
    original = raw.get(TOPIC)
    headers[h.DLQ_ORIGINAL_TOPIC] = _text(original) if original else topic[: -len(DLQ_SUFFIX)]
    headers[h.DLQ_ATTEMPTS] = str(attempt)


def attempt_of(raw: Mapping[str, Any], redelivered: bool) -> int:
    """Which delivery of a message this is (see the module docstring)."""
    base = raw.get(h.ATTEMPT)
    try:
        attempt = max(1, int(_text(base))) if base is not None else 1
    except ValueError:
        attempt = 1
    count = raw.get("x-delivery-count")
    if isinstance(count, int):
        return attempt + count
    if base is None:
        deaths = raw.get("x-death")
        if isinstance(deaths, list):
            attempt += sum(
                int(d.get("count", 0)) for d in deaths
                if isinstance(d, dict) and _text(d.get("reason", "")) == "rejected"
            )
    return attempt + 1 if redelivered else attempt


def retry_properties(
    props: pika.BasicProperties, topic: str, next_attempt: int, delay_ms: int | None
) -> pika.BasicProperties:
    """Properties of the copy a nack republishes: same message, next attempt, no expiry."""
    table = dict(props.headers or {})
    table[h.ATTEMPT] = str(next_attempt)
    table[TOPIC] = topic
    table.pop("x-delivery-count", None)
    if delay_ms is None:
        table.pop(DELAY, None)
    else:
        table[DELAY] = str(delay_ms)
    return pika.BasicProperties(
        content_type=props.content_type,
        content_encoding=props.content_encoding,
        headers=table,
        delivery_mode=PERSISTENT,
        priority=props.priority,
        correlation_id=props.correlation_id,
        reply_to=props.reply_to,
        # No expiration: a per-message TTL must not cut a retry delay short.
        message_id=props.message_id,
        timestamp=props.timestamp,
        type=props.type,
        user_id=props.user_id,
        app_id=props.app_id,
    )
