"""The codec between mqkit ``Message`` and Kafka records: key, value, headers, timestamp.

On the wire a message is a plain Kafka record, so any Kafka client reads it:

- key: the message key, UTF-8 (None when the message has none);
- value: the body; None for a tombstone (see ``tombstone``);
- headers: the message headers, UTF-8, plus ``x-mqkit-id`` (the message id);
- timestamp: the message timestamp in milliseconds (CreateTime).

Redeliveries through a retry topic add ``x-mqkit-attempt`` (the attempt the copy will be),
``x-mqkit-topic`` (the original topic) and ``x-mqkit-not-before`` (epoch seconds). These
internal headers are stripped from ``Message.headers`` on the way in, and the subscriber
believes attempt and topic only on records of its retry topic (elsewhere a producer that
bypasses mqkit could forge them). A record without ``x-mqkit-id`` (a raw producer's) gets
the id ``ce-id`` names, else ``topic:partition:offset``, which stays the same on every
redelivery.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mqkit import headers as h
from mqkit.message import Message, received_message

ID = "x-mqkit-id"
TOPIC = "x-mqkit-topic"
NOT_BEFORE = "x-mqkit-not-before"
ATTEMPT = h.ATTEMPT
TOMBSTONE = "x-mqkit-tombstone"
"""Set on a ``Message`` to publish a Kafka tombstone (a null value); set on a received one."""
INTERNAL = frozenset({ID, TOPIC, NOT_BEFORE, ATTEMPT, TOMBSTONE})
_STRIPPED = INTERNAL - {ID}
"""The internal headers ``_internal`` removes (the id is taken out before)."""

RawHeaders = list[tuple[str, str | bytes | None]]


def tombstone(topic: str, key: str) -> Message:
    """A message that deletes ``key`` from a compacted topic (published as a null value)."""
    return Message(topic=topic, body=b"", key=key, headers={TOMBSTONE: "1"})


def is_tombstone(message: Message) -> bool:
    return message.headers.get(TOMBSTONE) == "1"


def encode_headers(message: Message, extra: dict[str, str] | None = None) -> RawHeaders:
    """Kafka headers for ``message``: its headers plus ``x-mqkit-id``."""
    out: RawHeaders = [(ID, message.id.encode())]
    for name, value in message.headers.items():
        if name != ID and name != TOMBSTONE:
            out.append((name, value.encode()))
    if extra:
        out.extend((name, value.encode()) for name, value in extra.items())
    return out


def encode_value(message: Message) -> bytes | None:
    return None if is_tombstone(message) else message.body


def encode_key(message: Message) -> bytes | None:
    return None if message.key is None else message.key.encode()


def decode_headers(raw: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """All headers as text (undecodable bytes become U+FFFD; a null value becomes "")."""
    if not raw:
        return {}
    return {name: (value.decode("utf-8", "replace") if value else "") for name, value in raw}


def decode(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: dict[str, str],
    timestamp_ms: int,
    *,
    retry_copy: bool = False,
) -> tuple[Message, int]:
    """The ``Message`` for a record and its attempt number (1 unless a retry copy says).

    ``headers`` (from ``decode_headers``) is consumed: internal names are popped from it.
    Attempt and original topic are believed only with ``retry_copy`` (see ``decode_record``).
    """
    return _message(topic, partition, offset, key, value, headers, headers.pop(ID, None),
                    timestamp_ms, retry_copy)


def decode_record(
    record: Any, topic: str, partition: int, offset: int, *, retry_copy: bool
) -> tuple[Message, int]:
    """``decode`` for a ``confluent_kafka.Message`` straight off ``consume`` (``topic``,
    ``partition`` and ``offset`` are the record's, already read by the caller). The consuming
    hot path, so ``_message`` is inlined: one loop over the headers, and the internal ones
    looked for with a single set test.

    ``x-mqkit-attempt`` and ``x-mqkit-topic`` are believed only when ``retry_copy`` (the
    record was read from mqkit's retry topic): on any other topic a producer that bypasses
    mqkit could forge them, so they are stripped and ignored (attempt 1, the record's topic).
    """
    headers: dict[str, str] = {}
    message_id: str | None = None
    attempt = 1
    raw = record.headers()
    if raw and len(raw) == 1 and raw[0][0] == ID:  # what mqkit's own publish sends
        id_bytes = raw[0][1]
        message_id = id_bytes.decode("utf-8", "replace") if id_bytes else None
    elif raw:
        for name, value in raw:
            headers[name] = value.decode("utf-8", "replace") if value else ""
        message_id = headers.pop(ID, None)
        if headers and not _STRIPPED.isdisjoint(headers):
            original, claimed, message_id = _internal(headers, topic, message_id)
            if retry_copy:
                topic, attempt = original, claimed
        elif headers and not message_id:
            message_id = headers.get("ce-id")
    if not message_id:
        message_id = f"{topic}:{partition}:{offset}"
    value = record.value()
    if value is None:
        headers[TOMBSTONE] = "1"
    key = record.key()
    timestamp_ms = record.timestamp()[1]
    return received_message(
        topic,
        value or b"",
        None if key is None else key.decode("utf-8", "replace"),
        headers,
        message_id,
        timestamp_ms / 1000.0 if timestamp_ms > 0 else 0.0,
    ), attempt


def _message(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: dict[str, str],
    message_id: str | None,
    timestamp_ms: int,
    retry_copy: bool,
) -> tuple[Message, int]:
    """The end of ``decode`` (``decode_record`` inlines the same steps): internal headers
    popped (and believed only on a retry copy), an id for records without one, tombstones
    marked."""
    attempt = 1
    if headers:
        original, claimed, message_id = _internal(headers, topic, message_id)
        if retry_copy:
            topic, attempt = original, claimed
    if not message_id:
        message_id = f"{topic}:{partition}:{offset}"
    if value is None:
        headers[TOMBSTONE] = "1"
    return received_message(
        topic,
        value or b"",
        None if key is None else key.decode("utf-8", "replace"),
        headers,
        message_id,
        timestamp_ms / 1000.0 if timestamp_ms > 0 else 0.0,
    ), attempt


def _internal(
    headers: dict[str, str], topic: str, message_id: str | None
) -> tuple[str, int, str | None]:
    """Pop the internal headers: (original topic, attempt, id or ``ce-id``)."""
    attempt = 1
    if ATTEMPT in headers or TOPIC in headers or NOT_BEFORE in headers:
        topic = headers.pop(TOPIC, topic)
        headers.pop(NOT_BEFORE, None)
        attempt_text = headers.pop(ATTEMPT, "")
        attempt = int(attempt_text) if attempt_text.isdigit() else 1
    headers.pop(TOMBSTONE, None)
    return topic, attempt, message_id or headers.get("ce-id")
