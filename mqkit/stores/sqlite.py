"""SQLite idempotency store: the embedded default; transactional; no server, no extra dependency.

Features: ``claim``/``complete``/``release`` with leases and a ttl, and ``transaction(key,
ttl)``, which records the key in the same SQLite transaction as the handler's effects, so
effects kept in the same database file happen exactly once.

URL (see ``mqkit.stores.factory``): ``sqlite:///relative.db``, ``sqlite:////abs/path.db``, or
``sqlite://`` for an in-memory database private to one store.

How it runs: one ``sqlite3`` connection, created and used only on one dedicated worker thread
(``mqkit.stores._sqlite``), so no call blocks the event loop. The journal is WAL and a busy
timeout makes writers from other processes wait for each other instead of failing at once.

Limits: calls on one store run one at a time. While a ``transaction()`` block is open the
store's other calls wait for it to end, so never call the same store from inside its own
transaction block: that deadlocks. Expiry uses wall-clock time (``time.time``) so processes
on one host agree. SQLite has one writer at a time per file.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mqkit.stores._names import check_table_name
from mqkit.stores._sqlite import SqliteDb
from mqkit.stores._sqlite import SqliteTransaction as SqliteConnection
from mqkit.stores.base import Claim

__all__ = ["SqliteConnection", "SqliteIdempotencyStore", "SqliteTransaction"]

_CLEANUP_EVERY = 1024  # claims between sweeps of expired keys


@dataclass(frozen=True)
class _Sql:
    """The store's statements for one table (the name is validated, then quoted)."""

    create: str
    select: str
    upsert: str
    release: str
    sweep: str

    @classmethod
    def for_table(cls, table: str) -> _Sql:
        t = f'"{table}"'
        return cls(
            create=(
                f"CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, state TEXT NOT NULL, "
                "expires_at REAL NOT NULL) WITHOUT ROWID"
            ),
            select=f"SELECT state, expires_at FROM {t} WHERE key = ?",
            upsert=f"INSERT OR REPLACE INTO {t} (key, state, expires_at) VALUES (?, ?, ?)",
            release=f"DELETE FROM {t} WHERE key = ? AND state = 'busy'",
            sweep=f"DELETE FROM {t} WHERE expires_at <= ?",
        )


# --- run on the worker thread only -------------------------------------------------------


def _live_state(conn: sqlite3.Connection, sql: _Sql, key: str, now: float) -> str | None:
    row = conn.execute(sql.select, (key,)).fetchone()
    return str(row[0]) if row is not None and row[1] > now else None


def _claim(
    conn: sqlite3.Connection, sql: _Sql, key: str, now: float, lease: float, sweep: bool
) -> Claim:
    state = _live_state(conn, sql, key, now)
    if state is not None:
        return Claim.DONE if state == "done" else Claim.BUSY
    if sweep:
        conn.execute(sql.sweep, (now,))
    conn.execute(sql.upsert, (key, "busy", now + lease))
    return Claim.NEW


def _hold_done(conn: sqlite3.Connection, sql: _Sql, key: str, now: float, ttl: float) -> bool:
    """In an open transaction, hold ``key`` as done; False (nothing written) if already done."""
    if _live_state(conn, sql, key, now) == "done":
        return False
    conn.execute(sql.upsert, (key, "done", now + ttl))  # takes over a busy/expired key
    return True


# --- the store ----------------------------------------------------------------------------


class SqliteTransaction:
    """An open transaction: write the handler's effects through ``connection``.

    ``connection`` runs ``execute``/``executemany`` on the store's worker thread inside the
    transaction; it raises ``RuntimeError`` once the block has ended, and SQL errors are
    ``sqlite3`` exceptions, raised unchanged (they are the handler's, not the store's).
    """

    def __init__(self, key: str, connection: SqliteConnection) -> None:
        self.key = key
        self.connection = connection


class SqliteIdempotencyStore:
    """Idempotency keys in a SQLite table. Create with ``await SqliteIdempotencyStore.open()``.

    Safe to share between tasks (calls queue up in order) and between processes on one host
    (SQLite's lock). ``close`` is idempotent and waits for an open transaction; any other
    call after ``close`` raises ``RuntimeError``. Database errors from the store's own
    statements raise ``ConnectionFailed`` (for example a file locked past ``busy_timeout``).
    """

    def __init__(self, db: SqliteDb, table: str, clock: Callable[[], float]) -> None:
        self._db = db
        self._sql = _Sql.for_table(table)
        self._clock = clock
        self._claims = 0
        self.table = table

    @classmethod
    async def open(
        cls,
        path: str = ":memory:",
        *,
        table: str = "mqkit_idempotency",
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> SqliteIdempotencyStore:
        """Open (creating if missing) the database at ``path`` and the table ``table``.

        Raises ``ConfigurationError`` for a bad table name and ``ConnectionFailed`` when the
        file cannot be opened. ``clock`` (seconds) is injectable for tests.
        """
        sql = _Sql.for_table(check_table_name(table))
        db = await SqliteDb.open(
            path, [sql.create], busy_timeout, label=f"SQLite idempotency store {table!r}"
        )
        return cls(db, table, clock)

    async def claim(self, key: str, lease: float) -> Claim:
        """NEW (now held for ``lease`` seconds), DONE, or BUSY (another live claim)."""
        sql, clock = self._sql, self._clock
        self._claims += 1
        sweep = self._claims % _CLEANUP_EVERY == 0
        with self._db.errors():  # the clock is read on the worker thread, under the lock
            return await self._db.atomic(lambda c: _claim(c, sql, key, clock(), lease, sweep))

    async def complete(self, key: str, ttl: float) -> None:
        """Record ``key`` as done for ``ttl`` seconds, whoever held it."""
        sql, clock = self._sql, self._clock
        with self._db.errors():
            await self._db.call(lambda c: c.execute(sql.upsert, (key, "done", clock() + ttl)))

    async def release(self, key: str) -> None:
        """Drop a claim so a retry can take it; a done key is kept. Safe to call twice."""
        sql = self._sql
        with self._db.errors():
            await self._db.call(lambda c: c.execute(sql.release, (key,)))

    @asynccontextmanager
    async def transaction(self, key: str, ttl: float) -> AsyncIterator[SqliteTransaction | None]:
        """Hold ``key`` as done in an open transaction; yield None if it was already done.

        Normal exit commits the key with every effect written through ``connection``; an
        exception (or cancellation) rolls both back and propagates. Transactions on one
        store run one after another; stores in other processes wait on SQLite's lock.
        """
        sql, held = self._sql, False
        async with self._db.transaction() as tx:
            now = self._clock()
            with self._db.errors():
                held = await tx.run(lambda c: _hold_done(c, sql, key, now, ttl))
            if held:
                yield SqliteTransaction(key, tx)
        if not held:  # the empty transaction is over and the store free again
            yield None

    async def close(self) -> None:
        """Close the database after any open transaction ends. Safe to call twice."""
        await self._db.close()
