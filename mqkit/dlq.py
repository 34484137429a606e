"""Dead-letter tooling: look at ``<topic>.dlq`` without draining it, and replay from it.

Everything here goes through the public client and transport contract (subscribe, ack,
nack, publish), so it works on every broker. Dead letters wait in the group ``mqkit.dlq``
(``Client.DLQ_GROUP``), which every subscription creates on its topic's dead-letter topic.

How a read works: deliveries of the dead-letter group are collected and *held* unsettled
until the read stops (``idle`` seconds without a new delivery, ``limit`` reached, or an
already-seen message id comes round again); then the ones to keep are nacked back without
delay. Holding them is what lets one pass see each dead letter once, on brokers that
redeliver a nacked message at once (Kafka seeks back, RabbitMQ requeues at the head).

Limits: a read holds up to ``limit`` deliveries at once, so it uses a prefetch that large.
A transport that keeps order per key (memory://, Kafka per partition) will not hand out a
second dead letter with the same key while the first is held, so on memory:// dead letters
that share a key show one per read. Dead letters do not name the group that failed them:
a replay goes to the original topic, where every group sees it again (keep consumers
idempotent; the replayed copy keeps its idempotency key for exactly that).

Safe to run while consumers are running; not safe to run two reads of one topic at once
(each would hide the other's held deliveries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field

from mqkit import headers as h
from mqkit.client import DLQ_GROUP, Client
from mqkit.errors import MqkitError
from mqkit.message import DLQ_SUFFIX, Delivery, Message, dlq_topic, new_id
from mqkit.transport import TopicSpec

log = logging.getLogger("mqkit.dlq")

DEFAULT_LIMIT = 1000
UNKNOWN_ERROR = "unknown"

ProgressFn = Callable[[Message, Message], None]
"""Called as ``on_progress(dead_letter, replayed_copy)`` after each replayed message."""


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did: how many dead letters it republished and how many it left."""

    replayed: int
    skipped: int
    copies: list[Message] = field(default_factory=list)
    """The republished messages, in replay order (each names its dead letter as causation)."""


def original_topic(letter: Message, topic: str) -> str:
    """Where ``letter`` came from: its original-topic header, else ``topic`` minus ``.dlq``."""
    found = letter.headers.get(h.DLQ_ORIGINAL_TOPIC)
    if found:
        return found
    return topic[: -len(DLQ_SUFFIX)] if topic.endswith(DLQ_SUFFIX) else topic


def error_type_of(letter: Message) -> str:
    """The error type a dead letter records, else its reason, else ``"unknown"``."""
    return (
        letter.headers.get(h.DLQ_ERROR_TYPE) or letter.headers.get(h.DLQ_REASON) or UNKNOWN_ERROR
    )


def summarize(messages: Iterable[Message]) -> dict[str, int]:
    """Dead letters counted by error type, most frequent first."""
    return dict(Counter(error_type_of(m) for m in messages).most_common())


def replay_copy(letter: Message, topic: str, *, replayed_at: float | None = None) -> Message:
    """The message a replay publishes for ``letter``: a new id, its old id as causation.

    The dead-letter headers (and any attempt and de-dup header) are dropped so the copy
    starts fresh; the idempotency key, correlation id, content type and key are kept.
    """
    stripped = {
        name: value
        for name, value in letter.headers.items()
        if name not in h.DLQ_HEADERS and name not in (h.ATTEMPT, h.DEDUP_ID)
    }
    stripped[h.CAUSATION_ID] = letter.id
    stripped[h.DLQ_REPLAYED_AT] = f"{time.time() if replayed_at is None else replayed_at:.6f}"
    copy_id = new_id()
    # A de-duplicating broker (JetStream, SQS FIFO) must not drop the replay as a repeat of
    # the original; consumers still absorb it by its idempotency key if it was handled.
    stripped[h.DEDUP_ID] = copy_id
    return Message(
        topic=original_topic(letter, topic),
        body=letter.body,
        key=letter.key,
        headers=stripped,
        id=copy_id,
    )


async def inspect(
    client: Client, topic: str, *, limit: int = DEFAULT_LIMIT, idle: float = 2.0
) -> list[Message]:
    """The dead letters of ``topic`` (``orders`` or ``orders.dlq``), left where they are.

    Returns at most ``limit`` messages in the order the broker handed them out. Waits
    ``idle`` seconds after the last delivery, so an empty dead-letter topic costs ``idle``.
    """
    if limit < 1:
        raise ValueError("limit must be >= 1")
    found: list[Message] = []
    async with _DeadLetterReader(client, topic, prefetch=limit) as reader:
        async with contextlib.aclosing(reader.deliveries(idle=idle, limit=limit)) as stream:
            async for delivery in stream:
                found.append(delivery.message)
                reader.keep(delivery)
    return found


