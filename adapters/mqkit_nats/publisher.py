"""Publishing: core NATS (sent, then flushed) and JetStream (each message's PubAck awaited).

Both check the whole batch against the server's ``max_payload`` before sending anything, so a
refused batch publishes nothing. Core NATS has no per-message acknowledgement: ``publish``
returns once the server answered a PING sent after the batch (the batch reached the server;
with no subscriber it is dropped, which is core NATS's at-most-once contract). JetStream sends
the batch pipelined (``publish_async``) and returns only when every PubAck arrived; a missing
stream, a refusal or a PubAck that does not come within ``request_timeout`` raises
``PublishError`` and the batch may be partly stored (each stored message once: a retry with the
same messages is de-duplicated by ``Nats-Msg-Id``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from mqkit.errors import MessageTooLarge, PublishError
from mqkit.message import Message
from mqkit_nats.config import NatsConfig
from mqkit_nats.errors import translate
from mqkit_nats.headers import encode_headers, msg_id_for
from mqkit_nats.subjects import subject

INBOX_PREFIX = "_INBOX."


def is_inbox(topic: str) -> bool:
    """Replies go to ephemeral inboxes, which are core NATS subjects even on JetStream."""
    return topic.startswith(INBOX_PREFIX)


def _size(body: bytes, headers: dict[str, str]) -> int:
    """The bytes ``body`` and ``headers`` take on the wire (each header adds ``: `` and CRLF)."""
    return len(body) + sum(len(k) + len(v.encode()) + 4 for k, v in headers.items())


def _size_bound(body: bytes, headers: dict[str, str]) -> int:
    """At least ``_size``, without encoding: a character is at most 4 bytes in UTF-8."""
    chars = sum(map(len, headers)) + sum(map(len, headers.values()))
    return len(body) + 4 * chars + 4 * len(headers)


def _encoded(
    messages: Sequence[Message], limit: int, scheme: str, msg_id_mode: str | None
) -> list[tuple[str, bytes, dict[str, str]]]:
    out = []
    for message in messages:
        msg_id = None if msg_id_mode is None or is_inbox(message.topic) else msg_id_for(
            message, msg_id_mode
        )
        headers = encode_headers(message, msg_id)
        # The exact size costs a loop per header: only when the cheap bound is over the limit.
        if _size_bound(message.body, headers) > limit:
            size = _size(message.body, headers)
            if size > limit:
                raise MessageTooLarge(
                    f"message {message.id} to {message.topic!r} is {size} bytes with its "
                    f"headers; {scheme}:// accepts at most {limit} (the server's max_payload)"
                )
        out.append((subject(message.topic), message.body, headers))
    return out


class CorePublisher:
    """Publishes on core NATS. Safe to use from many tasks."""

    def __init__(self, nc: NatsClient, config: NatsConfig) -> None:
        self._nc = nc
        self._config = config

    async def publish(self, messages: Sequence[Message]) -> None:
        nc = self._nc
        batch = _encoded(messages, nc.max_payload, self._config.url.scheme, None)
        with translate(f"publish to {messages[0].topic!r}" if messages else "publish"):
            for subj, body, headers in batch:
                await nc.publish(subj, body, headers=headers)
            await nc.flush(timeout=self._config.request_timeout)  # type: ignore[arg-type]


class JetStreamPublisher:
    """Publishes to JetStream streams, awaiting every PubAck. Safe to use from many tasks."""

    def __init__(self, nc: NatsClient, js: JetStreamContext, config: NatsConfig) -> None:
        self._nc = nc
        self._js = js
        self._config = config
        self._core = CorePublisher(nc, config)

    async def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        if all(is_inbox(m.topic) for m in messages):
            await self._core.publish(messages)
            return
        config = self._config
        batch = _encoded(messages, self._nc.max_payload, config.url.scheme, config.msg_id)
        what = f"publish to {messages[0].topic!r}"
        futures: list[asyncio.Future[object]] = []
        with translate(what):
            try:
                for (subj, body, headers), message in zip(batch, messages, strict=True):
                    if is_inbox(message.topic):
                        await self._nc.publish(subj, body, headers=headers)
                        continue
                    futures.append(
                        await self._js.publish_async(subj, body, headers=headers)  # type: ignore[arg-type]
                    )
                async with asyncio.timeout(config.request_timeout):
                    acks = await asyncio.gather(*futures)
            except TimeoutError as exc:
                raise PublishError(
                    f"{what}: {sum(not f.done() for f in futures)} of {len(futures)} "
                    f"PubAck(s) did not arrive within {config.request_timeout:g}s"
                ) from exc
            finally:
                for future in futures:
                    if not future.done():
                        future.cancel()
                    elif not future.cancelled():
                        future.exception()  # retrieved: no "never retrieved" warning
        del acks
