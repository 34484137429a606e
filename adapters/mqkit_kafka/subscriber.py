"""The consuming side: one consumer-group member per subscription.

A dedicated thread runs the librdkafka consumer (``consume`` blocks, rebalance callbacks run
inside it) and posts fetched records to the event loop, which owns every other piece of
state. Deliveries are handed out in partition order, at most ``prefetch`` unsettled at once.

Commits: offsets are *stored* only up to the first unfinished message of each partition
(``PartitionOffsets``) and librdkafka commits the stored offsets every 500 ms, on revocation
and on close. A message counts as finished when it was acked, dead-lettered (its copy
confirmed), or nacked (its retry copy confirmed).

Rebalance (cooperative-sticky): for revoked partitions, records not yet handed out are
dropped, handlers in flight get ``revoke_timeout`` seconds to settle, then their finished
prefix is committed synchronously before the partitions go. Settlements that come later are
ignored: the new owner redelivers those messages (duplicates only from in-flight work).

Start offsets: ``KafkaTransport.seek_partitions`` may leave offsets where the group's next
member begins each partition (``StartOffsets``): the first member assigned a partition
starts it there instead of at the committed offset, and stores that offset for the next
commit. Each is used once.

Retries: ``nack(delay)`` publishes a copy (same id, attempt + 1, not-before time) to the
group's retry topic ``<topic>.mqkit-retry.<group>``, which the same subscription reads, and
only then finishes the original. The copy is held in memory until its not-before time, so the
original partition never blocks, and a redelivery never comes early, even after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from itertools import groupby
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaRecord

from mqkit.errors import AlreadySettledError, ConfigurationError, MqkitError
from mqkit.message import Delivery, Message
from mqkit_kafka.config import KafkaConfig
from mqkit_kafka.errors import _AUTHZ, convert
from mqkit_kafka.headers import ATTEMPT, NOT_BEFORE, TOPIC, decode_record
from mqkit_kafka.offsets import PartitionOffsets
from mqkit_kafka.publisher import Publisher
from mqkit_kafka.watchdog import STALL_S, ThreadWatch

log = logging.getLogger("mqkit.kafka.subscriber")

TP = tuple[str, int]
# Records per consume call: one GIL hand-over for many records, yet few enough that records
# die young. Every record is a garbage-collected object; thousands waiting in the buffer
# survive into the oldest generation and trigger full collections, which in a process with a
# large heap cost tens of milliseconds each (librdkafka keeps its own prefetch outside Python).
_FETCH_BATCH = 1000
_FETCH_WAIT = 0.1  # how long the thread waits for a first record before looking around

Record = Any  # confluent_kafka.Message (not constructible from Python)
# A seek command for the consumer thread: (done, offset, timestamp, offsets per partition).
_Seek = tuple[asyncio.Future[None], int | None, float | None, dict[int, int] | None]
# Records of one partition handed out together: (records, the partition's offsets,
# (topic, partition), the records' offsets).
_Chunk = tuple[list[Record], PartitionOffsets, TP, Sequence[int]]
# Unbound record methods, for map() over a consume() batch.
_topic_of: Callable[[Record], Any] = KafkaRecord.topic
_partition_of: Callable[[Record], Any] = KafkaRecord.partition
_offset_of: Callable[[Record], Any] = KafkaRecord.offset
_value_of: Callable[[Record], Any] = KafkaRecord.value
_error_of: Callable[[Record], Any] = KafkaRecord.error


def _fetch(consumer: Consumer) -> list[Record]:
    """What is ready now, up to ``_FETCH_BATCH``; else the first record to arrive within
    ``_FETCH_WAIT`` and whatever came with it. ``consume(n, t)`` alone would wait until ``n``
    records or ``t`` seconds: at a trickle every record would sit out the whole wait."""
    records: list[Record] = consumer.consume(_FETCH_BATCH, 0)
    if records:
        return records
    records = consumer.consume(1, _FETCH_WAIT)
    if records:
        records.extend(consumer.consume(_FETCH_BATCH - 1, 0))
    return records


def _count(items: Iterable[Any]) -> int:
    """How many ``items``, at C speed and without keeping them all alive at once."""
    last = deque(enumerate(items, 1), maxlen=1)
    return last[0][0] if last else 0


class _Run:
    """Fetched records of one partition, in offset order; those from ``pos`` on are not
    handed out yet. One object per ``consume`` run, not per record: fewer allocations and
    less for the garbage collector to walk while records wait in the buffer."""

    __slots__ = ("offsets", "part", "pos", "records", "tp")

    def __init__(
        self, records: list[Record], part: PartitionOffsets, tp: TP, offsets: Sequence[int]
    ) -> None:
        self.records = records
        self.part = part
        self.tp = tp
        self.offsets = offsets
        self.pos = 0


class StartOffsets:
    """Where members of one group begin partitions of one topic (partition -> next offset to
    read) instead of at the group's committed offsets. Each offset is taken once, by the
    first member assigned its partition. Thread-safe (taken in rebalance callbacks)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._lock = threading.Lock()
        self._offsets: dict[int, int] = {}

    def put(self, offsets: Mapping[int, int]) -> None:
        """Set (or replace) the start offset of each partition in ``offsets``."""
        with self._lock:
            self._offsets.update(offsets)

    def take(self, partitions: Iterable[TP]) -> dict[TP, int]:
        """Remove and return the start offsets of ``partitions`` (those of this topic)."""
        with self._lock:
            if not self._offsets:
                return {}
            return {
                (t, p): self._offsets.pop(p)
                for t, p in partitions
                if t == self.topic and p in self._offsets
            }

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._offsets)