async def replay(
    client: Client,
    topic: str,
    *,
    error_type: str | None = None,
    limit: int | None = None,
    idle: float = 2.0,
    on_progress: ProgressFn | None = None,
) -> ReplayResult:
    """Republish dead letters of ``topic`` to their original topic, then remove them.

    Only dead letters whose error type equals ``error_type`` are replayed when it is given
    (see ``error_type_of``); the others are left in place and counted as skipped. At most
    ``limit`` are replayed. Each dead letter is acked only after its copy was confirmed by
    the broker, so a failed publish leaves it in the dead-letter topic. Dead letters that a
    copy made by this same replay produced (it failed again at once) are left alone, so a
    replay always ends.
    """
    if limit is not None and limit < 1:
        raise ValueError("limit must be >= 1")
    wanted = error_type
    started = time.time()
    copies: list[Message] = []
    skipped = 0
    async with _DeadLetterReader(client, topic, prefetch=limit or DEFAULT_LIMIT) as reader:
        async with contextlib.aclosing(reader.deliveries(idle=idle, limit=None)) as stream:
            async for delivery in stream:
                letter = delivery.message
                if (wanted is not None and error_type_of(letter) != wanted) or _replayed_since(
                    letter, started
                ):
                    skipped += 1
                    reader.keep(delivery)
                    continue
                copy = replay_copy(letter, reader.dlq)
                try:
                    await client.publish_messages((copy,))
                except BaseException:
                    reader.keep(delivery)
                    raise
                await delivery.ack()
                copies.append(copy)
                if on_progress is not None:
                    on_progress(letter, copy)
                if limit is not None and len(copies) >= limit:
                    break
    return ReplayResult(replayed=len(copies), skipped=skipped, copies=copies)


def _replayed_since(letter: Message, started: float) -> bool:
    stamp = letter.headers.get(h.DLQ_REPLAYED_AT)
    try:
        return stamp is not None and float(stamp) >= started
    except ValueError:
        return False


class _DeadLetterReader:
    """Reads the ``mqkit.dlq`` group of one dead-letter topic, holding what it is told to keep.

    A background task pulls deliveries into a queue so the reader can stop on an idle
    timeout without cancelling the broker iterator mid-fetch; on exit the task is stopped and
    every kept (or fetched but unread) delivery is nacked back without delay.
    """

    def __init__(self, client: Client, topic: str, *, prefetch: int) -> None:
        self.client = client
        self.dlq = dlq_topic(topic)
        self._prefetch = prefetch
        self._queue: asyncio.Queue[Delivery | Exception] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._kept: list[Delivery] = []

    async def __aenter__(self) -> _DeadLetterReader:
        await self.client.connect()
        # Make sure the group exists (it keeps dead letters for us from now on).
        await self.client.transport.ensure_topic(TopicSpec(self.dlq, groups=(DLQ_GROUP,)))
        self._task = asyncio.create_task(self._pull(), name=f"mqkit-dlq-read-{self.dlq}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, Delivery):
                self._kept.append(item)
        kept, self._kept = self._kept, []
        if getattr(self.client.transport, "releases_unsettled_on_close", False):
            # The subscription is closed and its unsettled deliveries are back where they
            # were (Kafka: uncommitted offsets). A nack there would publish a retry copy.
            return
        for delivery in kept:
            if delivery.settled is None:
                try:
                    await delivery.nack()
                except MqkitError as exc:  # the broker redelivers an unsettled one anyway
                    log.warning("could not hand back dead letter %s: %s", delivery.message.id, exc)

    def keep(self, delivery: Delivery) -> None:
        """Leave ``delivery`` in the dead-letter topic (nacked back when the read ends)."""
        self._kept.append(delivery)

    async def deliveries(
        self, *, idle: float, limit: int | None
    ) -> AsyncGenerator[Delivery, None]:
        """Deliveries until ``idle`` seconds pass without one, ``limit``, or a repeat."""
        seen: set[str] = set()
        while limit is None or len(seen) < limit:
            try:
                async with asyncio.timeout(idle):
                    delivery = await self._queue.get()
            except TimeoutError:
                return
            if isinstance(delivery, Exception):
                raise delivery
            if delivery.message.id in seen:
                self.keep(delivery)  # came round again: everything has been seen
                return
            seen.add(delivery.message.id)
            yield delivery

    async def _pull(self) -> None:
        try:
            async for delivery in self.client.consume(
                self.dlq, group=DLQ_GROUP, prefetch=self._prefetch
            ):
                self._queue.put_nowait(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # raised to the reader by ``deliveries``
            self._queue.put_nowait(exc)
