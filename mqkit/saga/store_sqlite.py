"""SQLite saga log: the embedded default. No server, no extra dependency.

Tables ``<table>`` (one row per saga: id, name, state, data, error, times) and
``<table>_log`` (one row per transition, keyed by saga id and seq). ``append`` inserts the
entry and updates the saga's state in one ``BEGIN IMMEDIATE`` transaction, committed before
it returns, so a process killed right after has the transition on disk.

How it runs: one ``sqlite3`` connection used only on one worker thread
(``mqkit.stores._sqlite``, shared with the other SQLite stores), so no call blocks the event
loop; calls run one at a time.
WAL journal, ``synchronous=NORMAL`` (a committed transaction survives a process crash; a
power loss may drop the last few), and a busy timeout so several processes on one host wait
for each other's writes. Times are wall-clock (``time.time``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from mqkit.saga.model import (
    LogEntry,
    Phase,
    SagaRecord,
    SagaState,
    SagaSummary,
    UnknownSaga,
    dumps,
    loads,
)
from mqkit.stores._names import check_table_name
from mqkit.stores._sqlite import SqliteDb

T = TypeVar("T")


@dataclass(frozen=True)
class _Sql:
    create: tuple[str, ...]
    insert_saga: str
    insert_entry: str
    next_seq: str
    set_state: str
    get_saga: str
    get_entries: str
    list_all: str

    @classmethod
    def for_table(cls, table: str) -> _Sql:
        t, log = f'"{table}"', f'"{table}_log"'
        cols = "id, name, state, created_at, updated_at, error"
        return cls(
            create=(
                f"CREATE TABLE IF NOT EXISTS {t} (id TEXT PRIMARY KEY, name TEXT NOT NULL, "
                "state TEXT NOT NULL, data TEXT NOT NULL, error TEXT, "
                "created_at REAL NOT NULL, updated_at REAL NOT NULL)",
                f'CREATE INDEX IF NOT EXISTS "{table}_state" ON {t} (state, updated_at)',
                f"CREATE TABLE IF NOT EXISTS {log} (saga_id TEXT NOT NULL, seq INTEGER NOT NULL, "
                "phase TEXT NOT NULL, status TEXT NOT NULL, step INTEGER, step_name TEXT, "
                "attempt INTEGER NOT NULL, detail TEXT NOT NULL, at REAL NOT NULL, "
                "PRIMARY KEY (saga_id, seq)) WITHOUT ROWID",
            ),
            insert_saga=(
                f"INSERT OR IGNORE INTO {t} (id, name, state, data, error, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            insert_entry=(
                f"INSERT INTO {log} (saga_id, seq, phase, status, step, step_name, attempt, "
                "detail, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            next_seq=f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {log} WHERE saga_id = ?",
            set_state=f"UPDATE {t} SET state = ?, error = ?, updated_at = ? WHERE id = ?",
            get_saga=f"SELECT {cols}, data FROM {t} WHERE id = ?",
            get_entries=(
                "SELECT seq, phase, status, step, step_name, attempt, detail, at "
                f"FROM {log} WHERE saga_id = ? ORDER BY seq"
            ),
            list_all=f"SELECT {cols} FROM {t}",
        )


def entry_row(saga_id: str, seq: int, e: LogEntry) -> tuple[Any, ...]:
    return (saga_id, seq, e.phase.value, e.status, e.step, e.step_name, e.attempt,
            e.detail_json(), e.at)


def entry_of(row: tuple[Any, ...]) -> LogEntry:
    seq, phase, status, step, step_name, attempt, detail, at = row
    return LogEntry(Phase(phase), status, step, step_name, attempt, loads(detail), at, seq)


def summary_of(row: tuple[Any, ...]) -> SagaSummary:
    saga_id, name, state, created, updated, error = row[:6]
    return SagaSummary(saga_id, name, SagaState(state), created, updated, error)


class SqliteSagaStore:
    """A ``SagaStore`` in SQLite. Create with ``await SqliteSagaStore.open(path)``.

    Raises ``ConnectionFailed`` when the file cannot be opened or stays locked past
    ``busy_timeout``; any call after ``close`` raises ``RuntimeError``.
    """

    def __init__(self, db: SqliteDb, table: str) -> None:
        self._db = db
        self._sql = _Sql.for_table(table)
        self.table = table

    @classmethod
    async def open(
        cls, path: str = ":memory:", *, table: str = "mqkit_saga", busy_timeout: float = 10.0
    ) -> SqliteSagaStore:
        """Open (creating if missing) ``path`` and the tables ``table`` and ``table_log``."""
        sql = _Sql.for_table(check_table_name(table))
        db = await SqliteDb.open(path, sql.create, busy_timeout, label=f"SQLite saga log {table!r}",
                                 thread_name="mqkit-saga-sqlite")
        return cls(db, table)

    async def create(self, record: SagaRecord) -> bool:
        sql = self._sql
        row = (record.id, record.name, record.state.value, dumps(record.data), record.error,
               record.created_at, record.updated_at)

        def work(conn: sqlite3.Connection) -> bool:
            if conn.execute(sql.insert_saga, row).rowcount == 0:
                return False
            conn.executemany(sql.insert_entry, [
                entry_row(record.id, i, e) for i, e in enumerate(record.entries, 1)
            ])
            return True

        return await self._atomic(work)

    async def append(
        self, saga_id: str, entry: LogEntry, state: SagaState, error: str | None = None
    ) -> LogEntry:
        sql = self._sql
        at = entry.at or time.time()

        def work(conn: sqlite3.Connection) -> LogEntry:
            changed = conn.execute(sql.set_state, (state.value, error, at, saga_id)).rowcount
            if changed == 0:
                raise UnknownSaga(f"no saga {saga_id!r} in the log")
            (seq,) = conn.execute(sql.next_seq, (saga_id,)).fetchone()
            stored = LogEntry(entry.phase, entry.status, entry.step, entry.step_name,
                              entry.attempt, entry.detail, at, int(seq))
            conn.execute(sql.insert_entry, entry_row(saga_id, stored.seq, stored))
            return stored

        return await self._atomic(work)

    async def get(self, saga_id: str) -> SagaRecord | None:
        sql = self._sql

        def work(conn: sqlite3.Connection) -> SagaRecord | None:
            row = conn.execute(sql.get_saga, (saga_id,)).fetchone()
            if row is None:
                return None
            s = summary_of(row)
            entries = [entry_of(r) for r in conn.execute(sql.get_entries, (saga_id,))]
            return SagaRecord(s.id, s.name, s.state, loads(row[6]), s.created_at, s.updated_at,
                              s.error, entries)

        return await self._call(work)

    async def list(
        self, *, states: Iterable[SagaState] | None = None, limit: int | None = 100
    ) -> list[SagaSummary]:
        query, params = self._sql.list_all, list[Any]()
        if states is not None:
            wanted = [s.value for s in states]
            query += f" WHERE state IN ({', '.join('?' * len(wanted))})" if wanted else " WHERE 0"
            params.extend(wanted)
        query += " ORDER BY updated_at DESC, id"
        if limit is not None:
            query += " LIMIT ?"
            params.append(int(limit))
        return await self._call(lambda c: [summary_of(r) for r in c.execute(query, params)])

    async def close(self) -> None:
        """Close the database. Safe to call twice."""
        await self._db.close()

    async def _atomic(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._db.errors():
            return await self._db.atomic(work)

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._db.errors():
            return await self._db.call(work)