class KafkaDelivery(Delivery):
    """A record of a Kafka partition. ``partition`` and ``offset`` say where it came from."""

    __slots__ = ("_part", "_sub", "_tp", "offset", "partition", "source_topic")

    def __init__(
        self,
        message: Message,
        attempt: int,
        sub: Subscription,
        part: PartitionOffsets,
        tp: TP,
        offset: int,
    ) -> None:
        # Delivery.__init__'s fields, set here directly: this runs once per record.
        self.message = message
        self.attempt = attempt
        self.settled = None
        self.state = {}
        self._dead_letter_publisher = sub._publish_one_bound
        self._sub = sub
        self._part = part
        self._tp = tp
        self.source_topic, self.partition = tp
        self.offset = offset

    async def ack(self) -> None:
        """``Delivery.ack`` without its inner ``_ack`` await (one coroutine per message)."""
        if self.settled is not None:
            self._claim("acked")  # raises AlreadySettledError
        self.settled = "acked"
        self._sub._acked(self)

    async def _ack(self) -> None:
        self._sub._finish(self, done=True)

    async def _nack(self, delay: float | None) -> None:
        await self._sub._redeliver(self, delay)


class KafkaBatch:
    """Records handed out together (``Subscription.take_batch``), for a batch handler.

    The happy path builds no ``Message`` and no ``Delivery`` per record: ``bodies`` reads the
    values straight off the records and ``ack`` settles every record at once. Anything else
    (a body that does not decode, a handler that failed) turns the batch into one
    ``KafkaDelivery`` per record with ``deliveries`` and settles those one by one. Either way
    a record counts as finished only once acked, dead-lettered or its retry copy confirmed.
    """

    __slots__ = ("_chunks", "_count", "_decoded", "_sub", "settled")

    def __init__(self, sub: Subscription, chunks: list[_Chunk], count: int) -> None:
        self._sub = sub
        self._chunks = chunks
        self._count = count
        self._decoded: list[tuple[Message, int]] | None = None
        self.settled: str | None = None

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"<KafkaBatch of {self._count} from {self._sub.topic!r} {self.settled}>"

    def extend(self, other: KafkaBatch) -> None:
        """Take over the records of ``other`` (a later batch of the same subscription)."""
        if other._sub is not self._sub or self.settled or other.settled:
            raise ValueError("only unsettled batches of one subscription can be merged")
        self._chunks.extend(other._chunks)
        self._count += other._count
        self._decoded = None
        other._chunks, other._count, other.settled = [], 0, "merged"

    def bodies(self) -> list[bytes]:
        """The message bodies, in order (a tombstone's is b"", as in its ``Message``)."""
        out: list[bytes] = []
        for records, _, _, _ in self._chunks:
            out.extend(map(_value_of, records))
        if None in out:  # a tombstone (rare): a second pass only then
            return [value or b"" for value in out]
        return out

    def messages(self) -> list[Message]:
        """The messages, in order (decoded once per batch)."""
        return [message for message, _ in self._decode()]

    def deliveries(self) -> list[Delivery]:
        """One ``KafkaDelivery`` per record, to settle each on its own; the batch itself can
        no longer be acked."""
        self._claim("split")
        sub = self._sub
        decoded = iter(self._decode())
        out: list[Delivery] = []
        for _, part, tp, offsets in self._chunks:
            for offset in offsets:
                message, attempt = next(decoded)
                out.append(KafkaDelivery(message, attempt, sub, part, tp, offset))
        return out

    async def ack(self) -> None:
        """Every record was handled: finish them all (one offset flush for the lot)."""
        self._claim("acked")
        self._sub._ack_chunks(self._chunks, self._count)

    def _claim(self, how: str) -> None:
        if self.settled is not None:
            raise AlreadySettledError(f"{self!r}: cannot {how}")
        self.settled = how

    def _decode(self) -> list[tuple[Message, int]]:
        if self._decoded is None:
            self._decoded = self._sub._decode_chunks(self._chunks)
        return self._decoded


