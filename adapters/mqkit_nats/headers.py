"""The codec between mqkit ``Message`` and a NATS message (subject, payload, headers).

mqkit's own fields travel as headers: ``Mqkit-Id``, ``Mqkit-Key`` and ``Mqkit-Ts``; user
headers travel under their own names. NATS header values cannot hold CR/LF and lose leading
or trailing whitespace, so such values are percent-encoded and their names listed in
``Mqkit-Enc``; every other value (unicode included) is sent as is, so raw NATS clients read
them directly. On JetStream, ``Nats-Msg-Id`` carries the idempotency key (else the message id)
so the server de-duplicates within the stream's duplicate window.

A message from a raw client (no mqkit headers) decodes too: its id is its ``Nats-Msg-Id``, or
``<stream>:<sequence>`` on JetStream, else a fresh id; its timestamp is the stream's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from urllib.parse import quote, unquote

from mqkit.errors import ConfigurationError
from mqkit.message import Message, new_id

ID = "Mqkit-Id"
KEY = "Mqkit-Key"
TIMESTAMP = "Mqkit-Ts"
ENCODED = "Mqkit-Enc"
MSG_ID = "Nats-Msg-Id"
OWN = frozenset({ID, KEY, TIMESTAMP, ENCODED})
_NATS_PREFIX = "Nats-"


def _needs_encoding(value: str) -> bool:
    return value != value.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


def _check_name(name: str) -> None:
    if not name or not name.isascii() or any(c.isspace() or c == ":" for c in name):
        raise ConfigurationError(
            f"header name {name!r} cannot cross NATS: use ASCII without spaces or ':'"
        )


def encode_headers(message: Message, msg_id: str | None = None) -> dict[str, str]:
    """The NATS headers for ``message``; ``msg_id`` (JetStream) becomes ``Nats-Msg-Id``."""
    out: dict[str, str] = {ID: message.id, TIMESTAMP: repr(message.timestamp)}
    encoded: list[str] = []
    if message.key is not None:
        if _needs_encoding(message.key):
            encoded.append(KEY)
            out[KEY] = quote(message.key, safe="")
        else:
            out[KEY] = message.key
    for name, value in message.headers.items():
        _check_name(name)
        if _needs_encoding(value):
            encoded.append(name)
            out[name] = quote(value, safe="")
        else:
            out[name] = value
    if encoded:
        out[ENCODED] = ",".join(encoded)
    if msg_id is not None:
        out[MSG_ID] = msg_id
    return out


def decode_message(
    subject: str,
    data: bytes,
    headers: Mapping[str, str] | None,
    *,
    fallback_id: str | None = None,
    timestamp: float | None = None,
) -> Message:
    """The mqkit ``Message`` for a received NATS message (from mqkit or from a raw client)."""
    raw = dict(headers or {})
    encoded = set(filter(None, raw.pop(ENCODED, "").split(",")))
    if encoded:
        raw = {k: unquote(v) if k in encoded else v for k, v in raw.items()}
    message_id = raw.pop(ID, None) or raw.get(MSG_ID) or fallback_id or new_id()
    key = raw.pop(KEY, None)
    sent_at = raw.pop(TIMESTAMP, None)
    try:
        ts = float(sent_at) if sent_at is not None else (timestamp or time.time())
    except ValueError:
        ts = timestamp or time.time()
    user = {k: v for k, v in raw.items() if not k.startswith(_NATS_PREFIX)}
    return Message(topic=subject, body=data, key=key, headers=user, id=message_id, timestamp=ts)


def msg_id_for(message: Message, mode: str) -> str:
    """The ``Nats-Msg-Id`` for ``message`` under the ``msg_id`` option."""
    if mode == "idempotency-key":
        return message.dedup_id or message.id
    return message.id
