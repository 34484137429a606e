"""PostgreSQL event store: events, snapshots, checkpoints and outbox in one database.

URL: ``postgresql://user:password@host:port/dbname`` (or ``postgres://``). Needs the
``postgres`` extra (psycopg 3). Tables ``<prefix>_events``, ``_head``, ``_snapshots``,
``_checkpoints`` and ``_outbox`` are created if missing (``prefix`` defaults to ``mqkit``).

No gaps a reader can see: an append takes the row lock on the single ``<prefix>_head`` row
(``UPDATE ... SET position = position + n RETURNING``) and holds it until its transaction
ends. Positions are therefore handed out one transaction at a time, the next writer gets its
range only after the previous one committed (or rolled back, which returns its range), and
a reader that sees position ``p`` has already been able to see every position below it. The
price is that appends to *different* streams serialise at commit; the row lock is held only
for the append's own statements.

Optimistic concurrency: the stream's version is checked after the head lock is taken, and
``(stream, version)`` is unique as a backstop; a mismatch raises ``ConcurrencyError``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from mqkit.errors import ConfigurationError
from mqkit.eventsourcing.errors import ConcurrencyError
from mqkit.eventsourcing.events import NewEvent, RecordedEvent
from mqkit.eventsourcing.outbox import decode_headers, event_message
from mqkit.eventsourcing.store import OutboxRow, Snapshot, StoreTransaction
from mqkit.message import Message
from mqkit.stores._names import check_table_name
from mqkit.stores._pg import Connection, PgTransaction, Pool

_COLUMNS = "position, stream, version, type, schema_version, data, metadata, event_id, recorded_at"
# Read as text and parsed here: jsonb through psycopg's loader cost a third of a replay, and
# empty metadata (the usual case) comes back NULL and is not parsed at all.
_READ_COLUMNS = (
    "position, stream, version, type, schema_version, data::text, "
    "CASE WHEN metadata = '{}'::jsonb THEN NULL ELSE metadata::text END, event_id, recorded_at"
)
_ScanOnce = Callable[[str, int], tuple[Any, int]]
_scan_json: _ScanOnce = getattr(json.JSONDecoder(), "scan_once")  # noqa: B009 (untyped)


def _json(text: str) -> Any:
    """Parse JSON that PostgreSQL produced from jsonb (so known valid), skipping ``loads``'s
    encoding detection and trailing-whitespace check."""
    return _scan_json(text, 0)[0]


@dataclass(frozen=True)
class _Sql:
    schema: tuple[str, ...]
    lock_head: str
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
        names = [f"{prefix}_{k}" for k in ("events", "head", "snapshots", "checkpoints", "outbox")]
        ev, hd, sn, cp, ob = (f'"{check_table_name(n)}"' for n in names)
        return cls(
            schema=(
                f"CREATE TABLE IF NOT EXISTS {ev} (position bigint PRIMARY KEY, "
                "stream text NOT NULL, version integer NOT NULL, type text NOT NULL, "
                "schema_version integer NOT NULL, data jsonb NOT NULL, metadata jsonb NOT NULL, "
                "event_id text NOT NULL UNIQUE, recorded_at double precision NOT NULL, "
                "UNIQUE (stream, version))",
                f"CREATE TABLE IF NOT EXISTS {hd} (id integer PRIMARY KEY CHECK (id = 1), "
                "position bigint NOT NULL)",
                f"INSERT INTO {hd} (id, position) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
                f"CREATE TABLE IF NOT EXISTS {sn} (stream text PRIMARY KEY, "
                "version integer NOT NULL, state jsonb NOT NULL)",
                f"CREATE TABLE IF NOT EXISTS {cp} (name text PRIMARY KEY, "
                "position bigint NOT NULL)",
                f"CREATE TABLE IF NOT EXISTS {ob} (id bigserial PRIMARY KEY, "
                "message_id text NOT NULL, topic text NOT NULL, key text, headers jsonb NOT NULL, "
                "body bytea NOT NULL, timestamp double precision NOT NULL, sent_at timestamptz)",
                f'CREATE INDEX IF NOT EXISTS "{names[4]}_unsent" ON {ob} (id) '
                "WHERE sent_at IS NULL",
            ),
            lock_head=f"UPDATE {hd} SET position = position + %s WHERE id = 1 RETURNING position",
            version=f"SELECT COALESCE(MAX(version), 0) FROM {ev} WHERE stream = %s",
            head=f"SELECT position FROM {hd} WHERE id = 1",
            insert=(
                f"INSERT INTO {ev} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ),
            read_stream=(
                f"SELECT {_READ_COLUMNS} FROM {ev} WHERE stream = %s AND version >= %s "
                "ORDER BY version LIMIT %s"
            ),
            read_all=(
                f"SELECT {_READ_COLUMNS} FROM {ev} WHERE position > %s ORDER BY position LIMIT %s"
            ),
            save_snapshot=(
                f"INSERT INTO {sn} AS s (stream, version, state) VALUES (%s, %s, %s) "
                "ON CONFLICT (stream) DO UPDATE SET version = excluded.version, "
                "state = excluded.state WHERE excluded.version > s.version"
            ),
            load_snapshot=f"SELECT version, state FROM {sn} WHERE stream = %s",
            load_checkpoint=f"SELECT position FROM {cp} WHERE name = %s",
            save_checkpoint=(
                f"INSERT INTO {cp} (name, position) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
            ),
            enqueue=(
                f"INSERT INTO {ob} (message_id, topic, key, headers, body, timestamp) "
                "VALUES (%s, %s, %s, %s, %s, %s)"
            ),
            pending=(
                f"SELECT id, message_id, topic, key, headers, body, timestamp FROM {ob} "
                "WHERE sent_at IS NULL ORDER BY id LIMIT %s"
            ),
            mark_sent=f"UPDATE {ob} SET sent_at = now() WHERE id = ANY(%s)",
        )


def _row(r: tuple[Any, ...]) -> RecordedEvent:
    meta = {} if r[6] is None else _json(r[6])
    return RecordedEvent(r[0], r[1], r[2], r[3], r[4], _json(r[5]), meta, r[7], r[8])


class PostgresEventStore:
    """See the module docstring. Create with ``await PostgresEventStore.open(url)``.

    Safe to share between tasks (each call borrows a connection) and processes. Database
    errors raise ``ConnectionFailed`` (unreachable) or ``MqkitError``; ``close`` twice is fine.
    """

    def __init__(self, pool: Pool, sql: _Sql) -> None:
        self._pool = pool
        self._sql = sql

    @classmethod
    async def open(
        cls, url: str, *, prefix: str = "mqkit", connect_timeout: int = 10, max_idle: int = 4
    ) -> PostgresEventStore:
        sql = _Sql.for_prefix(prefix)
        pool = Pool(url, name="Postgres event store", connect_timeout=connect_timeout,
                    max_idle=max_idle)
        store = cls(pool, sql)
        async with pool.transaction() as conn:
            with pool.errors("creating the event store tables"):
                # Serialise concurrent creators: CREATE IF NOT EXISTS is not race-free.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (prefix,))
                for statement in sql.schema:
                    await conn.execute(statement)
        return store

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
        async with self._pool.transaction() as conn:
            return await self._append(conn, stream, events, expected_version, outbox_topic)

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
        conn = _pg_tx(tx).connection
        return await self._append(conn, stream, events, expected_version, outbox_topic)

    async def _append(
        self,
        conn: Connection,
        stream: str,
        events: Sequence[NewEvent],
        expected: int | None,
        outbox_topic: str | None,
    ) -> list[RecordedEvent]:
        sql, pool = self._sql, self._pool
        if not events:
            return []
        with pool.errors("appending events"):
            cur = await conn.execute(sql.lock_head, (len(events),))
            last = int((await cur.fetchone() or (0,))[0])
            cur = await conn.execute(sql.version, (stream,))
            actual = int((await cur.fetchone() or (0,))[0])
            if expected is not None and expected != actual:
                raise ConcurrencyError(stream, expected, actual)
            first, now = last - len(events) + 1, time.time()
            recorded = [
                RecordedEvent(first + i, stream, actual + i + 1, e.type, e.schema_version,
                              e.data, dict(e.metadata), e.event_id, now)
                for i, e in enumerate(events)
            ]
            try:
                async with conn.cursor() as c:
                    await c.executemany(sql.insert, [
                        (r.position, stream, r.version, r.type, r.schema_version,
                         Jsonb(dict(r.data)), Jsonb(dict(r.metadata)), r.event_id, now)
                        for r in recorded
                    ])
            except psycopg.errors.UniqueViolation as exc:
                if "event_id" in str(exc):
                    raise ConfigurationError(f"an event id appended to {stream!r} exists") from exc
                raise ConcurrencyError(stream, expected, actual + 1) from exc
            if outbox_topic is not None:
                messages = [event_message(outbox_topic, stream, r.version, e)
                            for r, e in zip(recorded, events, strict=True)]
                await self._enqueue(conn, messages)
        return recorded

    async def read_stream(
        self, stream: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[RecordedEvent]:
        return await self._select(self._sql.read_stream, (stream, from_version, limit))

    async def read_all(self, after: int = 0, *, limit: int = 1000) -> list[RecordedEvent]:
        return await self._select(self._sql.read_all, (after, limit))

    async def head(self) -> int:
        async with self._pool.transaction() as conn:
            with self._pool.errors():
                cur = await conn.execute(self._sql.head)
                return int((await cur.fetchone() or (0,))[0])

    async def _select(self, query: str, params: tuple[Any, ...]) -> list[RecordedEvent]:
        async with self._pool.transaction() as conn:
            with self._pool.errors("reading events"):
                async with conn.cursor(binary=True) as cur:
                    await cur.execute(query, params)
                    return [_row(r) for r in await cur.fetchall()]

    # --- snapshots ----------------------------------------------------------------------

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        params = (snapshot.stream, snapshot.version, Jsonb(dict(snapshot.state)))
        async with self._pool.transaction() as conn:
            with self._pool.errors("saving a snapshot"):
                await conn.execute(self._sql.save_snapshot, params)

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        async with self._pool.transaction() as conn:
            with self._pool.errors("loading a snapshot"):
                cur = await conn.execute(self._sql.load_snapshot, (stream,))
                row = await cur.fetchone()
        return None if row is None else Snapshot(stream, int(row[0]), row[1])

    # --- projections and outbox -----------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTransaction]:
        """A transaction on a connection of its own; commits on normal exit."""
        async with self._pool.transaction() as conn:
            yield PgTransaction(conn)

    async def load_checkpoint(self, name: str) -> int:
        async with self._pool.transaction() as conn:
            with self._pool.errors():
                cur = await conn.execute(self._sql.load_checkpoint, (name,))
                row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    async def save_checkpoint(self, tx: StoreTransaction, name: str, position: int) -> None:
        conn = _pg_tx(tx).connection
        with self._pool.errors("saving a checkpoint"):
            await conn.execute(self._sql.save_checkpoint, (name, position))

    async def enqueue(self, tx: StoreTransaction, messages: Sequence[Message]) -> None:
        with self._pool.errors("writing the outbox"):
            await self._enqueue(_pg_tx(tx).connection, messages)

    async def _enqueue(self, conn: Connection, messages: Sequence[Message]) -> None:
        async with conn.cursor() as cur:
            await cur.executemany(self._sql.enqueue, [
                (m.id, m.topic, m.key, Jsonb(dict(m.headers)), m.body, m.timestamp)
                for m in messages
            ])

    async def pending(self, limit: int) -> list[OutboxRow]:
        async with self._pool.transaction() as conn:
            with self._pool.errors("reading the outbox"):
                cur = await conn.execute(self._sql.pending, (limit,))
                rows = await cur.fetchall()
        return [
            OutboxRow(
                int(r[0]),
                Message(topic=r[2], body=bytes(r[5]), key=r[3], headers=decode_headers(r[4]),
                        id=r[1], timestamp=r[6]),
            )
            for r in rows
        ]

    async def mark_sent(self, ids: Sequence[int]) -> None:
        async with self._pool.transaction() as conn:
            with self._pool.errors("marking outbox rows"):
                await conn.execute(self._sql.mark_sent, (list(ids),))

    async def close(self) -> None:
        await self._pool.close()


def _pg_tx(tx: StoreTransaction) -> PgTransaction:
    if not isinstance(tx, PgTransaction):
        raise ConfigurationError("a transaction of another store was passed to PostgresEventStore")
    return tx


__all__ = ["PostgresEventStore"]
