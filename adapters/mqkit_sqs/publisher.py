"""Publishing: SNS ``PublishBatch`` (or SQS ``SendMessageBatch`` in ``queue`` mode).

Every message of a call is encoded and checked against the 256 KiB limit before any is sent,
so an oversize message fails the call with ``MessageTooLarge`` and sends nothing. Messages
go in batches of up to 10 entries and 256 KiB. Batches of a standard topic run
concurrently; batches of a FIFO topic run one after the other, in order, so order per key
holds. A partially failed batch resends exactly its failed entries (up to ``ATTEMPTS``
times, with backoff, for failures AWS marks as not the sender's fault) and then raises
``PublishError`` naming every message that failed: nothing is dropped silently.

FIFO: ``MessageGroupId`` is the message key (a hash of it when it is not 1-128 printable
ASCII characters; the message id when there is no key, so unkeyed messages do not wait for
each other). ``MessageDeduplicationId`` follows the ``dedup`` option: the idempotency key
(else the body's SHA-256), the message id, or the body's SHA-256. Dead letters and replayed
copies always deduplicate on their message id, so a replay is never absorbed as a duplicate
of the message it replays.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mqkit import headers as h
from mqkit.errors import MessageTooLarge, PublishError
from mqkit.message import DLQ_SUFFIX, Message
from mqkit_sqs import headers as codec
from mqkit_sqs.config import BATCH_SIZE, MAX_MESSAGE_BYTES, SqsConfig
from mqkit_sqs.connection import Connection
from mqkit_sqs.errors import RETRYABLE_CODES, convert
from mqkit_sqs.topology import Topology

ATTEMPTS = 4
"""Sends of one entry in all before its failure is raised."""
RETRY_BASE_DELAY = 0.05
_ID_SAFE = re.compile(r"^[\x21-\x7e]{1,128}$")


@dataclass
class _Entry:
    message: Message
    entry: dict[str, Any]
    size: int


class Publisher:
    """Sends messages; safe to use from many tasks at once."""

    def __init__(self, connection: Connection, topology: Topology, config: SqsConfig) -> None:
        self._conn = connection
        self._topology = topology
        self._config = config

    async def publish(self, messages: Sequence[Message]) -> None:
        """Return once SNS/SQS accepted every message; raise for any it did not."""
        by_topic: dict[str, list[_Entry]] = {}
        for message in messages:
            by_topic.setdefault(message.topic, []).append(self._prepare(message))
        failures: list[str] = []
        for topic, entries in by_topic.items():
            failures.extend(await self._publish_topic(topic, entries))
        if failures:
            raise PublishError(
                f"{len(failures)} of {len(messages)} message(s) were not accepted: "
                + "; ".join(failures[:10])
                + (" ..." if len(failures) > 10 else "")
            )

    def _prepare(self, message: Message) -> _Entry:
        body, attributes = codec.encode(message)
        size = codec.wire_size(body, attributes)
        if size > MAX_MESSAGE_BYTES:
            raise MessageTooLarge(
                f"message {message.id} to {message.topic!r} is {size} bytes as sent "
                f"(body plus headers); sqs:// accepts at most {MAX_MESSAGE_BYTES}"
            )
        body_key = "MessageBody" if self._config.mode == "queue" else "Message"
        entry: dict[str, Any] = {body_key: body, "MessageAttributes": attributes}
        if self._topology.is_fifo(message.topic):
            entry["MessageGroupId"] = _safe_id(message.key or message.id)
            entry["MessageDeduplicationId"] = self._dedup_id(message)
        return _Entry(message, entry, size)

    def _dedup_id(self, message: Message) -> str:
        mode = self._config.dedup
        if message.topic.endswith(DLQ_SUFFIX) or h.DLQ_REPLAYED_AT in message.headers:
            mode = "message-id"
        if mode == "message-id":
            return _safe_id(message.id)
        if mode == "idempotency" and message.dedup_id:
            return _safe_id(message.dedup_id)
        return hashlib.sha256(message.body).hexdigest()

    async def _publish_topic(self, topic: str, entries: list[_Entry]) -> list[str]:
        if self._config.mode == "queue":
            target = await self._topology.queue_url(topic, "")
        else:
            target = self._topology.topic_arn(topic)
        chunks = _chunks(entries)
        if self._topology.is_fifo(topic):
            failed: list[str] = []
            for chunk in chunks:
                failed.extend(await self._send(topic, target, chunk))
            return failed
        results = await asyncio.gather(*(self._send(topic, target, c) for c in chunks))
        return [failure for result in results for failure in result]

    async def _send(self, topic: str, target: str, chunk: list[_Entry]) -> list[str]:
        """Send one batch; resend its retryable failures; return what finally failed."""
        pending = dict(enumerate(chunk))
        failed: list[str] = []
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(RETRY_BASE_DELAY * 2 ** (attempt - 1))
            try:
                reply = await self._call(target, pending)
            except Exception as exc:
                raise convert(exc, f"publishing to {topic!r}") from exc
            retry: dict[int, _Entry] = {}
            for failure in reply.get("Failed", []):
                index = int(failure["Id"])
                code = str(failure.get("Code", "error"))
                healable = not failure.get("SenderFault", False) or code in RETRYABLE_CODES
                if healable and attempt < ATTEMPTS - 1:
                    retry[index] = pending[index]
                else:
                    message = pending[index].message
                    failed.append(f"{message.id}: {code}: {failure.get('Message', '')}")
            pending = retry
            if not pending:
                break
        return failed

    async def _call(self, target: str, pending: dict[int, _Entry]) -> dict[str, Any]:
        entries = [{"Id": str(i), **e.entry} for i, e in pending.items()]
        if self._config.mode == "queue":
            reply: dict[str, Any] = await self._conn.call(
                self._conn.sqs.send_message_batch, QueueUrl=target, Entries=entries
            )
        else:
            reply = await self._conn.call(
                self._conn.sns.publish_batch, TopicArn=target, PublishBatchRequestEntries=entries
            )
        return reply


def _chunks(entries: list[_Entry]) -> list[list[_Entry]]:
    """Batches of at most ``BATCH_SIZE`` entries and ``MAX_MESSAGE_BYTES`` in all."""
    chunks: list[list[_Entry]] = []
    current: list[_Entry] = []
    size = 0
    for entry in entries:
        if current and (len(current) == BATCH_SIZE or size + entry.size > MAX_MESSAGE_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry.size
    if current:
        chunks.append(current)
    return chunks


def _safe_id(value: str) -> str:
    """``value`` if SQS accepts it as a group or deduplication id, else its SHA-256."""
    if _ID_SAFE.match(value):
        return value
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
