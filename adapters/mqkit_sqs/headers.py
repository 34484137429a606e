"""The codec between a ``Message`` and an SQS/SNS message (body plus message attributes).

SQS carries at most 10 message attributes, so mqkit packs everything it needs into one
String attribute, ``mqkit``, holding ASCII JSON::

    {"v": 1, "id": "...", "ts": 1700000000.5, "k": "key or null", "h": {"name": "value"}}

plus ``"b": "base64"`` when the body is not text SQS accepts (SQS bodies are XML-safe
Unicode; anything else travels base64-encoded) and ``"b": "empty"`` for an empty body (SQS
and SNS refuse empty bodies, so one space is sent). Any number of headers round-trips.

Interop with raw boto3: a text body (JSON, for instance) is sent as is, so a raw consumer
reads it directly and finds the headers under ``MessageAttributes["mqkit"]``. A message a
raw producer sent without that attribute is read with its String and Number attributes as
headers, its SQS ``MessageId`` as id, its ``MessageGroupId`` as key and ``SentTimestamp`` as
timestamp.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Mapping
from typing import Any

from mqkit.message import Message

ATTRIBUTE = "mqkit"
VERSION = 1
BASE64 = "base64"
EMPTY = "empty"

# Characters SQS accepts in a body: #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000+
_INVALID_TEXT = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

Attributes = dict[str, dict[str, Any]]


def encode(message: Message) -> tuple[str, Attributes]:
    """The SQS/SNS body and message attributes of ``message``."""
    envelope: dict[str, Any] = {
        "v": VERSION,
        "id": message.id,
        "ts": message.timestamp,
        "k": message.key,
        "h": dict(message.headers),
    }
    body = _text_body(message.body)
    if body is None:
        envelope["b"] = BASE64
        body = base64.b64encode(message.body).decode("ascii")
    elif body == "":
        envelope["b"] = EMPTY
        body = " "
    value = json.dumps(envelope, ensure_ascii=True, separators=(",", ":"))
    return body, {ATTRIBUTE: {"DataType": "String", "StringValue": value}}


def wire_size(body: str, attributes: Attributes) -> int:
    """Bytes SQS counts against its limit: body plus each attribute's name, type and value."""
    size = len(body.encode("utf-8"))
    for name, attr in attributes.items():
        size += len(name.encode("utf-8")) + len(str(attr.get("DataType", "")).encode("utf-8"))
        value = attr.get("StringValue")
        if value is None:
            value = attr.get("BinaryValue", b"")
        size += len(value.encode("utf-8")) if isinstance(value, str) else len(value)
    return size


def decode(
    topic: str,
    body: str,
    attributes: Mapping[str, Mapping[str, Any]],
    system: Mapping[str, str],
    sqs_message_id: str,
) -> Message:
    """The ``Message`` an SQS message carries (mqkit's envelope, or a raw producer's)."""
    raw = attributes.get(ATTRIBUTE, {}).get("StringValue")
    envelope = _envelope(raw) if isinstance(raw, str) else None
    if envelope is None:
        return _foreign(topic, body, attributes, system, sqs_message_id)
    kind = envelope.get("b")
    if kind == BASE64:
        data = base64.b64decode(body)
    elif kind == EMPTY:
        data = b""
    else:
        data = body.encode("utf-8")
    headers = {str(k): str(v) for k, v in dict(envelope.get("h") or {}).items()}
    key = envelope.get("k")
    return Message(
        topic=topic,
        body=data,
        key=str(key) if key is not None else None,
        headers=headers,
        id=str(envelope.get("id") or sqs_message_id),
        timestamp=float(envelope.get("ts") or _sent_at(system)),
    )


def _envelope(raw: str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if isinstance(value, dict) and value.get("v") == VERSION:
        return value
    return None


def _foreign(
    topic: str,
    body: str,
    attributes: Mapping[str, Mapping[str, Any]],
    system: Mapping[str, str],
    sqs_message_id: str,
) -> Message:
    headers = {
        name: str(attr["StringValue"]) for name, attr in attributes.items() if "StringValue" in attr
    }
    return Message(
        topic=topic,
        body=body.encode("utf-8"),
        key=system.get("MessageGroupId"),
        headers=headers,
        id=sqs_message_id,
        timestamp=_sent_at(system),
    )


def _sent_at(system: Mapping[str, str]) -> float:
    try:
        return int(system["SentTimestamp"]) / 1000
    except (KeyError, ValueError):
        return time.time()


def _text_body(body: bytes) -> str | None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if _INVALID_TEXT.search(text) else text
