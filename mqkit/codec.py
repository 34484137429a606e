"""Payload codecs (bytes, JSON, pydantic models) and the CloudEvents binary-mode mapping.

``encode(payload)`` picks the codec from the payload's type and returns the body and its
content type; ``decode(body, content_type, target)`` turns a body back into ``target``
(``bytes``, ``str``, ``dict``/``list``/``Any`` for JSON, or a pydantic model class).
Decoding failures raise ``DecodeError``, which is permanent: a malformed message goes to the
dead-letter topic instead of being retried. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from mqkit import headers as h
from mqkit.errors import DecodeError
from mqkit.message import Message

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"

_adapters: dict[Any, TypeAdapter[Any]] = {}


def encode(payload: Any) -> tuple[bytes, str]:
    """Body bytes and content type for ``payload``. Raises ``TypeError`` if it cannot."""
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload), OCTET_STREAM
    if isinstance(payload, str):
        return payload.encode(), TEXT
    if isinstance(payload, BaseModel):
        return payload.model_dump_json().encode(), JSON
    try:
        return json.dumps(payload, separators=(",", ":"), default=_json_default).encode(), JSON
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"cannot encode {type(payload).__name__}: pass bytes, str, a JSON-able value "
            "or a pydantic model"
        ) from exc


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def decode(body: bytes, content_type: str | None, target: Any = Any) -> Any:
    """Decode ``body`` into ``target``; raise ``DecodeError`` (permanent) on bad input."""
    if target is bytes:
        return body
    if target is str:
        try:
            return body.decode()
        except UnicodeDecodeError as exc:
            raise DecodeError(f"body is not UTF-8 text: {exc}") from exc
    if isinstance(target, type) and issubclass(target, BaseModel):
        try:
            return target.model_validate_json(body)
        except ValidationError as exc:
            raise DecodeError(f"payload does not match {target.__name__}: {exc}") from exc
    if target is Any and content_type is not None and not content_type.startswith(JSON):
        if content_type.startswith("text/"):
            return decode(body, content_type, str)
        return body
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # a deeply nested "JSON bomb"
        raise DecodeError("body is JSON nested too deeply to decode") from exc
    if target is Any or target is object:
        return value
    adapter = _adapters.get(target)
    if adapter is None:
        adapter = _adapters[target] = TypeAdapter(target)
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        name = getattr(target, "__name__", None) or str(get_origin(target) or target)
        raise DecodeError(f"payload does not match {name}: {exc}") from exc


# --- CloudEvents binary mode -------------------------------------------------------------
# Attributes travel as ``ce-<name>`` headers and the data is the body, as in the CloudEvents
# Kafka/AMQP/HTTP binary-mode bindings. ``datacontenttype`` maps to our content-type header.

CE_PREFIX = "ce-"


def to_cloudevent_headers(
    message: Message, *, type: str, source: str, specversion: str = "1.0"
) -> dict[str, str]:
    """The ``ce-*`` headers describing ``message`` as a CloudEvent (binary mode)."""
    ce = {
        "ce-specversion": specversion,
        "ce-id": message.id,
        "ce-type": type,
        "ce-source": source,
        "ce-time": datetime.fromtimestamp(message.timestamp, UTC).isoformat().replace(
            "+00:00", "Z"
        ),
    }
    if message.key is not None:
        ce["ce-subject"] = message.key
    return ce


def as_cloudevent(message: Message, *, type: str, source: str) -> Message:
    """A copy of ``message`` carrying the CloudEvents binary-mode headers."""
    merged = dict(message.headers)
    merged.update(to_cloudevent_headers(message, type=type, source=source))
    return message.evolve(headers=merged)


def from_cloudevent_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The CloudEvents attributes in ``headers`` (names without the prefix).

    Raises ``DecodeError`` when a ``ce-*`` header is present but a required attribute
    (specversion, id, source, type) is missing.
    """
    attrs = {k[len(CE_PREFIX) :]: v for k, v in headers.items() if k.startswith(CE_PREFIX)}
    if not attrs:
        return {}
    missing = [a for a in ("specversion", "id", "source", "type") if a not in attrs]
    if missing:
        raise DecodeError(f"CloudEvent is missing required attributes: {', '.join(missing)}")
    if h.CONTENT_TYPE in headers:
        attrs.setdefault("datacontenttype", headers[h.CONTENT_TYPE])
    return attrs


def message_from_cloudevent(
    topic: str, headers: Mapping[str, str], body: bytes, key: str | None = None
) -> Message:
    """Build a Message from a binary-mode CloudEvent (its id becomes the message id)."""
    attrs = from_cloudevent_headers(headers)
    if not attrs:
        raise DecodeError("no ce-* headers: not a binary-mode CloudEvent")
    timestamp = None
    if "time" in attrs:
        try:
            timestamp = datetime.fromisoformat(attrs["time"].replace("Z", "+00:00")).timestamp()
        except ValueError as exc:
            raise DecodeError(f"ce-time is not RFC 3339: {attrs['time']!r}") from exc
    kwargs: dict[str, Any] = {"id": attrs["id"]}
    if timestamp is not None:
        kwargs["timestamp"] = timestamp
    return Message(
        topic=topic, body=body, key=key or attrs.get("subject"), headers=dict(headers), **kwargs
    )
