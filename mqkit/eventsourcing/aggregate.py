"""Aggregates: state rebuilt from events; new events recorded, then saved with their version.

    class Account(Aggregate):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.balance = 0

        def deposit(self, amount: int) -> None:          # a command: check, then record
            self.record(MoneyDeposited(amount=amount))

        def apply(self, event: Event) -> None:            # state change only; never fails
            match event:
                case MoneyDeposited(amount=a):
                    self.balance += a

``Repository.load`` restores the latest snapshot (if any) and applies the later events
(upcast, then decoded to their classes); ``save`` appends the recorded events expecting the
version the aggregate was loaded at, so a concurrent writer makes it raise
``ConcurrencyError``. With ``snapshot_every=N`` a snapshot is taken whenever a save crosses a
multiple of N; loading with or without snapshots gives the same state.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

from mqkit.errors import ConfigurationError, MqkitError
from mqkit.eventsourcing.events import Event, EventTypes, NewEvent, RecordedEvent
from mqkit.eventsourcing.store import EventStore, Snapshot, SnapshotStore
from mqkit.eventsourcing.upcasting import Upcasters

log = logging.getLogger("mqkit.eventsourcing")


class Aggregate:
    """Base of aggregates. Subclasses implement ``apply`` and call ``record`` from commands.

    ``version`` is the stream version of the last applied event (0 for a new aggregate).
    Snapshots default to the instance's public attributes (JSON-compatible values); override
    ``snapshot_state``/``restore_state`` for anything else. Not safe to share between tasks.
    """

    stream_prefix: ClassVar[str] = ""

    def __init__(self, id: str) -> None:
        self.id = id
        self.version = 0
        self._pending: list[Event] = []

    def apply(self, event: Event) -> None:
        """Change state for ``event``. Called on load and by ``record``."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply(event)")

    def record(self, event: Event) -> None:
        """Apply a new event and keep it for the next save."""
        self.apply(event)
        self._pending.append(event)

    @property
    def pending_events(self) -> list[Event]:
        return list(self._pending)

    @classmethod
    def stream_name(cls, id: str) -> str:
        return f"{cls.stream_prefix or cls.__name__}-{id}"

    def snapshot_state(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")
                and k not in ("id", "version")}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


A = TypeVar("A", bound=Aggregate)


class Repository(Generic[A]):
    """Load and save aggregates of one class on an event store. Safe to share between tasks."""

    def __init__(
        self,
        store: EventStore,
        aggregate: type[A],
        types: EventTypes,
        *,
        upcasters: Upcasters | None = None,
        snapshot_every: int | None = None,
        outbox_topic: str | None = None,
    ) -> None:
        if snapshot_every is not None:
            if snapshot_every < 1:
                raise ConfigurationError("snapshot_every must be >= 1 event")
            if not isinstance(store, SnapshotStore):
                raise ConfigurationError(f"{type(store).__name__} cannot keep snapshots")
        self.store = store
        self.aggregate = aggregate
        self.types = types
        self.upcasters = upcasters or Upcasters()
        self.snapshot_every = snapshot_every
        self.outbox_topic = outbox_topic

    async def load(self, id: str, *, use_snapshot: bool = True) -> A:
        """The aggregate as of its newest event (version 0 and fresh state if it has none)."""
        agg = self.aggregate(id)
        stream = agg.stream_name(id)
        if use_snapshot and self.snapshot_every is not None:
            assert isinstance(self.store, SnapshotStore)
            snapshot = await self.store.load_snapshot(stream)
            if snapshot is not None:
                agg.restore_state(snapshot.state)
                agg.version = snapshot.version
        for recorded in await self.store.read_stream(stream, agg.version + 1):
            agg.apply(self.decode(recorded))
            agg.version = recorded.version
        return agg

    def decode(self, recorded: RecordedEvent) -> Event:
        """The typed event for a stored one, upcast to its class's schema version."""
        return self.types.decode(self.upcasters.upcast(recorded))

    async def save(
        self, agg: A, *, metadata: Mapping[str, str] | None = None
    ) -> list[RecordedEvent]:
        """Append the recorded events expecting ``agg.version``; ``ConcurrencyError`` if stale.

        After a conflict the aggregate is unchanged: load it again and re-run the command.
        """
        pending = agg._pending
        if not pending:
            return []
        stream = agg.stream_name(agg.id)
        before = agg.version
        new = [NewEvent.of(e, metadata) for e in pending]
        recorded = await self.store.append(stream, new, before, outbox_topic=self.outbox_topic)
        agg.version = recorded[-1].version
        agg._pending = []
        n = self.snapshot_every
        if n is not None and before // n != agg.version // n:
            await self._snapshot(stream, agg)
        return recorded

    async def _snapshot(self, stream: str, agg: A) -> None:
        assert isinstance(self.store, SnapshotStore)
        try:
            await self.store.save_snapshot(Snapshot(stream, agg.version, agg.snapshot_state()))
        except MqkitError as exc:  # the events are saved; a snapshot is only a shortcut
            log.warning("snapshot of %s at version %d failed: %s", stream, agg.version, exc)