class Subscription:
    """An async iterator of ``KafkaDelivery`` for one member of ``group`` on ``topic``.

    Several tasks of one loop may await ``__anext__`` (or ``take``) at once
    (``concurrent_fetch``: the core's consumer then fetches without a lock); deliveries may
    be settled from any task of the loop. ``aclose`` stops fetching, commits what finished
    and leaves the group; deliveries not settled by then are redelivered to the group.
    Iterating after ``aclose`` ends at once.
    """

    concurrent_fetch = True

    def __init__(
        self,
        config: KafkaConfig,
        publisher: Publisher,
        topic: str,
        retry_topic: str,
        group: str,
        prefetch: int,
        prepare: Callable[[], Awaitable[None]],
        on_close: Callable[[Subscription], None],
        extra_conf: dict[str, Any] | None = None,
        start: StartOffsets | None = None,
    ) -> None:
        if prefetch < 1:
            raise ConfigurationError("prefetch must be >= 1")
        self.topic = topic
        self.retry_topic = retry_topic
        self.group = group
        self._config = config
        self._publisher = publisher
        self._prefetch = prefetch
        self._prepare = prepare
        self._on_close = on_close
        self._publish_one_bound = self._publish_one
        self._conf = config.consumer_conf(group, **(extra_conf or {}))
        self._conf["error_cb"] = self._on_client_error
        self._cooperative = "cooperative" in str(self._conf.get("partition.assignment.strategy"))
        self._start = start
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: deque[_Run] = deque()
        self._parts: dict[TP, PartitionOffsets] = {}
        self._held: dict[tuple[TP, int], asyncio.TimerHandle] = {}
        self._unsettled = 0
        self._waiters: list[asyncio.Future[None]] = []  # tasks waiting for records
        self._idle: asyncio.Future[None] | None = None
        self._error: MqkitError | None = None
        self._dirty: set[TP] = set()
        self._flush_scheduled = False
        self._assigned = asyncio.Event()
        self._started = False
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_done: asyncio.Future[None] | None = None
        self._watch = ThreadWatch(
            f"{topic}/{group}", stall_s=max(STALL_S, config.revoke_timeout + 30)
        )
        self._watcher: asyncio.Task[None] | None = None
        self._consumer: Consumer | None = None
        self._commands: queue.SimpleQueue[_Seek] = queue.SimpleQueue()
        self._posted = 0  # written by the thread
        self._taken = 0  # written by the loop
        self._paused = False  # thread only
        self._room = threading.Event()  # set by the loop when the buffer drained
        self._want_room = False
        self._store_lock = threading.Lock()
        self._to_store: dict[TP, int] = {}

    def __repr__(self) -> str:
        return f"<kafka Subscription {self.topic!r} group={self.group!r}>"

    # --- the iterator -----------------------------------------------------------------
    def __aiter__(self) -> Subscription:
        return self

    def __anext__(self) -> Awaitable[KafkaDelivery]:
        """The next delivery. One that is ready comes back as a completed future: awaiting it
        does not suspend, and a caller that schedules it (``asyncio.ensure_future``) gets no
        task and no extra loop turn."""
        delivery = self.poll_ready()
        if delivery is not None:
            assert self._loop is not None
            ready: asyncio.Future[KafkaDelivery] = self._loop.create_future()
            ready.set_result(delivery)
            return ready
        return self._anext()

    def poll_ready(self) -> KafkaDelivery | None:
        """The next delivery if one is ready now, else None (then await ``__anext__``). The
        core's consumer calls this first: no future, coroutine or await per message."""
        if self._loop is None or self._error is not None or self._closed:
            return None
        return self._next_ready()

    async def _anext(self) -> KafkaDelivery:
        if not self._started:
            await self.start()
        while True:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            delivery = self._next_ready()
            if delivery is not None:
                return delivery
            await self._wait()

    async def take(self, max_items: int, timeout: float) -> list[KafkaDelivery]:
        """Up to ``max_items`` deliveries: waits at most ``timeout`` seconds for the first,
        then returns what is ready (the batch path: one wake-up for many records)."""
        chunks, _ = await self._take_chunks(max_items, timeout)
        decoded = iter(self._decode_chunks(chunks))
        out: list[KafkaDelivery] = []
        for _, part, tp, offsets in chunks:
            for offset in offsets:
                message, attempt = next(decoded)
                out.append(KafkaDelivery(message, attempt, self, part, tp, offset))
        return out

    async def take_batch(self, max_items: int, timeout: float) -> KafkaBatch:
        """``take`` as one ``KafkaBatch``: no ``Message`` or ``Delivery`` per record unless
        the batch asks for them (see ``KafkaBatch``). Empty when nothing came in time."""
        chunks, count = await self._take_chunks(max_items, timeout)
        return KafkaBatch(self, chunks, count)

    async def _take_chunks(self, max_items: int, timeout: float) -> tuple[list[_Chunk], int]:
        if not self._started:
            await self.start()
        out: list[_Chunk] = []
        deadline = time.monotonic() + timeout
        while True:
            if self._error is not None:
                raise self._error
            if self._closed:
                return out, 0
            taken = self._take_ready(max_items, out)
            if taken:
                return out, taken
            left = deadline - time.monotonic()
            if left <= 0:
                return out, 0
            try:
                async with asyncio.timeout(left):
                    await self._wait()
            except TimeoutError:
                return out, 0

    def _decode_chunks(self, chunks: list[_Chunk]) -> list[tuple[Message, int]]:
        retry_topic = self.retry_topic
        out: list[tuple[Message, int]] = []
        for records, _, (topic, partition), offsets in chunks:
            retry_copy = topic == retry_topic
            out.extend(
                decode_record(record, topic, partition, offset, retry_copy=retry_copy)
                for record, offset in zip(records, offsets, strict=True)
            )
        return out

    def _next_ready(self) -> KafkaDelivery | None:
        """``_take_ready`` for one delivery, without the list (the per-message path)."""
        ready = self._ready
        while ready and self._unsettled < self._prefetch:
            run = ready[0]
            part = run.part
            pos = run.pos
            if part.closed:  # revoked or reset meanwhile: its records are dropped
                ready.popleft()
                self._taken += len(run.records) - pos
                continue
            record, offset = run.records[pos], run.offsets[pos]
            run.pos = pos = pos + 1
            if pos == len(run.records):
                ready.popleft()
            self._taken += 1
            if self._want_room:
                self._drained()
            tp = run.tp
            topic = tp[0]
            message, attempt = decode_record(
                record, topic, tp[1], offset, retry_copy=topic == self.retry_topic
            )
            part.active += 1
            self._unsettled += 1
            return KafkaDelivery(message, attempt, self, part, tp, offset)
        return None

    def _take_ready(self, max_items: int, out: list[_Chunk]) -> int:
        """Move up to ``max_items`` ready records to ``out`` as chunks (within ``prefetch``),
        counted as handed out: each is settled later as a delivery or with its batch.
        Returns how many."""
        ready = self._ready
        room = min(max_items, self._prefetch - self._unsettled)
        taken = 0
        while ready and taken < room:
            run = ready[0]
            part, pos, records = run.part, run.pos, run.records
            left = len(records) - pos
            if part.closed:  # revoked or reset meanwhile: its records are dropped
                ready.popleft()
                self._taken += left
                continue
            n = min(left, room - taken)
            if n == left:
                ready.popleft()
            if n == len(records):
                out.append((records, part, run.tp, run.offsets))
            else:
                end = pos + n
                out.append((records[pos:end], part, run.tp, run.offsets[pos:end]))
                run.pos = end
            part.active += n
            taken += n
        self._taken += taken
        self._unsettled += taken
        if self._want_room:
            self._drained()
        return taken

    async def _wait(self) -> None:
        loop = self._loop
        assert loop is not None
        waiter = loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter.cancelled() or not waiter.done():  # cancelled or timed out: still listed
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def _wake(self) -> None:
        """Wake every waiting task; each takes what is ready or waits again."""
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Check the topics, start the consumer thread and join the group. Idempotent."""
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        try:
            await self._prepare()
        except BaseException:
            self._closed = True
            self._wake()
            self._on_close(self)
            raise
        self._thread_done = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, name=f"mqkit-kafka-{self.topic}-{self.group}", daemon=True
        )
        self._thread.start()
        self._watcher = self._loop.create_task(
            self._watch.watch(self._thread), name=f"mqkit-kafka-watch-{self.topic}"
        )

    async def wait_assigned(self, timeout: float = 30.0) -> None:
        """Until this member owns at least one partition (tests, warm-up)."""
        if not self._started:
            await self.start()
        async with asyncio.timeout(timeout):
            await self._assigned.wait()

    @property
    def started(self) -> bool:
        """True once the subscription started (joined, or is joining, the group)."""
        return self._started and not self._closed

    @property
    def assignment(self) -> list[TP]:
        """The partitions this member owns now."""
        return sorted(self._parts)

    async def aclose(self) -> None:
        """Stop fetching, commit what finished, leave the group. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        for handle in self._held.values():
            handle.cancel()
        self._held.clear()
        if self._thread is not None and self._thread_done is not None:
            self._flush_offsets()
            self._stop.set()
            self._room.set()
            try:
                await asyncio.shield(self._thread_done)
            finally:
                self._thread = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        self._on_close(self)

    # --- settlement (loop thread) -----------------------------------------------------
    @property
    def dead_letter_publisher(self) -> Callable[[Message], Awaitable[None]]:
        return self._publish_one

    async def _publish_one(self, message: Message) -> None:
        await self._publisher.publish((message,))

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Ack every delivery in ``deliveries`` at once (the batch handler's settlement): one
        offset flush and one wake-up for the lot. Raises ``AlreadySettledError``, acking
        none, if one was settled already."""
        mine: list[KafkaDelivery] = []
        others: list[Delivery] = []
        for delivery in deliveries:
            if delivery.settled is not None:
                delivery._claim("acked")  # raises AlreadySettledError
            if isinstance(delivery, KafkaDelivery) and delivery._sub is self:
                mine.append(delivery)
            else:
                others.append(delivery)
        dirty = self._dirty
        for delivery in mine:
            delivery.settled = "acked"
            part = delivery._part
            part.active -= 1
            if not part.closed and part.done(delivery.offset):
                dirty.add(delivery._tp)
        self._unsettled -= len(mine)
        self._settlements_changed()
        for delivery in others:
            await delivery.ack()

    def _ack_chunks(self, chunks: list[_Chunk], count: int) -> None:
        """Finish the handed-out records of a ``KafkaBatch``, a chunk at a time."""
        dirty = self._dirty
        for _, part, tp, offsets in chunks:
            part.active -= len(offsets)
            if not part.closed and part.done_many(offsets):
                dirty.add(tp)
        self._unsettled -= count
        self._settlements_changed()

    def _acked(self, delivery: KafkaDelivery) -> None:
        """``_finish(delivery, done=True)`` for one ack, inlined: this runs per message."""
        part = delivery._part
        self._unsettled -= 1
        part.active -= 1
        if not part.closed and part.done(delivery.offset):
            self._dirty.add(delivery._tp)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                assert self._loop is not None
                self._loop.call_soon(self._flush_offsets)
        if self._idle is not None:
            self._settlements_changed()
        elif self._waiters:
            self._wake()

    def _finish(self, delivery: KafkaDelivery, *, done: bool) -> None:
        part = delivery._part
        self._unsettled -= 1
        part.active -= 1
        if not part.closed and done and part.done(delivery.offset):
            self._dirty.add(delivery._tp)
        self._settlements_changed()

    def _settlements_changed(self) -> None:
        """After settlements: schedule the offset flush, wake whoever waits for them."""
        if self._dirty and not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush_offsets)
        idle = self._idle
        if idle is not None and not idle.done():
            idle.set_result(None)
        self._wake()

    async def _redeliver(self, delivery: KafkaDelivery, delay: float | None) -> None:
        message = delivery.message
        extra = {ATTEMPT: str(delivery.attempt + 1), TOPIC: message.topic}
        if delay:
            extra[NOT_BEFORE] = f"{time.time() + delay:.6f}"
        copy = Message(
            topic=self.retry_topic,
            body=message.body,
            key=message.key,
            headers={**message.headers, **extra},
            id=message.id,
            timestamp=message.timestamp,
        )
        try:
            await self._publisher.publish((copy,))
        except BaseException:
            # Not finished: the offset stays uncommitted and the message comes back after
            # the next rebalance or restart.
            self._finish(delivery, done=False)
            raise
        self._finish(delivery, done=True)

    def _flush_offsets(self) -> None:
        """Hand the committable offsets of finished partitions to the consumer thread, which
        stores them (librdkafka then auto-commits them). Consumer calls stay on its thread."""
        self._flush_scheduled = False
        if not self._dirty:
            return
        with self._store_lock:
            for tp in self._dirty:
                part = self._parts.get(tp)
                if part is not None and not part.closed and part.committable is not None:
                    self._to_store[tp] = part.committable
        self._dirty.clear()

    def _store_offsets(self, consumer: Consumer) -> None:
        with self._store_lock:
            pending, self._to_store = self._to_store, {}
        if not pending:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in pending.items()]
        try:
            consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:  # partition just revoked: the new owner redelivers
            log.debug("could not store offsets on %s: %s", self.topic, exc)

    # --- records and rebalances (posted by the thread, run on the loop) -------------------
    def _on_records(self, records: list[Record]) -> None:
        # consume() returns runs of one partition: each run is looked up and buffered as a
        # whole, at C speed (map, groupby) rather than one Python step per record. A run's
        # offsets are a range when gap-free (the usual case): no list of ints per record.
        parts = self._parts
        topic = self.topic
        topics = list(map(_topic_of, records))
        main_only = topics.count(topic) == len(topics)  # the usual fetch: no retry copies
        keys: Iterable[Any] = (
            map(_partition_of, records) if main_only
            else zip(topics, map(_partition_of, records), strict=True)
        )
        end = 0
        for key, run in groupby(keys):
            start, end = end, end + _count(run)
            tp: TP = (topic, key) if main_only else key
            part = parts.get(tp)
            if part is None or part.closed:
                self._taken += end - start
                continue
            run_records = records if end - start == len(records) else records[start:end]
            first, last = run_records[0].offset(), run_records[-1].offset()
            offsets: Sequence[int] = (
                range(first, last + 1) if last - first == end - start - 1
                else list(map(_offset_of, run_records))
            )
            if tp[0] == self.retry_topic:
                self._on_retry_copies(run_records, part, tp, offsets)
            else:
                part.add_run(offsets)
                self._ready.append(_Run(run_records, part, tp, offsets))
        self._wake()

    def _on_retry_copies(
        self, records: list[Record], part: PartitionOffsets, tp: TP, offsets: Sequence[int]
    ) -> None:
        """Buffer a run of retry copies; hold those whose not-before time is still ahead."""
        part.add_run(offsets)
        now = time.time()
        for record, offset in zip(records, offsets, strict=True):
            not_before = _not_before(record)
            run = _Run([record], part, tp, [offset])
            if not_before > now:
                self._hold(run, not_before)
            else:
                self._ready.append(run)

    def _hold(self, run: _Run, not_before: float) -> None:
        """Keep a retry copy (a run of one) out of the buffer until its not-before time."""
        loop = self._loop
        assert loop is not None
        self._taken += 1  # not in the buffer: does not count against max_buffered
        run.part.held += 1
        key = (run.tp, run.offsets[0])
        delay = max(0.0, not_before - time.time())
        self._held[key] = loop.call_later(delay, self._release, run, not_before)

    def _release(self, run: _Run, not_before: float) -> None:
        part = run.part
        key = (run.tp, run.offsets[0])
        self._held.pop(key, None)
        if part.closed or self._closed:
            return
        left = not_before - time.time()
        if left > 0:  # timers may fire a hair early: never redeliver before the time asked
            assert self._loop is not None
            self._held[key] = self._loop.call_later(left, self._release, run, not_before)
            return
        part.held -= 1
        self._taken -= 1  # back in the buffer
        self._ready.append(run)
        self._wake()

    def _assigned_partitions(self, tps: list[TP]) -> None:
        for tp in tps:
            if tp not in self._parts:
                self._parts[tp] = PartitionOffsets()
        self._assigned.set()

    async def _revoked(self, tps: list[TP], *, commit: bool) -> list[tuple[str, int, int]]:
        gone = set(tps)
        parts = [p for tp in tps if (p := self._parts.get(tp)) is not None]
        self._drop_buffered(gone)
        for key in [k for k in self._held if k[0] in gone]:
            self._held.pop(key).cancel()
        if commit and not self._closed:
            await self._wait_idle(parts, self._config.revoke_timeout)
        out: list[tuple[str, int, int]] = []
        for tp in tps:
            part = self._parts.pop(tp, None)
            if part is None:
                continue
            part.closed = True
            self._dirty.discard(tp)
            if commit and part.committable is not None:
                out.append((tp[0], tp[1], part.committable))
        if not self._parts:
            self._assigned.clear()
        return out

    async def _wait_idle(self, parts: list[PartitionOffsets], timeout: float) -> None:
        loop = self._loop
        assert loop is not None
        deadline = loop.time() + timeout
        while any(p.active for p in parts):
            left = deadline - loop.time()
            if left <= 0:
                log.warning(
                    "%s/%s: handlers still running on revoked partitions after %.1fs; "
                    "their messages will be redelivered to the new owner",
                    self.topic, self.group, timeout,
                )
                return
            self._idle = idle = loop.create_future()
            try:
                async with asyncio.timeout(left):
                    await idle
            except TimeoutError:
                pass
            finally:
                self._idle = None

    def _after_seek(self, targets: list[tuple[str, int, int]]) -> None:
        reset = {(t, p) for t, p, _ in targets}
        for tp in reset:
            old = self._parts.get(tp)
            if old is not None:
                old.closed = True
                self._parts[tp] = PartitionOffsets()
            self._dirty.discard(tp)
        self._drop_buffered(reset)

    def _drop_buffered(self, tps: set[TP]) -> None:
        """Forget the buffered records of ``tps`` (revoked, or moved by a seek)."""
        kept: deque[_Run] = deque()
        for run in self._ready:
            if run.tp in tps:
                self._taken += len(run.records) - run.pos
            else:
                kept.append(run)
        self._ready = kept
        self._drained()

    def _fail(self, error: MqkitError) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    # --- seek -------------------------------------------------------------------------
    async def seek(self, *, offset: int | None = None, timestamp: float | None = None) -> None:
        """Move every partition of ``topic`` this member owns to ``offset`` (the same number
        in each partition) or to the first message at or after ``timestamp`` (epoch seconds).
        The new position is committed before this returns."""
        if (offset is None) == (timestamp is None):
            raise ConfigurationError("seek needs exactly one of offset or timestamp")
        if offset is not None and offset < 0:
            raise ConfigurationError("seek offset must be >= 0")
        await self._seek(offset, timestamp, None)

    async def seek_partitions(self, offsets: Mapping[int, int]) -> None:
        """Move each partition of ``topic`` this member owns to its offset in ``offsets``
        (partition -> next offset to read); partitions it does not own are left alone.
        Committed before this returns."""
        if any(o < 0 for o in offsets.values()):
            raise ConfigurationError("seek offsets must be >= 0")
        await self._seek(None, None, dict(offsets))

    async def _seek(
        self, offset: int | None, timestamp: float | None, offsets: dict[int, int] | None
    ) -> None:
        if not self._started:
            await self.start()
        await self.wait_assigned(self._config.connect_timeout * 6)
        assert self._loop is not None
        done: asyncio.Future[None] = self._loop.create_future()
        self._commands.put((done, offset, timestamp, offsets))
        await done

    # --- the consumer thread ----------------------------------------------------------
    def _post(self, callback: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._stop.set()

    def _run(self) -> None:
        try:
            consumer = Consumer(self._conf)
        except KafkaException as exc:
            self._post(self._fail, convert(exc, "creating the Kafka consumer",
                                           secrets=self._config.secrets))
            self._post(_resolve, self._thread_done)
            return
        self._consumer = consumer
        try:
            consumer.subscribe(
                [self.topic, self.retry_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            while not self._stop.is_set():
                self._watch.polled()
                self._run_commands(consumer)
                self._store_offsets(consumer)
                records = _fetch(consumer)
                if records:
                    good = records
                    # Error records are rare: look for one at C speed, filter only then.
                    if any(map(_error_of, records)):
                        good = [record for record in records if record.error() is None]
                        self._client_errors(records)
                    if good:
                        self._posted += len(good)
                        self._post(self._on_records, good)
                self._flow(consumer)
        except Exception as exc:
            self._post(self._fail, convert(exc, f"consuming {self.topic!r}",
                                           secrets=self._config.secrets))
        finally:
            self._fail_commands(consumer)
            self._store_offsets(consumer)
            try:
                consumer.close()  # revokes (commits what finished) and leaves the group
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing the Kafka consumer of %s: %s", self.topic, exc)
            self._consumer = None
            self._post(_resolve, self._thread_done)

    def _flow(self, consumer: Consumer) -> None:
        """Back-pressure. Past ``max_buffered`` fetched-but-not-handed-out records the thread
        waits (up to a second) for the loop to drain half of them; only a buffer that stays
        full pauses the partitions (pausing drops librdkafka's prefetched data, which is
        cheap for a slow consumer but would throttle a fast one)."""
        limit = self._config.max_buffered
        buffered = self._posted - self._taken
        if buffered <= limit:
            if self._paused and buffered < limit // 2:
                consumer.resume(consumer.assignment())
                self._paused = False
            return
        if self._paused:
            consumer.pause(consumer.assignment())  # again each time: covers new partitions
            return
        self._room.clear()
        self._want_room = True
        try:
            if self._posted - self._taken > limit and not self._room.wait(1.0):
                consumer.pause(consumer.assignment())
                self._paused = True
        finally:
            self._want_room = False

    def _drained(self) -> None:
        if self._want_room and self._posted - self._taken <= self._config.max_buffered // 2:
            self._room.set()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        start = self._start.take(tps) if self._start else {}
        if start:
            self._assign_at(consumer, partitions, start)
        self._post(self._assigned_partitions, tps)

    def _assign_at(
        self, consumer: Consumer, partitions: list[TopicPartition], start: dict[TP, int]
    ) -> None:
        """Take the assignment with the partitions of ``start`` beginning there, and store
        those offsets (committed with the next auto-commit)."""
        placed = [
            TopicPartition(p.topic, p.partition, start.get((p.topic, p.partition), p.offset))
            for p in partitions
        ]
        try:
            if self._cooperative:
                consumer.incremental_assign(placed)
            else:
                consumer.assign(placed)
        except KafkaException as exc:  # the default assignment (committed offsets) follows
            log.warning("could not start %s at %s: %s", self.topic, start, exc)
            return
        try:
            consumer.store_offsets(
                offsets=[tp for tp in placed if (tp.topic, tp.partition) in start]
            )
        except KafkaException as exc:  # committed with the first finished message instead
            log.debug("could not store the start offsets of %s: %s", self.topic, exc)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._revoke_in_thread(consumer, partitions, commit=True)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._revoke_in_thread(consumer, partitions, commit=False)

    def _revoke_in_thread(
        self, consumer: Consumer, partitions: list[TopicPartition], *, commit: bool
    ) -> None:
        loop = self._loop
        if loop is None or not partitions:
            return
        tps = [(p.topic, p.partition) for p in partitions]
        if loop.is_closed():
            return
        revoked = self._revoked(tps, commit=commit)
        try:
            future = asyncio.run_coroutine_threadsafe(revoked, loop)
        except RuntimeError:  # the loop closed meanwhile: commit nothing
            revoked.close()
            return
        try:
            offsets = future.result(self._config.revoke_timeout + 5)
        except Exception as exc:
            log.warning("revoking %s partitions without committing: %r", self.topic, exc)
            return
        with self._store_lock:
            for tp in tps:
                self._to_store.pop(tp, None)
        if not offsets:
            return
        committed = [TopicPartition(t, p, o) for t, p, o in offsets]
        try:
            consumer.store_offsets(offsets=committed)
            consumer.commit(offsets=committed, asynchronous=False)
        except KafkaException as exc:
            log.warning("committing revoked partitions of %s failed: %s", self.topic, exc)

    def _run_commands(self, consumer: Consumer) -> None:
        while True:
            try:
                done, offset, timestamp, offsets = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                targets = self._seek_targets(consumer, offset, timestamp, offsets)
                for tp in targets:
                    consumer.seek(tp)
                self._post(self._after_seek, [(t.topic, t.partition, t.offset) for t in targets])
                if targets:
                    consumer.store_offsets(offsets=targets)
                    consumer.commit(offsets=targets, asynchronous=False)
                self._post(_resolve, done)
            except Exception as exc:
                error = convert(exc, f"seeking {self.topic!r}", secrets=self._config.secrets)
                self._post(_reject, done, error)

    def _seek_targets(
        self,
        consumer: Consumer,
        offset: int | None,
        timestamp: float | None,
        offsets: dict[int, int] | None,
    ) -> list[TopicPartition]:
        owned = [tp for tp in consumer.assignment() if tp.topic == self.topic]
        if offsets is not None:
            return [
                TopicPartition(tp.topic, tp.partition, offsets[tp.partition])
                for tp in owned
                if tp.partition in offsets
            ]
        if timestamp is None:
            assert offset is not None
            return [TopicPartition(tp.topic, tp.partition, offset) for tp in owned]
        wanted = [TopicPartition(tp.topic, tp.partition, int(timestamp * 1000)) for tp in owned]
        found = consumer.offsets_for_times(wanted, timeout=self._config.connect_timeout)
        targets = []
        for tp in found:
            if tp.offset < 0:  # no message at or after the time: the end of the partition
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=self._config.connect_timeout
                )
                tp = TopicPartition(tp.topic, tp.partition, high)
            targets.append(tp)
        return targets

    def _fail_commands(self, consumer: Consumer) -> None:
        while True:
            try:
                done, *_ = self._commands.get_nowait()
            except queue.Empty:
                return
            self._post(_reject, done, MqkitError(f"the subscription to {self.topic} closed"))

    def _client_errors(self, records: list[Record]) -> None:
        for record in records:
            err = record.error()
            if err is not None:
                self._on_client_error(err)

    def _on_client_error(self, err: KafkaError) -> None:
        """librdkafka errors: fatal ones and authorization end the subscription; the rest
        (broker down, leader moves) are retried by librdkafka itself and only logged."""
        if err.fatal() or err.code() in _AUTHZ:
            error = convert(KafkaException(err), f"consuming {self.topic!r}",
                            secrets=self._config.secrets)
            self._post(self._fail, error)
            return
        log.warning("kafka consumer of %s/%s: %s", self.topic, self.group, err.str())


def _not_before(record: Record) -> float:
    for name, value in record.headers() or ():
        if name == NOT_BEFORE and value:
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 0.0


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _reject(future: asyncio.Future[None], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
