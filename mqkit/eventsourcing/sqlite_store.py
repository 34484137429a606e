"""SQLite event store: the embedded default. Events, snapshots, checkpoints and outbox in one
file, so a projection's read model, its checkpoint, and an outbox row share a transaction.

URL: ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite://`` (in memory,
private to the store). Tables are ``<prefix>_events``, ``_snapshots``, ``_checkpoints`` and
``_outbox`` (created if missing; ``prefix`` defaults to ``mqkit``).

Order and concurrency: every write is a ``BEGIN IMMEDIATE`` transaction, so SQLite's single
writer lock serialises appends, even from other processes; positions are assigned under that
lock as ``head + 1 ...``, so they commit in order without gaps. ``(stream, version)`` is
unique: two writers expecting the same version cannot both succeed; the loser gets
``ConcurrencyError``.

Limits: one writer at a time per file; calls on one store run one at a time on its thread;
never call the store from inside its own ``transaction()`` block (it deadlocks): use the
transaction's ``execute`` and the ``*_in(tx, ...)`` variants instead.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from mqkit.errors import ConfigurationError
from mqkit.eventsourcing.errors import ConcurrencyError
from mqkit.eventsourcing.events import NewEvent, RecordedEvent
from mqkit.eventsourcing.outbox import decode_headers, encode_headers, event_message
from mqkit.eventsourcing.store import OutboxRow, Snapshot, StoreTransaction
from mqkit.message import Message
from mqkit.stores._names import check_table_name
from mqkit.stores._sqlite import SqliteDb, SqliteTransaction

T = TypeVar("T")

_COLUMNS = "position, stream, version, type, schema_version, data, metadata, event_id, recorded_at"


def table_names(prefix: str) -> dict[str, str]:
    """``prefix``'s table names, each checked as a plain SQL identifier."""
    names = {k: f"{prefix}_{k}" for k in ("events", "snapshots", "checkpoints", "outbox")}
    for name in names.values():
        check_table_name(name)
    return names


@dataclass(frozen=True)
class _Sql:
    schema: tuple[str, ...]
    version: str
    head: str
    insert: str
    read_stream: str
    read_all: str
    save_snapshot: str
    load_snapshot: str
    load_checkpoint: str
    save_checkpoint: str
    enqueue: str
    pending: str
    mark_sent: str

    @classmethod
    def for_prefix(cls, prefix: str) -> _Sql:
        t = table_names(prefix)
        ev, sn, cp, ob = t["events"], t["snapshots"], t["checkpoints"], t["outbox"]
        return cls(
            schema=(
                f'CREATE TABLE IF NOT EXISTS "{ev}" (position INTEGER PRIMARY KEY, '
                "stream TEXT NOT NULL, version INTEGER NOT NULL, type TEXT NOT NULL, "
                "schema_version INTEGER NOT NULL, data TEXT NOT NULL, metadata TEXT NOT NULL, "
                "event_id TEXT NOT NULL UNIQUE, recorded_at REAL NOT NULL, "
                "UNIQUE (stream, version))",
                f'CREATE TABLE IF NOT EXISTS "{sn}" (stream TEXT PRIMARY KEY, '
                "version INTEGER NOT NULL, state TEXT NOT NULL) WITHOUT ROWID",
                f'CREATE TABLE IF NOT EXISTS "{cp}" (name TEXT PRIMARY KEY, '
                "position INTEGER NOT NULL) WITHOUT ROWID",
                f'CREATE TABLE IF NOT EXISTS "{ob}" (id INTEGER PRIMARY KEY, '
                "message_id TEXT NOT NULL, topic TEXT NOT NULL, key TEXT, headers TEXT NOT NULL, "
                "body BLOB NOT NULL, timestamp REAL NOT NULL, sent_at REAL)",
                f'CREATE INDEX IF NOT EXISTS "{ob}_unsent" ON "{ob}" (id) WHERE sent_at IS NULL',
            ),
            version=f'SELECT COALESCE(MAX(version), 0) FROM "{ev}" WHERE stream = ?',
            head=f'SELECT COALESCE(MAX(position), 0) FROM "{ev}"',
            insert=f'INSERT INTO "{ev}" ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
            read_stream=(
                f'SELECT {_COLUMNS} FROM "{ev}" WHERE stream = ? AND version >= ? '
                "ORDER BY version LIMIT ?"
            ),
            read_all=f'SELECT {_COLUMNS} FROM "{ev}" WHERE position > ? ORDER BY position LIMIT ?',
            save_snapshot=(
                f'INSERT INTO "{sn}" (stream, version, state) VALUES (?, ?, ?) '
                "ON CONFLICT (stream) DO UPDATE SET version = excluded.version, "
                "state = excluded.state WHERE excluded.version > version"
            ),
            load_snapshot=f'SELECT version, state FROM "{sn}" WHERE stream = ?',
            load_checkpoint=f'SELECT position FROM "{cp}" WHERE name = ?',
            save_checkpoint=(
                f'INSERT INTO "{cp}" (name, position) VALUES (?, ?) '
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
            ),
            enqueue=(
                f'INSERT INTO "{ob}" (message_id, topic, key, headers, body, timestamp) '
                "VALUES (?, ?, ?, ?, ?, ?)"
            ),
            pending=(
                f'SELECT id, message_id, topic, key, headers, body, timestamp FROM "{ob}" '
                "WHERE sent_at IS NULL ORDER BY id LIMIT ?"
            ),
            mark_sent=f'UPDATE "{ob}" SET sent_at = ? WHERE id = ?',
        )


