"""The transactional outbox's message format: one event -> one message.

An appended event with an ``outbox_topic`` becomes a ``Message`` whose id and idempotency
key are the event id (so consumers running ``Idempotency`` absorb a relay's duplicates),
whose key is the stream (order per aggregate on brokers that order by key), whose body is
the event data as JSON, and whose headers name the event's type, schema version, stream,
version and metadata (metadata under ``x-event-meta-<name>``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mqkit import headers as h
from mqkit.eventsourcing.events import NewEvent
from mqkit.message import Message

EVENT_TYPE = "x-event-type"
EVENT_SCHEMA_VERSION = "x-event-schema-version"
EVENT_STREAM = "x-event-stream"
EVENT_VERSION = "x-event-version"
EVENT_META_PREFIX = "x-event-meta-"


def event_message(topic: str, stream: str, version: int, event: NewEvent) -> Message:
    """The outbox message announcing ``event`` (appended as ``version`` of ``stream``)."""
    headers: dict[str, str] = {
        h.CONTENT_TYPE: "application/json",
        h.IDEMPOTENCY_KEY: event.event_id,
        h.PAYLOAD_TYPE: event.type,
        EVENT_TYPE: event.type,
        EVENT_SCHEMA_VERSION: str(event.schema_version),
        EVENT_STREAM: stream,
        EVENT_VERSION: str(version),
    }
    for name, value in event.metadata.items():
        headers[EVENT_META_PREFIX + name] = value
    body = json.dumps(event.data, separators=(",", ":")).encode()
    return Message(topic=topic, body=body, key=stream, headers=headers, id=event.event_id)


def encode_headers(headers: Mapping[str, str]) -> str:
    return json.dumps(dict(headers), separators=(",", ":"))


def decode_headers(text: str | Mapping[str, Any]) -> dict[str, str]:
    raw = json.loads(text) if isinstance(text, str) else text
    return {str(k): str(v) for k, v in raw.items()}
