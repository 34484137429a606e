"""The adapter contract: what a broker adapter implements, and what it can promise.

A transport is small on purpose (connect, close, publish, subscribe, ensure_topic and its
capabilities); everything else (retries, dead-lettering, idempotency, codecs) lives in the
core and works the same on every broker. Optional powers are separate protocols
(``RequestReply``, ``Replayable``) that an adapter implements when its broker can.

Portable semantics every transport keeps:
- a **topic** is a named stream of messages; a **group** is a set of competing consumers
  that together see each message of the topic; two groups each see every message;
- ``publish`` returns only once the broker confirmed every message of the batch, or raises
  (``PublishError``, ``MessageTooLarge``, ``ConnectionFailed``); a batch is not atomic
  unless the capabilities say ``transactions``;
- a delivery is redelivered until it is acked or dead-lettered (where ``at_least_once``);
- ``nack(delay)`` redelivers no sooner than ``delay`` seconds (where ``native_delay``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol, runtime_checkable

from mqkit.message import Delivery, Message


@dataclass(frozen=True)
class Capabilities:
    """What a transport can promise. The conformance suite skips by these flags."""

    at_least_once: bool = True
    """Unacked or nacked messages are redelivered (false for NATS core)."""
    persistent: bool = False
    """Messages survive a broker restart."""
    retains_unconsumed: bool = True
    """A message published while a group has no running consumer waits for it."""
    ordered_by_key: bool = False
    """Messages with the same key are delivered to a group in publish order."""
    consumer_groups: bool = True
    native_delay: bool = False
    """``nack(delay)`` is honoured by the broker without blocking other messages."""
    max_delay: float | None = None
    """Longest ``nack`` delay in seconds the broker accepts (None: no limit)."""
    native_dead_letter: bool = False
    replay: bool = False
    """A group can be rewound to an earlier position (offset, sequence or time)."""
    transactions: bool = False
    request_reply: bool = False
    deduplicates: bool = False
    """The broker drops a repeated idempotency key within its window (JetStream, SQS FIFO)."""
    wildcards: bool = False
    """Subscriptions accept ``*`` (one word) and ``#`` (zero or more words) patterns."""
    max_message_bytes: int = 1024 * 1024
    bulk_test_size: int = 10_000
    """How many messages a bulk conformance test sends: lower only for slow emulators."""

    def missing(self, **required: bool) -> list[str]:
        """Names of the flags in ``required`` that are asked for but not offered."""
        known = {f.name for f in fields(self)}
        unknown = set(required) - known
        if unknown:
            raise ValueError(f"unknown capability flags: {sorted(unknown)}")
        return [name for name, wanted in required.items() if wanted and not getattr(self, name)]


@dataclass(frozen=True)
class Requirements:
    """What a subscriber needs from its transport, checked when the client starts it.

    ``Client.subscribe(..., requires=Requirements(ordered_by_key=True, max_delay=300))``
    fails at start-up with ``ConfigurationError`` on a transport that cannot promise it,
    instead of misbehaving in production.
    """

    ordered_by_key: bool = False
    persistent: bool = False
    at_least_once: bool = False
    native_dead_letter: bool = False
    max_delay: float | None = None
    """Longest nack delay the subscriber will ask for, in seconds."""

    def unmet(self, capabilities: Capabilities) -> list[str]:
        """Human-readable reasons this transport falls short (empty when it does not)."""
        flags = {
            name: getattr(self, name)
            for name in ("ordered_by_key", "persistent", "at_least_once", "native_dead_letter")
        }
        reasons = [f"{name} is not offered" for name in capabilities.missing(**flags)]
        if self.max_delay is not None:
            if not capabilities.native_delay:
                reasons.append("delayed redelivery (native_delay) is not offered")
            elif capabilities.max_delay is not None and capabilities.max_delay < self.max_delay:
                reasons.append(
                    f"delays up to {self.max_delay:g}s are needed but the transport allows "
                    f"{capabilities.max_delay:g}s"
                )
        return reasons


@dataclass(frozen=True)
class TopicSpec:
    """What a topic should look like. Adapters map what their broker supports.

    ``groups`` are created up front so messages published before their consumers start are
    kept for them (brokers that route at publish time, like RabbitMQ and SNS, need this).
    """

    name: str
    partitions: int | None = None
    retention_seconds: float | None = None
    retention_messages: int | None = None
    compacted: bool = False
    groups: tuple[str, ...] = ()
    max_deliveries: int | None = None
    """How many deliveries the consumer's retry policy makes before it dead-letters itself.
    A broker's native redrive (SQS maxReceiveCount) must allow more, so the core's
    dead-letter copy with its error headers comes first; native redrive then only catches
    messages whose consumer died before it could settle them."""
    options: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Transport(Protocol):
    """What every adapter implements.

    ``connect`` and ``close`` are safe to call twice. ``publish`` and ``subscribe`` may be
    used from many tasks at once. A subscription ends when its iterator is closed
    (``aclose``) or the transport is closed; unsettled deliveries are then redelivered.

    The iterator ``subscribe`` returns may define ``async start()``: the client awaits it
    before it reports the subscription started, so a message published after
    ``Client.start()`` returned reaches it even on brokers that route only to live
    subscribers (NATS core). Without it, attaching happens on the first ``__anext__``.

    More optional powers of that iterator, used by the core when present:
    ``concurrent_fetch = True`` says several tasks may await ``__anext__`` at once (the
    consumer then skips its fetch lock, one event-loop turn per message saved);
    ``async take(max_items, timeout) -> list[Delivery]`` hands out many deliveries per call
    and ``async ack_many(deliveries)`` settles them in one go (batch handlers use both); and
    ``async take_batch(max_items, timeout)`` returning a ``mqkit.batching.SourceBatch`` hands
    out a batch as one object (bodies without a Message or Delivery per message, one ``ack``
    for all, per-message deliveries only on failure); batch handlers prefer it to ``take``.

    A transport may set ``releases_unsettled_on_close = True`` when closing a subscription
    puts its unsettled deliveries straight back (Kafka: their offsets are not committed);
    the DLQ reader then lets them go that way instead of nacking them.
    """

    capabilities: Capabilities

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, messages: Sequence[Message]) -> None: ...

    def subscribe(self, topic: str, group: str, *, prefetch: int = 10) -> AsyncIterator[Delivery]:
        ...

    async def ensure_topic(self, spec: TopicSpec) -> None: ...


@runtime_checkable
class RequestReply(Protocol):
    """Request/reply native to the broker (RabbitMQ direct reply-to, NATS inboxes)."""

    async def request(self, message: Message, timeout: float) -> Message: ...


@runtime_checkable
class Replayable(Protocol):
    """A group can be moved to an earlier position in its topic."""

    async def seek(
        self, topic: str, group: str, *, offset: int | None = None, timestamp: float | None = None
    ) -> None: ...
