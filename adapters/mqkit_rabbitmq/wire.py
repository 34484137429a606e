"""AMQP 0-9-1 bytes of a publish, built without pika's frame objects.

pika's ``basic_publish`` makes a method, a header and a body frame object per message and
encodes each field through generic code: most of a confirmed publish's CPU in this process.
The bytes here are the same, built from pieces: the ``Basic.Publish`` method once per route
and channel, the content header's properties once per message (``headers.encode_properties``),
each frame header with one ``struct`` call; a run of messages goes out as one write.

Wire format: a frame is ``type (1) channel (2) size (4) payload FRAME_END``; a content
header's payload is ``class (2) weight (2) body size (8) property flags (2) fields``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from pika import data as pika_data
from pika import exceptions as px

from mqkit.errors import PublishError

FRAME_END = b"\xce"
_FRAME = struct.Struct(">BHI")
_HEADER = struct.Struct(">BHIHHQ")  # frame type, channel, size; class, weight, body size
_BODY = struct.Struct(">cBHI")  # the header frame's end; frame type, channel, size
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_PUBLISH_ID = struct.pack(">HHH", 60, 40, 0)  # Basic.Publish, ticket 0
_METHOD, _CONTENT_HEADER, _BODY_FRAME = 1, 2, 3
BASIC = 60
FRAME_OVERHEAD = 8
"""Bytes of a frame beyond its payload (type, channel, size, end): the largest body frame
carries ``frame_max - FRAME_OVERHEAD`` bytes."""

# Property flags, in wire order (the fields follow in this order).
CONTENT_TYPE = 1 << 15
HEADERS = 1 << 13
DELIVERY_MODE = 1 << 12
PRIORITY = 1 << 11
CORRELATION_ID = 1 << 10
REPLY_TO = 1 << 9
EXPIRATION = 1 << 8
MESSAGE_ID = 1 << 7
TIMESTAMP = 1 << 6


def shortstr(text: str, what: str) -> bytes:
    """An AMQP short string: length octet and UTF-8 bytes (at most 255)."""
    raw = text.encode()
    if len(raw) > 255:
        raise PublishError(f"{what} is {len(raw)} bytes; AMQP allows at most 255")
    return bytes((len(raw),)) + raw


def longstr(value: str) -> bytes:
    """A table value of type ``S``: a UTF-8 string of any length."""
    raw = value.encode()
    return b"S" + _U32.pack(len(raw)) + raw


def table(entries: Mapping[str, Any]) -> bytes:
    """An AMQP field table (its length first). ``str`` values are encoded here; anything
    else the way pika encodes it (numbers, bytes, nested tables...)."""
    pieces: list[bytes] = []
    for name, value in entries.items():
        pieces.append(shortstr(name, f"header name {name[:40]!r}"))
        if isinstance(value, str):
            pieces.append(longstr(value))
            continue
        try:
            pika_data.encode_value(pieces, value)
        except (px.UnsupportedAMQPFieldException, px.ShortStringTooLong, struct.error) as exc:
            raise PublishError(
                f"header {name[:40]!r}: AMQP cannot carry a {type(value).__name__} like this"
            ) from exc
    body = b"".join(pieces)
    return _U32.pack(len(body)) + body


def u64(value: int) -> bytes:
    return _U64.pack(value)


def flags(value: int) -> bytes:
    """The property flags word (mqkit sets none past the first 15, so one word)."""
    return struct.pack(">H", value)


def publish_method(exchange: str, routing_key: str, mandatory: bool) -> bytes:
    """The payload of a ``Basic.Publish`` method frame."""
    return (_PUBLISH_ID + shortstr(exchange, "exchange name")
            + shortstr(routing_key, "routing key") + (b"\x01" if mandatory else b"\x00"))


def method_frame(channel: int, payload: bytes) -> bytes:
    return _FRAME.pack(_METHOD, channel, len(payload)) + payload + FRAME_END


def add_content(out: list[bytes], channel: int, properties: bytes, body: bytes,
                body_max: int) -> None:
    """Append the content header and body frames of one message to ``out``."""
    size = len(body)
    out.append(_HEADER.pack(_CONTENT_HEADER, channel, 12 + len(properties), BASIC, 0, size))
    out.append(properties)
    if size <= body_max:
        if size:
            out.append(_BODY.pack(FRAME_END, _BODY_FRAME, channel, size))
            out.append(body)
        out.append(FRAME_END)
        return
    for start in range(0, size, body_max):
        chunk = body[start:start + body_max]
        out.append(_BODY.pack(FRAME_END, _BODY_FRAME, channel, len(chunk)))
        out.append(chunk)
    out.append(FRAME_END)
