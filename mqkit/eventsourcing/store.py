"""The store protocols: events, snapshots, projection checkpoints and the outbox.

Each backend (``memory``, ``sqlite`` (the default), ``postgres``) implements all four, so
one aggregate, projection or relay runs on each. Versions count from 1 within a stream;
positions count from 1 over the whole store, in commit order, with no gaps a reader can see.

``expected_version`` on ``append``: ``NO_STREAM`` (0) for a new stream, ``n`` for "the
stream's last event is version n", ``ANY`` (None) to skip the check. A mismatch raises
``ConcurrencyError`` and appends nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from mqkit.eventsourcing.events import NewEvent, RecordedEvent
from mqkit.message import Message

ANY: None = None
NO_STREAM = 0

Params = Sequence[Any] | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An aggregate's state as of ``version`` of its stream (``state`` is JSON data)."""

    stream: str
    version: int
    state: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A message waiting in the outbox; ``id`` orders the outbox."""

    id: int
    message: Message


class StoreTransaction(Protocol):
    """An open database transaction of a store.

    ``execute`` takes SQL with ``?`` placeholders on every SQL backend (PostgreSQL's are
    rewritten to ``%s``; write no literal ``?``) and returns the result rows. ``connection``
    is the driver's own object for anything else. Memory stores have no SQL: ``execute``
    raises ``ConfigurationError`` there.
    """

    @property
    def connection(self) -> Any: ...

    async def execute(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]: ...

    async def executemany(self, sql: str, params: Iterable[Params]) -> object:
        """Run ``sql`` once per parameter set; what it returns is the backend's own."""
        ...


@runtime_checkable
class EventStore(Protocol):
    """Append-only streams of events. Safe to use from many tasks; ``close`` twice is fine."""

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int | None,
        *,
        outbox_topic: str | None = None,
    ) -> list[RecordedEvent]:
        """Append atomically; with ``outbox_topic`` also write one outbox row per event in
        the same transaction (see ``mqkit.eventsourcing.outbox.event_message``)."""
        ...

    async def read_stream(
        self, stream: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Events of ``stream`` with version >= ``from_version``, oldest first."""
        ...

    async def read_all(self, after: int = 0, *, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events of every stream with position > ``after``, in order."""
        ...

    async def head(self) -> int:
        """The position of the newest event (0 when empty)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class SnapshotStore(Protocol):
    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as its stream's latest (an older version never replaces a newer)."""
        ...

    async def load_snapshot(self, stream: str) -> Snapshot | None: ...


@runtime_checkable
class ProjectionStore(Protocol):
    """Checkpoints kept beside a read model, written in the read model's transaction."""

    def transaction(self) -> AbstractAsyncContextManager[StoreTransaction]:
        """A transaction: commits on normal exit, rolls back on an exception."""
        ...

    async def load_checkpoint(self, name: str) -> int: ...

    async def save_checkpoint(self, tx: StoreTransaction, name: str, position: int) -> None: ...


@runtime_checkable
class OutboxStore(Protocol):
    """Messages written with state or events in one transaction, for a relay to publish."""

    async def enqueue(self, tx: StoreTransaction, messages: Sequence[Message]) -> None: ...

    async def pending(self, limit: int) -> list[OutboxRow]:
        """The oldest unsent rows, in outbox order."""
        ...

    async def mark_sent(self, ids: Sequence[int]) -> None: ...


async def iterate_all(
    store: EventStore, after: int = 0, *, batch_size: int = 1000
) -> AsyncIterator[RecordedEvent]:
    """Every event with position > ``after``, fetched ``batch_size`` at a time.

    The next batch is requested while the current one is being consumed, so the database's
    time and the caller's overlap.
    """
    batch = await store.read_all(after, limit=batch_size)
    while True:
        ahead: asyncio.Future[list[RecordedEvent]] | None = None
        if len(batch) == batch_size:
            ahead = asyncio.ensure_future(store.read_all(batch[-1].position, limit=batch_size))
        try:
            for event in batch:
                yield event
        except BaseException:
            if ahead is not None:
                ahead.cancel()
            raise
        if ahead is None:
            return
        batch = await ahead
