"""The codec between mqkit's ``Message`` and AMQP's properties, headers and routing key.

Sending, a message's conventional headers become AMQP properties where AMQP has one:

    Message.id            -> message_id          content-type   -> content_type
    Message.timestamp     -> timestamp (whole s) correlation-id -> correlation_id
                             + x-mqkit-timestamp (exact)
    Message.key           -> x-mqkit-key         reply-to       -> reply_to
    header ``priority``   -> priority (0-255, needs a queue with max_priority)
    header ``expiration`` -> expiration (per-message TTL, milliseconds, AMQP's own format)

and the rest travel as AMQP table headers (strings). Messages are persistent
(``delivery_mode=2``). Receiving reverses this; values other publishers put in headers
(numbers, bytes, tables such as ``x-death``) are turned into strings (tables as JSON) since
mqkit headers map str to str. A message from a plain AMQP publisher without ``message_id``
gets a fresh id.

Attempts: a copy republished by ``nack`` carries ``x-mqkit-attempt`` (the attempt its next
delivery is). Without it the count comes from the broker: ``x-delivery-count`` (quorum
queues), else the ``rejected`` entries of ``x-death``; a ``redelivered`` flag adds one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pika
from pika.spec import Basic

from mqkit import headers as h
from mqkit.errors import PublishError
from mqkit.message import DLQ_SUFFIX, Message, new_id

KEY = "x-mqkit-key"
TIMESTAMP = "x-mqkit-timestamp"
TOPIC = "x-mqkit-topic"
"""Set on copies republished straight to a queue, whose routing key is the queue's name."""
DELAY = "mqkit-retry-delay"
"""Set on copies sent to the retry exchange: names the TTL queue (milliseconds). Not an
``x-`` name: a headers exchange ignores those when matching."""
PRIORITY = "priority"
EXPIRATION = "expiration"

_AS_PROPERTY = frozenset((h.CONTENT_TYPE, h.CORRELATION_ID, h.REPLY_TO, PRIORITY, EXPIRATION))
_INTERNAL = frozenset((KEY, TIMESTAMP, TOPIC, DELAY, h.ATTEMPT))
PERSISTENT = 2


def to_properties(message: Message) -> pika.BasicProperties:
    """The AMQP properties of ``message`` (persistent)."""
    src = message.headers
    table: dict[str, Any] = {k: v for k, v in src.items() if k not in _AS_PROPERTY}
    if message.key is not None:
        table[KEY] = message.key
    table[TIMESTAMP] = repr(message.timestamp)
    priority = src.get(PRIORITY)
    prio = _priority(priority) if priority is not None else None
    return pika.BasicProperties(
        message_id=message.id,
        timestamp=int(message.timestamp),
        content_type=src.get(h.CONTENT_TYPE),
        correlation_id=src.get(h.CORRELATION_ID),
        reply_to=src.get(h.REPLY_TO),
        priority=prio,
        expiration=src.get(EXPIRATION),
        delivery_mode=PERSISTENT,
        headers=table,
    )


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
    stamp = raw.get(TIMESTAMP)
    try:
        timestamp = float(_text(stamp)) if stamp is not None else float(props.timestamp or 0)
    except ValueError:
        timestamp = float(props.timestamp or 0)
    message = Message(
        topic=topic,
        body=body,
        key=_text(key) if key is not None else None,
        headers=headers,
        id=props.message_id or new_id(),
        timestamp=timestamp,
    )
    return message, attempt


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
