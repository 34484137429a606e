"""Event sourcing, CQRS projections and the transactional outbox.

- events: ``Event`` (typed, pydantic; ``event_type`` and ``schema_version``), ``NewEvent``,
  ``RecordedEvent``, ``EventTypes``;
- stores: ``MemoryEventStore``, ``SqliteEventStore`` (default), ``PostgresEventStore``
  (``mqkit.eventsourcing.postgres_store``, needs the ``postgres`` extra), all through the
  protocols in ``mqkit.eventsourcing.store``; ``open_event_store(url)``;
- ``Aggregate`` and ``Repository`` (optimistic concurrency, snapshots every N events);
- ``Upcasters``: old event versions brought up to date on read;
- ``Projection`` and ``ProjectionRunner``: read models with checkpoints, rebuild,
  read-your-own-writes (``wait_for``);
- ``OutboxRelay``: outbox rows to any transport, at least once, event id as idempotency key;
- ``ExactlyOnceConsumer`` (``mqkit.eventsourcing.exactly_once``, PostgreSQL): the consumed
  position and the business write in one transaction.
"""

from mqkit.eventsourcing.aggregate import Aggregate, Repository
from mqkit.eventsourcing.errors import ConcurrencyError, UnknownEventType, UpcastError
from mqkit.eventsourcing.events import Event, EventTypes, NewEvent, RecordedEvent
from mqkit.eventsourcing.factory import open_event_store
from mqkit.eventsourcing.memory_store import MemoryEventStore
from mqkit.eventsourcing.projection import Projection, ProjectionRunner
from mqkit.eventsourcing.relay import OutboxRelay
from mqkit.eventsourcing.sqlite_store import SqliteEventStore
from mqkit.eventsourcing.store import (
    ANY,
    NO_STREAM,
    EventStore,
    OutboxRow,
    OutboxStore,
    ProjectionStore,
    Snapshot,
    SnapshotStore,
    StoreTransaction,
    iterate_all,
)
from mqkit.eventsourcing.upcasting import Upcasters

__all__ = [
    "ANY",
    "NO_STREAM",
    "Aggregate",
    "ConcurrencyError",
    "Event",
    "EventStore",
    "EventTypes",
    "MemoryEventStore",
    "NewEvent",
    "OutboxRelay",
    "OutboxRow",
    "OutboxStore",
    "Projection",
    "ProjectionRunner",
    "ProjectionStore",
    "RecordedEvent",
    "Repository",
    "Snapshot",
    "SnapshotStore",
    "SqliteEventStore",
    "StoreTransaction",
    "UnknownEventType",
    "UpcastError",
    "Upcasters",
    "iterate_all",
    "open_event_store",
]
