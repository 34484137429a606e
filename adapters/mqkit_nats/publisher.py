"""Publishing: core NATS (sent, then flushed) and JetStream (each message's PubAck awaited).

Both check the whole batch against the server's ``max_payload`` (headers included) before
sending anything, so a refused batch publishes nothing. Core NATS has no per-message
acknowledgement: ``publish`` returns once the server answered a PING sent after the batch (the
batch reached the server; with no subscriber it is dropped, which is core NATS's at-most-once
contract). JetStream sends the batch pipelined, each message with a reply subject on this
publisher's own PubAck inbox (``<inbox>.<n>``, one wildcard subscription per connection, as
nats-py's ``publish_async`` does), and returns only when every PubAck arrived; a missing
stream, a refusal or a PubAck that does not come within ``request_timeout`` raises
``PublishError`` and the batch may be partly stored (each stored message once: a retry with the
same messages is de-duplicated by ``Nats-Msg-Id``).

Frames go out through ``mqkit_nats.wire.FastWire`` when the connection passed its feature
check (``wire`` set by the transport), else through nats-py's public ``publish``: the bytes on
the wire are the same either way.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from mqkit.errors import MessageTooLarge, PublishError, PublishTimeout
from mqkit.message import Message
from mqkit_nats.config import NatsConfig
from mqkit_nats.errors import translate
from mqkit_nats.headers import _wire_value, encode_headers, header_block, msg_id_for
from mqkit_nats.subjects import subject
from mqkit_nats.wire import CHUNK_BYTES, FastWire, hpub_head

INBOX_PREFIX = "_INBOX."
_EMPTY_BLOCK = len(b"NATS/1.0\r\n\r\n")  # a header block's bytes besides its headers
_PUB_ACK = b'{"stream":'  # how nats-server's PubAck starts (an error starts {"error":)
_NO_RESPONDERS = "503"
_CRLF = b"\r\n"
# A usual message's header block without its id and timestamp values (see _frames).
_CORE_BLOCK = len("NATS/1.0\r\nMqkit-Id: \r\nMqkit-Ts: \r\n\r\n")
_JS_BLOCK = _CORE_BLOCK + len("Nats-Msg-Id: \r\n")


def is_inbox(topic: str) -> bool:
    """Replies go to ephemeral inboxes, which are core NATS subjects even on JetStream."""
    return topic.startswith(INBOX_PREFIX)


def _size(body: bytes, headers: dict[str, str]) -> int:
    """The bytes ``body`` and ``headers`` take on the wire (each header adds ``: `` and CRLF)."""
    return len(body) + _EMPTY_BLOCK + sum(len(k) + len(v.encode()) + 4 for k, v in headers.items())


def _size_bound(body: bytes, headers: dict[str, str]) -> int:
    """At least ``_size``, without encoding: a character is at most 4 bytes in UTF-8."""
    chars = sum(map(len, headers)) + sum(map(len, headers.values()))
    return len(body) + _EMPTY_BLOCK + 4 * chars + 4 * len(headers)


def _too_large(message: Message, size: int, limit: int, scheme: str) -> MessageTooLarge:
    return MessageTooLarge(
        f"message {message.id} to {message.topic!r} is {size} bytes with its "
        f"headers; {scheme}:// accepts at most {limit} (the server's max_payload)"
    )


def _msg_id(message: Message, msg_id_mode: str | None) -> str | None:
    if msg_id_mode is None or is_inbox(message.topic):
        return None
    return msg_id_for(message, msg_id_mode)


def _encoded(
    messages: Sequence[Message], limit: int, scheme: str, msg_id_mode: str | None
) -> list[tuple[str, bytes, dict[str, str]]]:
    """Subject, body and headers of each message, for the public ``publish``."""
    out = []
    for message in messages:
        headers = encode_headers(message, _msg_id(message, msg_id_mode))
        # The exact size costs a loop per header: only when the cheap bound is over the limit.
        if _size_bound(message.body, headers) > limit:
            size = _size(message.body, headers)
            if size > limit:
                raise _too_large(message, size, limit, scheme)
        out.append((subject(message.topic), message.body, headers))
    return out


def _frames(
    messages: Sequence[Message],
    replies: Sequence[str] | None,
    limit: int,
    scheme: str,
    msg_id_mode: str | None,
) -> tuple[list[bytes], int]:
    """The HPUB frames of ``messages`` (for ``FastWire``), joined into commands of about
    ``CHUNK_BYTES`` (a frame is never split), and the bytes of all bodies.

    This loop is most of what a publish costs mqkit, hence one format per usual message (no
    key, no headers, an ASCII id) and one join per chunk; it makes the bytes ``hpub`` makes
    (tests compare them), and those of nats-py's ``publish``.
    """
    chunks: list[bytes] = []
    parts: list[bytes] = []
    size = payload = 0
    topic = subj = ""
    with_msg_id = False
    for i, message in enumerate(messages):
        if message.topic != topic:  # a batch usually goes to one topic
            topic = message.topic
            subj = subject(topic)
            with_msg_id = msg_id_mode is not None and not is_inbox(topic)
        body = message.body
        n = len(body)
        reply = replies[i] if replies else ""
        mid = _wire_value(message.id)
        if message.key is None and not message.headers and mid.isascii():
            ts = repr(message.timestamp)
            if with_msg_id:  # the message id, whatever msg_id_mode says, without headers
                hsize = _JS_BLOCK + 2 * len(mid) + len(ts)
                end = f"Nats-Msg-Id: {mid}\r\n\r\n"
            else:
                hsize = _CORE_BLOCK + len(mid) + len(ts)
                end = "\r\n"
            total = hsize + n
            head = (
                f"HPUB {subj} {reply} {hsize} {total}\r\nNATS/1.0\r\nMqkit-Id: {mid}\r\n"
                f"Mqkit-Ts: {ts}\r\n{end}"
            ).encode()
        else:
            block = header_block(message, _msg_id(message, msg_id_mode))
            head, total = hpub_head(subj, reply, block, n)
        if total > limit:
            raise _too_large(message, total, limit, scheme)
        parts += (head, body, _CRLF)
        payload += n
        size += len(head) + n
        if size >= CHUNK_BYTES:
            chunks.append(b"".join(parts))
            parts, size = [], 0
    if parts:
        chunks.append(b"".join(parts))
    return chunks, payload


class CorePublisher:
    """Publishes on core NATS. Safe to use from many tasks."""

    def __init__(self, nc: NatsClient, config: NatsConfig) -> None:
        self._nc = nc
        self._config = config
        self.wire: FastWire | None = None
        """The fast path, when the connection passed its check (the transport sets it)."""

    async def publish(self, messages: Sequence[Message]) -> None:
        nc = self._nc
        wire = self.wire
        scheme = self._config.url.scheme
        what = f"publish to {messages[0].topic!r}" if messages else "publish"
        if not nc.is_connected:
            # nats-py would buffer the batch for after a reconnect and its flush would return
            # at once: refuse instead, with nothing sent.
            raise PublishError(f"{what}: not connected to NATS (reconnecting); nothing was sent")
        with translate(what):
            if wire is not None:
                chunks, payload = _frames(messages, None, nc.max_payload, scheme, None)
                await wire.send(
                    chunks, len(messages), payload, written=self._config.request_timeout
                )
            else:
                for subj, body, headers in _encoded(messages, nc.max_payload, scheme, None):
                    await nc.publish(subj, body, headers=headers)
            await nc.flush(timeout=self._config.request_timeout)  # type: ignore[arg-type]
        if not nc.is_connected:
            # The connection dropped before the server answered the flush: the batch may
            # still go out from the reconnect buffer, or may be lost with it.
            raise PublishTimeout(f"{what}: the connection was lost before the server "
                                 "confirmed; the messages may be sent after reconnecting")


class _Acks:
    """The PubAcks one ``publish`` call waits for: done at the last one, or at the first error."""

    __slots__ = ("done", "missing")

    def __init__(self, missing: int) -> None:
        self.missing = missing
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def one(self) -> None:
        self.missing -= 1
        if self.missing <= 0 and not self.done.done():
            self.done.set_result(None)

    def fail(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


def _refusal(msg: Msg) -> Exception | None:
    """The nats-py error for a reply that is not a PubAck (as ``publish_async`` raises it)."""
    data = msg.data
    if not data:
        status = (msg.headers or {}).get("Status")
        if status == _NO_RESPONDERS:
            return nats.js.errors.NoStreamResponseError()
        return nats.errors.Error(f"nats: unexpected reply to a JetStream publish: status {status}")
    try:
        response = json.loads(data)
    except ValueError:
        response = None
    if not isinstance(response, dict):
        return nats.errors.Error("nats: a JetStream publish got a reply that is not a PubAck")
    if "error" in response:
        refusal: Exception = nats.js.errors.APIError.from_error(response["error"])
        return refusal
    if "stream" not in response or "seq" not in response:
        return nats.errors.Error("nats: a JetStream publish got a reply that is not a PubAck")
    return None


class JetStreamPublisher:
    """Publishes to JetStream streams, awaiting every PubAck. Safe to use from many tasks.

    ``start`` (once, at connect) subscribes to the PubAck inbox.
    """

    def __init__(self, nc: NatsClient, config: NatsConfig) -> None:
        self._nc = nc
        self._config = config
        self._core = CorePublisher(nc, config)
        self._prefix = ""
        self._numbers = itertools.count()
        self._waiting: dict[str, _Acks] = {}  # reply subject -> the publish awaiting it

    @property
    def wire(self) -> FastWire | None:
        return self._core.wire

    @wire.setter
    def wire(self, wire: FastWire | None) -> None:
        self._core.wire = wire

    async def start(self) -> None:
        """Subscribe to this publisher's PubAck inbox (``<inbox>.*``); safe to call twice."""
        if not self._prefix:
            prefix = self._nc.new_inbox() + "."
            await self._nc.subscribe(prefix + "*", cb=self._on_ack)
            self._prefix = prefix

    async def _on_ack(self, msg: Msg) -> None:
        acks = self._waiting.pop(msg.subject, None)
        if acks is None:
            return  # its publish gave up (timeout, error, cancelled)
        data = msg.data
        if data.startswith(_PUB_ACK) and b'"error"' not in data:
            acks.one()
            return
        refusal = _refusal(msg)
        if refusal is None:
            acks.one()
        else:
            acks.fail(refusal)

    async def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        if all(is_inbox(m.topic) for m in messages):
            await self._core.publish(messages)
            return
        config = self._config
        nc = self._nc
        prefix, numbers = self._prefix, self._numbers
        assert prefix, "JetStreamPublisher.start() was not awaited"
        replies = ["" if is_inbox(m.topic) else f"{prefix}{next(numbers)}" for m in messages]
        expected = [reply for reply in replies if reply]
        what = f"publish to {messages[0].topic!r}"
        wire = self.wire
        scheme = config.url.scheme
        acks = _Acks(len(expected))
        with translate(what):
            try:
                if wire is not None:
                    chunks, payload = _frames(
                        messages, replies, nc.max_payload, scheme, config.msg_id
                    )
                    self._waiting.update(dict.fromkeys(expected, acks))
                    await wire.send(chunks, len(messages), payload)
                else:
                    batch = _encoded(messages, nc.max_payload, scheme, config.msg_id)
                    self._waiting.update(dict.fromkeys(expected, acks))
                    for (subj, body, headers), reply in zip(batch, replies, strict=True):
                        await nc.publish(subj, body, reply=reply, headers=headers)
                async with asyncio.timeout(config.request_timeout):
                    await acks.done
            except TimeoutError as exc:
                raise PublishTimeout(
                    f"{what}: {acks.missing} of {len(expected)} PubAck(s) did not arrive "
                    f"within {config.request_timeout:g}s"
                ) from exc
            finally:
                if acks.missing > 0:
                    waiting = self._waiting
                    for reply in expected:
                        waiting.pop(reply, None)
                if not acks.done.done():
                    acks.done.cancel()