def _row(r: tuple[Any, ...]) -> RecordedEvent:
    return RecordedEvent(
        r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6]), r[7], r[8]
    )


def _outbox_params(messages: Sequence[Message]) -> list[tuple[Any, ...]]:
    return [
        (m.id, m.topic, m.key, encode_headers(m.headers), m.body, m.timestamp) for m in messages
    ]


class SqliteEventStore:
    """See the module docstring. Create with ``await SqliteEventStore.open(path)``.

    Database errors from the store's own statements raise ``ConnectionFailed``; calls after
    ``close`` raise ``RuntimeError``; ``close`` is safe twice.
    """

    def __init__(self, db: SqliteDb, sql: _Sql) -> None:
        self._db = db
        self._sql = sql

    @classmethod
    async def open(
        cls, path: str = ":memory:", *, prefix: str = "mqkit", busy_timeout: float = 10.0
    ) -> SqliteEventStore:
        sql = _Sql.for_prefix(prefix)
        db = await SqliteDb.open(path, sql.schema, busy_timeout,
                                 label=f"SQLite event store at {path!r}",
                                 thread_name="mqkit-es-sqlite")
        return cls(db, sql)

    # --- events -------------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int | None,
        *,
        outbox_topic: str | None = None,
    ) -> list[RecordedEvent]:
        """Append atomically (see ``EventStore.append``); ``ConcurrencyError`` on a conflict."""
        sql = self._sql

        def work(conn: sqlite3.Connection) -> list[RecordedEvent]:
            return _append(conn, sql, stream, events, expected_version, outbox_topic)

        with self._db.errors():
            try:
                return await self._db.atomic(work)
            except sqlite3.IntegrityError as exc:  # the version check ran under the write lock
                raise ConfigurationError(f"an event id appended to {stream!r} exists") from exc

    async def append_in(
        self,
        tx: StoreTransaction,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int | None,
        *,
        outbox_topic: str | None = None,
    ) -> list[RecordedEvent]:
        """``append`` inside an open ``transaction()`` (with the caller's own state writes)."""
        return await _sqlite_tx(tx).run(
            lambda c: _append(c, self._sql, stream, events, expected_version, outbox_topic)
        )

    async def read_stream(
        self, stream: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[RecordedEvent]:
        params = (stream, from_version, -1 if limit is None else limit)
        query = self._sql.read_stream
        return await self._read(lambda c: [_row(r) for r in c.execute(query, params)])

    async def read_all(self, after: int = 0, *, limit: int = 1000) -> list[RecordedEvent]:
        query = self._sql.read_all
        return await self._read(lambda c: [_row(r) for r in c.execute(query, (after, limit))])

    async def head(self) -> int:
        query = self._sql.head
        return await self._read(lambda c: int(c.execute(query).fetchone()[0]))

    # --- snapshots ----------------------------------------------------------------------

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        params = (snapshot.stream, snapshot.version, json.dumps(dict(snapshot.state)))
        query = self._sql.save_snapshot
        await self._read(lambda c: c.execute(query, params))

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        query = self._sql.load_snapshot
        row = await self._read(lambda c: c.execute(query, (stream,)).fetchone())
        return None if row is None else Snapshot(stream, int(row[0]), json.loads(row[1]))

    # --- projections and outbox -----------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTransaction]:
        """A ``BEGIN IMMEDIATE`` transaction on the store's file; commits on normal exit."""
        async with self._db.transaction() as tx:
            yield tx

    async def load_checkpoint(self, name: str) -> int:
        query = self._sql.load_checkpoint
        row = await self._read(lambda c: c.execute(query, (name,)).fetchone())
        return 0 if row is None else int(row[0])

    async def save_checkpoint(self, tx: StoreTransaction, name: str, position: int) -> None:
        await _sqlite_tx(tx).execute(self._sql.save_checkpoint, (name, position))

    async def enqueue(self, tx: StoreTransaction, messages: Sequence[Message]) -> None:
        await _sqlite_tx(tx).executemany(self._sql.enqueue, _outbox_params(messages))

    async def pending(self, limit: int) -> list[OutboxRow]:
        query = self._sql.pending
        rows = await self._read(lambda c: c.execute(query, (limit,)).fetchall())
        return [
            OutboxRow(
                r[0],
                Message(topic=r[2], body=bytes(r[5]), key=r[3], headers=decode_headers(r[4]),
                        id=r[1], timestamp=r[6]),
            )
            for r in rows
        ]

    async def mark_sent(self, ids: Sequence[int]) -> None:
        now, query = time.time(), self._sql.mark_sent
        with self._db.errors():
            await self._db.atomic(lambda c: c.executemany(query, [(now, i) for i in ids]))

    async def close(self) -> None:
        await self._db.close()

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._db.errors():
            return await self._db.call(fn)


def _append(
    conn: sqlite3.Connection,
    sql: _Sql,
    stream: str,
    events: Sequence[NewEvent],
    expected: int | None,
    outbox_topic: str | None,
) -> list[RecordedEvent]:
    actual = int(conn.execute(sql.version, (stream,)).fetchone()[0])
    if expected is not None and expected != actual:
        raise ConcurrencyError(stream, expected, actual)
    head = int(conn.execute(sql.head).fetchone()[0])
    now = time.time()
    recorded: list[RecordedEvent] = []
    rows: list[tuple[Any, ...]] = []
    for i, e in enumerate(events, start=1):
        meta = dict(e.metadata)
        recorded.append(RecordedEvent(
            head + i, stream, actual + i, e.type, e.schema_version, e.data, meta, e.event_id, now
        ))
        rows.append((head + i, stream, actual + i, e.type, e.schema_version,
                     json.dumps(e.data, separators=(",", ":")),
                     json.dumps(meta, separators=(",", ":")), e.event_id, now))
    conn.executemany(sql.insert, rows)
    if outbox_topic is not None:
        messages = [event_message(outbox_topic, stream, r.version, e)
                    for r, e in zip(recorded, events, strict=True)]
        conn.executemany(sql.enqueue, _outbox_params(messages))
    return recorded


def _sqlite_tx(tx: StoreTransaction) -> SqliteTransaction:
    if not isinstance(tx, SqliteTransaction):
        raise ConfigurationError("a transaction of another store was passed to SqliteEventStore")
    return tx
