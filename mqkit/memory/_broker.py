"""The state of an in-memory broker: topics with a retained log, groups with their queues.

Single-threaded by design: every method runs on the event loop thread, so nothing here
locks. Publishing fans a message out to each group bound to its topic (RabbitMQ-style
routing, which also gives wildcard groups for free); the topic keeps a log so a group can be
rewound (``seek``) to replay.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from mqkit.clock import Clock, LoopClock, TimerHandle
from mqkit.memory._chaos import Chaos
from mqkit.message import Message
from mqkit.transport import TopicSpec

DEFAULT_RETENTION_MESSAGES = 100_000


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """RabbitMQ topic semantics over dot-separated words: ``*`` one word, ``#`` zero or more."""
    parts: list[str] = []
    for word in pattern.split("."):
        if word == "#":
            parts.append("#")
        elif word == "*":
            parts.append(r"[^.]+")
        else:
            parts.append(re.escape(word))
    regex = ""
    for i, part in enumerate(parts):
        if part == "#":
            # zero or more words, with the dots that separate them
            if i == 0:
                regex += r"(?:[^.]+(?:\.[^.]+)*)?" if len(parts) == 1 else r"(?:[^.]+\.)*"
            else:
                regex = regex[:-2] if regex.endswith(r"\.") else regex
                regex += r"(?:\.[^.]+)*" + (r"\." if i < len(parts) - 1 else "")
                continue
        else:
            regex += part + (r"\." if i < len(parts) - 1 else "")
    return re.compile(f"^{regex}$")


def pattern_matches(pattern: str, rx: re.Pattern[str], topic: str) -> bool:
    """Whether a wildcard subscription receives ``topic``.

    Dead-letter topics are left out unless the pattern itself names them: ``orders.#`` must
    not feed a failing handler its own dead letters in a loop.
    """
    if topic.endswith(".dlq") and not pattern.endswith(".dlq"):
        return False
    return rx.match(topic) is not None


def is_pattern(topic: str) -> bool:
    return any(word in ("*", "#") for word in topic.split("."))


class Entry:
    """One message waiting in, or handed out by, one group.

    ``lease`` changes each time the entry is handed out, so a settlement that arrives after
    the entry's ack timeout gave it to someone else is recognised as stale.
    """

    __slots__ = ("attempt", "lease", "message", "offset", "timer")

    def __init__(self, message: Message, offset: int, attempt: int = 0) -> None:
        self.message = message
        self.offset = offset
        self.attempt = attempt
        self.lease = 0
        self.timer: TimerHandle | None = None


class Group:
    """A set of competing consumers: each entry goes to one of them.

    Order per key: while an entry with key K is handed out and unsettled, later entries
    with key K wait in ``blocked`` so no two messages of one key are in flight at once.
    A nack releases the key; the redelivered entry then queues behind newer ones.
    """

    def __init__(self, name: str, broker: MemoryBroker) -> None:
        self.name = name
        self.broker = broker
        self.clock = broker.clock
        self.ready: deque[Entry] = deque()
        self.delayed: list[tuple[float, int, Entry]] = []
        self.busy_keys: set[str] = set()
        self.blocked: dict[str, deque[Entry]] = {}
        self.inflight = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._timer: TimerHandle | None = None
        self._timer_due = float("inf")
        self._seq = itertools.count()

    # --- entries in -------------------------------------------------------------------
    def push(self, entry: Entry) -> None:
        self.ready.append(entry)
        if self._waiters:
            self._wake()

    def push_many(self, entries: Iterable[Entry]) -> None:
        self.ready.extend(entries)
        if self._waiters:
            self._wake()

    # --- entries out ------------------------------------------------------------------
    def take(self) -> Entry | None:
        """The next deliverable entry, or None. Marks its key busy."""
        ready = self.ready
        chaos = self.broker.chaos
        while ready:
            if chaos is not None and chaos.reorder and len(ready) > 1:
                window = min(len(ready), chaos.reorder_window)
                entry = self._take_reordered(chaos.rng.randrange(window))
            else:
                entry = ready.popleft()
            key = entry.message.key
            if key is not None:
                if key in self.busy_keys:
                    self.blocked.setdefault(key, deque()).append(entry)
                    continue
                self.busy_keys.add(key)
            entry.attempt += 1
            entry.lease += 1
            self.inflight += 1
            if self.broker.ack_timeout is not None:
                self._start_ack_timer(entry, self.broker.ack_timeout)
            return entry
        if self.delayed and self.delayed[0][0] <= self.clock.now():
            self._release_due()
            return self.take()
        return None

    def _start_ack_timer(self, entry: Entry, timeout: float) -> None:
        lease = entry.lease
        entry.timer = self.clock.call_at(
            self.clock.now() + timeout, lambda: self._expire(entry, lease)
        )

    def _take_reordered(self, index: int) -> Entry:
        # Never pass over an earlier entry of the same key: order per key is a promise.
        candidate = self.ready[index]
        key = candidate.message.key
        for i in range(index):
            if key is not None and self.ready[i].message.key == key:
                return self.ready.popleft()
        del self.ready[index]
        return candidate

    def _expire(self, entry: Entry, lease: int) -> None:
        """Ack timeout: an entry still out under the same lease goes back to the queue."""
        if entry.lease == lease and entry.timer is not None:
            entry.timer = None
            self.redeliver(entry, None)

    def is_current(self, entry: Entry, lease: int) -> bool:
        return entry.lease == lease and (self.broker.ack_timeout is None or entry.timer is not None)

    async def wait(self) -> None:
        """Until something may have become deliverable."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if not fut.done():
                fut.cancel()
            try:
                self._waiters.remove(fut)
            except ValueError:
                pass

    # --- settlement -------------------------------------------------------------------
    def settle(self, entry: Entry) -> None:
        """Acked or dead-lettered: gone for good."""
        self._stop_timer(entry)
        self.inflight -= 1
        self._release_key(entry.message.key)

    def _stop_timer(self, entry: Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None

    def redeliver(self, entry: Entry, delay: float | None) -> None:
        self._stop_timer(entry)
        self.inflight -= 1
        self._release_key(entry.message.key)
        if delay:
            due = self.clock.now() + delay
            heapq.heappush(self.delayed, (due, next(self._seq), entry))
            self._arm_timer()
        else:
            self.push(entry)

    def _release_key(self, key: str | None) -> None:
        if key is None:
            return
        self.busy_keys.discard(key)
        waiting = self.blocked.get(key)
        if waiting:
            self.ready.appendleft(waiting.popleft())
            if not waiting:
                del self.blocked[key]
            if self._waiters:
                self._wake()

    def _release_due(self) -> None:
        now = self.clock.now()
        while self.delayed and self.delayed[0][0] <= now:
            self.ready.append(heapq.heappop(self.delayed)[2])
        if self.ready and self._waiters:
            self._wake()
        self._arm_timer()

    def _arm_timer(self) -> None:
        if not self.delayed:
            return
        due = self.delayed[0][0]
        if self._timer is not None and self._timer_due <= due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = self.clock.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due = float("inf")
        self._release_due()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def depth(self) -> int:
        """Entries not yet acked: waiting, delayed, blocked and in flight."""
        blocked = sum(len(q) for q in self.blocked.values())
        return len(self.ready) + len(self.delayed) + blocked + self.inflight

    def clear(self) -> None:
        self.ready.clear()
        self.delayed.clear()
        self.blocked.clear()


@dataclass
class Topic:
    """A topic's retained log (for replay) and the groups it fans out to."""

    name: str
    spec: TopicSpec
    log: list[Message] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    base_offset: int = 0
    groups: dict[str, Group] = field(default_factory=dict)
    fanout: list[Group] = field(default_factory=list)

    def append(self, message: Message) -> int:
        log = self.log
        offset = self.base_offset + len(log)
        log.append(message)
        self.timestamps.append(message.timestamp)
        if len(log) > 2 * DEFAULT_RETENTION_MESSAGES or self.spec.retention_messages:
            self._trim()
        return offset

    def _trim(self) -> None:
        limit = self.spec.retention_messages or DEFAULT_RETENTION_MESSAGES
        if len(self.log) > limit * 2:
            # Trim in chunks so retention costs O(1) amortised per message.
            drop = len(self.log) - limit
            del self.log[:drop]
            del self.timestamps[:drop]
            self.base_offset += drop

    def offset_for_time(self, timestamp: float) -> int:
        return self.base_offset + bisect.bisect_left(self.timestamps, timestamp)

    def since(self, offset: int) -> list[tuple[int, Message]]:
        start = max(0, offset - self.base_offset)
        return [(self.base_offset + i, m) for i, m in enumerate(self.log[start:], start)]


