"""The codec between mqkit ``Message`` and a NATS message (subject, payload, headers).

mqkit's own fields travel as headers: ``Mqkit-Id``, ``Mqkit-Key`` and ``Mqkit-Ts``; user
headers travel under their own names. NATS header values cannot hold CR/LF and lose leading
or trailing whitespace, so such values are percent-encoded and their names listed in
``Mqkit-Enc``; every other value (unicode included) is sent as is, so raw NATS clients read
them directly. On JetStream, ``Nats-Msg-Id`` carries the idempotency key (else the message id)
so the server de-duplicates within the stream's duplicate window.

Header names must be RFC 7230 tokens (letters, digits and ``!#$%&'*+-.^_`|~``), as nats-py
requires; another name is a ``ConfigurationError`` before anything is sent. Every value
``encode_headers`` returns is wire-clean (no CR/LF, no surrounding whitespace): ids are
normalised exactly as nats-py would (stripped, CR/LF as spaces), so the dict is what travels,
whichever way it is sent (``mqkit_nats.wire`` builds the frame itself).

A message from a raw client (no mqkit headers) decodes too: its id is its ``Nats-Msg-Id``, or
``<stream>:<sequence>`` on JetStream, else a fresh id; its timestamp is the stream's.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from urllib.parse import quote, unquote

from mqkit.errors import ConfigurationError
from mqkit.message import Message, new_id
from mqkit_nats import wire
from mqkit_nats.wire import HEADER_NAME

ID = "Mqkit-Id"
KEY = "Mqkit-Key"
TIMESTAMP = "Mqkit-Ts"
ENCODED = "Mqkit-Enc"
MSG_ID = "Nats-Msg-Id"
OWN = frozenset({ID, KEY, TIMESTAMP, ENCODED})
_NATS_PREFIX = "Nats-"


def _needs_encoding(value: str) -> bool:
    return value != value.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


_NEWLINES = str.maketrans({"\r": " ", "\n": " "})


def _wire_value(value: str) -> str:
    """``value`` as nats-py would send it: stripped, CR and LF turned into spaces."""
    value = value.strip()
    if "\r" in value or "\n" in value:
        value = value.translate(_NEWLINES)
    return value


@functools.lru_cache(maxsize=1024)
def _check_name(name: str) -> None:
    if not HEADER_NAME.fullmatch(name):
        raise ConfigurationError(
            f"header name {name!r} cannot cross NATS: use letters, digits and "
            "!#$%&'*+-.^_`|~ only (an RFC 7230 token)"
        )


def encode_headers(message: Message, msg_id: str | None = None) -> dict[str, str]:
    """The NATS headers for ``message``; ``msg_id`` (JetStream) becomes ``Nats-Msg-Id``."""
    out: dict[str, str] = {ID: _wire_value(message.id), TIMESTAMP: repr(message.timestamp)}
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
        out[MSG_ID] = _wire_value(msg_id)
    return out


def header_block(message: Message, msg_id: str | None = None) -> str:
    """``encode_headers(message, msg_id)`` as the text of a NATS header block (what
    ``mqkit_nats.wire.header_block`` makes of it), without the dict for the usual message."""
    if message.key is None and not message.headers:
        end = "\r\n" if msg_id is None else f"{MSG_ID}: {_wire_value(msg_id)}\r\n\r\n"
        return (
            f"NATS/1.0\r\n{ID}: {_wire_value(message.id)}\r\n"
            f"{TIMESTAMP}: {message.timestamp!r}\r\n{end}"
        )
    return wire.header_block(encode_headers(message, msg_id))


def decode_message(
    subject: str,
    data: bytes,
    headers: Mapping[str, str] | None,
    *,
    fallback_id: str | None = None,
    timestamp: float | None = None,
) -> Message:
    """The mqkit ``Message`` for a received NATS message (from mqkit or from a raw client)."""
    if not headers:  # a raw client's plain message
        return Message(
            topic=subject,
            body=data,
            id=fallback_id or new_id(),
            timestamp=timestamp or time.time(),
        )
    raw = dict(headers)
    encoded_names = raw.pop(ENCODED, None)
    if encoded_names:
        encoded = set(filter(None, encoded_names.split(",")))
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
