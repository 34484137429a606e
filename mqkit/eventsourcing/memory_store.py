"""In-memory event store: events, snapshots, checkpoints and outbox in one process's memory.

For tests and examples. Every operation is atomic with respect to other tasks (nothing
awaits midway). A ``transaction()`` buffers its checkpoints and outbox rows and applies them
only on a normal exit; a projection's own in-memory state is the projection's to manage.
Nothing survives the process.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from mqkit.errors import ConfigurationError
from mqkit.eventsourcing.errors import ConcurrencyError
from mqkit.eventsourcing.events import NewEvent, RecordedEvent
from mqkit.eventsourcing.outbox import event_message
from mqkit.eventsourcing.store import OutboxRow, Params, Snapshot, StoreTransaction
from mqkit.message import Message


class MemoryTransaction:
    """Buffers checkpoints and outbox rows until the transaction commits. No SQL."""

    connection: Any = None

    def __init__(self) -> None:
        self.checkpoints: dict[str, int] = {}
        self.outbox: list[Message] = []

    async def execute(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        raise ConfigurationError("the memory event store has no SQL; use SQLite or PostgreSQL")

    async def executemany(self, sql: str, params: Iterable[Params]) -> None:
        raise ConfigurationError("the memory event store has no SQL; use SQLite or PostgreSQL")


class MemoryEventStore:
    """See the module docstring. ``close`` only marks the store closed."""

    def __init__(self) -> None:
        self._events: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._checkpoints: dict[str, int] = {}
        self._outbox: dict[int, Message] = {}
        self._outbox_ids = 0
        self._closed = False

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int | None,
        *,
        outbox_topic: str | None = None,
    ) -> list[RecordedEvent]:
        self._check_open()
        history = self._streams.get(stream, [])
        actual = len(history)
        if expected_version is not None and expected_version != actual:
            raise ConcurrencyError(stream, expected_version, actual)
        now = time.time()
        recorded = [
            RecordedEvent(
                position=len(self._events) + i + 1,
                stream=stream,
                version=actual + i + 1,
                type=e.type,
                schema_version=e.schema_version,
                data=e.data,
                metadata=dict(e.metadata),
                event_id=e.event_id,
                recorded_at=now,
            )
            for i, e in enumerate(events)
        ]
        self._events.extend(recorded)
        self._streams.setdefault(stream, []).extend(recorded)
        if outbox_topic is not None:
            self._add_outbox(
                event_message(outbox_topic, stream, r.version, e)
                for r, e in zip(recorded, events, strict=True)
            )
        return recorded

    async def read_stream(
        self, stream: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[RecordedEvent]:
        self._check_open()
        events = self._streams.get(stream, [])[max(from_version, 1) - 1 :]
        return events[:limit] if limit is not None else list(events)

    async def read_all(self, after: int = 0, *, limit: int = 1000) -> list[RecordedEvent]:
        self._check_open()
        return self._events[max(after, 0) : max(after, 0) + limit]

    async def head(self) -> int:
        return len(self._events)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        self._check_open()
        old = self._snapshots.get(snapshot.stream)
        if old is None or old.version < snapshot.version:
            self._snapshots[snapshot.stream] = snapshot

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        self._check_open()
        return self._snapshots.get(stream)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTransaction]:
        self._check_open()
        tx = MemoryTransaction()
        yield tx
        self._checkpoints.update(tx.checkpoints)
        self._add_outbox(tx.outbox)

    async def load_checkpoint(self, name: str) -> int:
        return self._checkpoints.get(name, 0)

    async def save_checkpoint(self, tx: StoreTransaction, name: str, position: int) -> None:
        _memory_tx(tx).checkpoints[name] = position

    async def enqueue(self, tx: StoreTransaction, messages: Sequence[Message]) -> None:
        _memory_tx(tx).outbox.extend(messages)

    async def pending(self, limit: int) -> list[OutboxRow]:
        rows = sorted(self._outbox.items())[:limit]
        return [OutboxRow(i, m) for i, m in rows]

    async def mark_sent(self, ids: Sequence[int]) -> None:
        for i in ids:
            self._outbox.pop(i, None)

    async def close(self) -> None:
        self._closed = True

    def _add_outbox(self, messages: Iterable[Message]) -> None:
        for message in messages:
            self._outbox_ids += 1
            self._outbox[self._outbox_ids] = message

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("MemoryEventStore is closed")


def _memory_tx(tx: StoreTransaction) -> MemoryTransaction:
    if not isinstance(tx, MemoryTransaction):
        raise ConfigurationError("a transaction of another store was passed to MemoryEventStore")
    return tx


__all__ = ["MemoryEventStore", "MemoryTransaction"]