class MemoryBroker:
    """One in-process broker. ``MemoryBroker.named(name)`` shares one per name per process."""

    _named: dict[str, MemoryBroker] = {}

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or LoopClock()
        self.chaos: Chaos | None = None
        self.ack_timeout: float | None = None
        self.topics: dict[str, Topic] = {}
        # Wildcard subscriptions: (pattern, group name) -> (compiled pattern, Group)
        self.patterns: dict[tuple[str, str], tuple[re.Pattern[str], Group]] = {}
        self.inboxes: dict[str, asyncio.Future[Message]] = {}

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        broker = cls._named.get(name)
        if broker is None:
            broker = cls._named[name] = cls()
        return broker

    @classmethod
    def forget(cls, name: str) -> None:
        """Drop a named broker and all it holds (tests)."""
        cls._named.pop(name, None)

    def topic(self, name: str, spec: TopicSpec | None = None) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            topic = self.topics[name] = Topic(name, spec or TopicSpec(name))
            topic.fanout.extend(
                g
                for (pattern, _), (rx, g) in self.patterns.items()
                if pattern_matches(pattern, rx, name)
            )
        elif spec is not None:
            topic.spec = spec
        return topic

    def group(self, topic_or_pattern: str, group: str) -> Group:
        """The group ``group`` on a topic, or on every topic matching a wildcard pattern."""
        if is_pattern(topic_or_pattern):
            found = self.patterns.get((topic_or_pattern, group))
            if found is None:
                rx = pattern_regex(topic_or_pattern)
                g = Group(group, self)
                self.patterns[(topic_or_pattern, group)] = (rx, g)
                for topic in self.topics.values():
                    if pattern_matches(topic_or_pattern, rx, topic.name):
                        topic.fanout.append(g)
                return g
            return found[1]
        topic = self.topic(topic_or_pattern)
        g2 = topic.groups.get(group)
        if g2 is None:
            g2 = topic.groups[group] = Group(group, self)
            topic.fanout.append(g2)
        return g2

    def publish(self, message: Message) -> None:
        if self.inboxes:
            inbox = self.inboxes.pop(message.topic, None)
            if inbox is not None:
                if not inbox.done():
                    inbox.set_result(message)
                return
        topic = self.topics.get(message.topic) or self.topic(message.topic)
        offset = topic.append(message)
        if self.chaos is not None:
            for g in topic.fanout:
                for _ in range(self.chaos.duplicate):
                    g.push(Entry(message, offset))
            return
        for g in topic.fanout:
            g.ready.append(Entry(message, offset))
            if g._waiters:
                g._wake()

    def seek(self, topic: str, group: str, offset: int) -> None:
        t = self.topic(topic)
        g = self.group(topic, group)
        g.clear()
        g.push_many(Entry(m, off) for off, m in t.since(offset))
