"""HPUB frames written straight into nats-py's outgoing buffer: a fast path, checked at connect.

Why: nats-py's public ``publish`` builds each header block byte by byte (about 2 µs per header
on CPython 3.11), which made a core publish with mqkit's two headers cost four times a raw
publish without headers. ``hpub`` builds the very same bytes (byte for byte what nats-py's
``publish`` sends for the same subject, reply, headers and payload; tests compare them) in one
string (``hpub_head``; the publisher formats the usual message's frame in one go), and
``FastWire.send`` hands a whole batch of frames to nats-py in commands of ``CHUNK_BYTES``.

That needs two *private* nats-py methods, ``Client._send_command(cmd, priority=False)`` and
``Client._flush_pending(force_flush=False)``, plus the private attributes ``_server_info``
(does the server take headers) and ``_max_pending_size`` (the reconnect buffer). ``detect``
checks all of them (names, coroutine functions, parameter names) when the transport connects
and after each reconnect; when any is missing or different, or the server does not announce
header support, it returns ``None`` and the publishers use the public ``Client.publish``,
which sends the same bytes, only slower. The ``fast_publish=false`` option forces the public
path (for comparison, or if a nats-py release changes behaviour behind the same names).

``queue`` takes small commands (JetStream acks) synchronously and hands those of one turn of the
event loop to nats-py together; ``drain`` waits for them (the transport's ``close`` does).

``send`` keeps ``publish``'s contract: it raises nats-py's own errors for a closed or draining
connection and for a full reconnect buffer, counts ``stats`` the same way, and buffers while
reconnecting. Unlike ``publish`` followed by ``flush`` (whose PING nats-py writes ahead of the
publishes still in its buffer), ``send(..., written=timeout)`` returns once the frames were
handed to the socket, so a PING sent afterwards really follows the batch.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient

log = logging.getLogger("mqkit.nats")

# What one command given to nats-py holds at most: bounds the joined copy of a huge batch.
CHUNK_BYTES = 256 * 1024

# nats-py's own header-name rule (an RFC 7230 token); mqkit_nats.headers enforces it too.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def header_block(headers: Mapping[str, str]) -> str:
    """The text of the header block nats-py's ``publish`` sends for ``headers``.

    ``headers`` must be wire-clean, as ``mqkit_nats.headers.encode_headers`` returns them:
    names are tokens, values have no CR/LF and no surrounding whitespace (nats-py would strip
    the one and blank the other; here they are sent as given).
    """
    return "NATS/1.0\r\n" + "".join([f"{k}: {v}\r\n" for k, v in headers.items()]) + "\r\n"


def hpub(subject: str, reply: str, block: str, body: bytes) -> tuple[bytes, int]:
    """The HPUB frame nats-py's ``publish`` sends, and its size as the server counts it
    against ``max_payload`` (header block and body). ``block`` is ``header_block``'s text."""
    head, total = hpub_head(subject, reply, block, len(body))
    return b"%b%b\r\n" % (head, body), total


def hpub_head(subject: str, reply: str, block: str, body_size: int) -> tuple[bytes, int]:
    """``hpub``'s frame up to the body (control line and header block), and the size the
    server counts; the frame is this, the body, then CRLF."""
    if block.isascii():  # the usual case: one encode for control line and headers
        size = len(block)
        total = size + body_size
        return f"HPUB {subject} {reply} {size} {total}\r\n{block}".encode(), total
    raw = block.encode()
    size = len(raw)
    total = size + body_size
    return f"HPUB {subject} {reply} {size} {total}\r\n".encode() + raw, total


def _parameters(method: Any) -> list[str] | None:
    if not inspect.iscoroutinefunction(method):
        return None
    try:
        return list(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return None


class FastWire:
    """Sends pre-built frames through nats-py's private buffer. Build it with ``detect``."""

    __slots__ = ("_nc", "_queued", "_writer", "_writing")

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._queued: list[bytes] = []
        self._writer: asyncio.Future[None] | None = None  # will take what is queued
        self._writing: set[asyncio.Future[None]] = set()

    @classmethod
    def detect(cls, nc: NatsClient) -> FastWire | None:
        """A ``FastWire`` for ``nc`` if its nats-py internals are the expected ones and the
        server takes headers; else ``None`` (use the public ``publish``)."""
        if _parameters(getattr(nc, "_send_command", None)) != ["cmd", "priority"]:
            return None
        if _parameters(getattr(nc, "_flush_pending", None)) != ["force_flush"]:
            return None
        info = getattr(nc, "_server_info", None)
        if not isinstance(info, dict) or info.get("headers") is not True:
            return None
        if not isinstance(getattr(nc, "_max_pending_size", None), int):
            return None
        stats = getattr(nc, "stats", None)
        if not isinstance(stats, dict) or not {"out_msgs", "out_bytes"} <= stats.keys():
            return None
        return cls(nc)

    async def send(
        self,
        chunks: Sequence[bytes],
        count: int,
        payload_bytes: int,
        *,
        written: float | None = None,
    ) -> None:
        """Queue ``chunks`` (whole frames joined: ``count`` messages with ``payload_bytes`` of
        bodies, each chunk about ``CHUNK_BYTES`` at most) in order, and start writing them.

        With ``written`` (seconds), also wait, that long at most, until nats-py's flusher
        handed them to the socket (it does not while the connection is down: the caller's
        own PING round trip then fails). Raises what ``publish`` raises.
        """
        if not chunks:
            return
        nc = self._nc
        if nc.is_closed:
            raise nats.errors.ConnectionClosedError
        if nc.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        if not nc.is_connected:
            limit: int = nc._max_pending_size
            size = sum(map(len, chunks))
            if limit <= 0 or size + nc.pending_data_size > limit:
                raise nats.errors.OutboundBufferLimitError
        stats = nc.stats
        stats["out_msgs"] += count
        stats["out_bytes"] += payload_bytes
        for chunk in chunks:
            await nc._send_command(chunk)
        if written is None:
            await nc._flush_pending()
            return
        # In a task of its own: _flush_pending swallows CancelledError, which would eat the
        # caller's cancellation or timeout; asyncio.wait neither cancels it nor raises.
        flushed = asyncio.ensure_future(nc._flush_pending(force_flush=True))
        await asyncio.wait((flushed,), timeout=written)

    def queue(self, command: bytes) -> None:
        """Queue a small command (a JetStream ack): those queued in one turn of the event loop
        are handed to nats-py together, written with one flush instead of one each.

        Raises nats-py's error for a closed connection, as ``publish`` does; a later failure
        (the connection closed meanwhile) is logged, and the server redelivers what an ack
        did not reach after AckWait.
        """
        if self._nc.is_closed:
            raise nats.errors.ConnectionClosedError
        self._queued.append(command)
        if self._writer is None:
            self._writer = writer = asyncio.ensure_future(self._write_queued())
            self._writing.add(writer)
            writer.add_done_callback(self._writing.discard)

    async def _write_queued(self) -> None:
        queued, self._queued = self._queued, []
        self._writer = None  # what is queued from now on goes with the next write
        try:
            await self.send((b"".join(queued),), len(queued), 0)
        except Exception as exc:
            log.warning("%d JetStream ack(s) not sent (%s: %s); the server redelivers after "
                        "AckWait", len(queued), type(exc).__name__, exc)

    async def drain(self) -> None:
        """Until every command queued so far was handed to nats-py."""
        if self._writing:
            await asyncio.wait(set(self._writing))
