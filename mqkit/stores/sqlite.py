"""SQLite idempotency store: the embedded default; transactional; no server, no extra dependency.

Features: ``claim``/``complete``/``release`` with leases and a ttl, and ``transaction(key,
ttl)``, which records the key in the same SQLite transaction as the handler's effects, so
effects kept in the same database file happen exactly once.

URL (see ``mqkit.stores.factory``): ``sqlite:///relative.db``, ``sqlite:////abs/path.db``, or
``sqlite://`` for an in-memory database private to one store.

How it runs: one ``sqlite3`` connection, created and used only on one dedicated worker thread,
so no call blocks the event loop. The journal is WAL and a busy timeout makes writers from
other processes wait for each other instead of failing at once.

Limits: calls on one store run one at a time. While a ``transaction()`` block is open the
store's other calls wait for it to end, so never call the same store from inside its own
transaction block: that deadlocks. Expiry uses wall-clock time (``time.time``) so processes
on one host agree. SQLite has one writer at a time per file.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from mqkit.errors import ConfigurationError, ConnectionFailed
from mqkit.stores.base import Claim

T = TypeVar("T")
Params = Sequence[Any] | Mapping[str, Any]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_CLEANUP_EVERY = 1024  # claims between sweeps of expired keys


def check_table_name(table: str) -> str:
    """``table`` if it is a plain SQL identifier (letters, digits, ``_``; at most 63 chars)."""
    if not _IDENTIFIER.fullmatch(table):
        raise ConfigurationError(
            f"bad idempotency table name {table!r}: use letters, digits and _ "
            "(not starting with a digit, at most 63 characters)"
        )
    return table


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


def _connect(path: str, sql: _Sql, busy_timeout: float) -> sqlite3.Connection:
    # isolation_level=None: autocommit; every transaction is an explicit BEGIN IMMEDIATE.
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")  # ":memory:" stays "memory": fine
        conn.execute("PRAGMA synchronous = NORMAL")  # durable enough under WAL
        conn.execute(sql.create)
    except BaseException:
        conn.close()
        raise
    return conn


def _begin(conn: sqlite3.Connection) -> None:
    # Under the store's lock no transaction is open; one left here was abandoned by a
    # cancelled caller, so drop it before starting.
    if conn.in_transaction:
        conn.rollback()
    conn.execute("BEGIN IMMEDIATE")


def _end(conn: sqlite3.Connection, commit: bool) -> None:
    if not conn.in_transaction:
        return
    if not commit:
        conn.rollback()
        return
    try:
        conn.commit()
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


def _live_state(conn: sqlite3.Connection, sql: _Sql, key: str, now: float) -> str | None:
    row = conn.execute(sql.select, (key,)).fetchone()
    return str(row[0]) if row is not None and row[1] > now else None


def _claim(
    conn: sqlite3.Connection, sql: _Sql, key: str, now: float, lease: float, sweep: bool
) -> Claim:
    _begin(conn)
    try:
        state = _live_state(conn, sql, key, now)
        if state is None:
            if sweep:
                conn.execute(sql.sweep, (now,))
            conn.execute(sql.upsert, (key, "busy", now + lease))
            claim = Claim.NEW
        else:
            claim = Claim.DONE if state == "done" else Claim.BUSY
    except BaseException:
        _end(conn, commit=False)
        raise
    _end(conn, commit=True)
    return claim


def _begin_done(conn: sqlite3.Connection, sql: _Sql, key: str, now: float, ttl: float) -> bool:
    """Open a transaction holding ``key`` as done; False (and nothing open) if already done."""
    _begin(conn)
    try:
        if _live_state(conn, sql, key, now) == "done":
            _end(conn, commit=False)
            return False
        conn.execute(sql.upsert, (key, "done", now + ttl))  # takes over a busy/expired key
    except BaseException:
        _end(conn, commit=False)
        raise
    return True


# --- the store ----------------------------------------------------------------------------


class SqliteConnection:
    """The open transaction's connection, usable from the event loop.

    ``execute`` and ``executemany`` run on the store's worker thread inside the transaction.
    They raise ``RuntimeError`` once the transaction block has ended; SQL errors are
    ``sqlite3`` exceptions, raised unchanged (they are the handler's, not the store's).
    """

    def __init__(self, store: SqliteIdempotencyStore) -> None:
        self._store = store
        self._open = True

    async def execute(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Run one statement; its result rows (empty for statements that return none)."""
        conn = self._conn()
        return await self._store._run(lambda: [tuple(r) for r in conn.execute(sql, params)])

    async def executemany(self, sql: str, params: Iterable[Params]) -> int:
        """Run one statement once per parameter set; the number of rows changed."""
        conn = self._conn()
        rows = list(params)
        return await self._store._run(lambda: conn.executemany(sql, rows).rowcount)

    def _conn(self) -> sqlite3.Connection:
        if not self._open:
            raise RuntimeError("this idempotency transaction has ended")
        return self._store._connection()

    def _finish(self) -> None:
        self._open = False


class SqliteTransaction:
    """An open transaction: write the handler's effects through ``connection``."""

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

    def __init__(
        self,
        executor: ThreadPoolExecutor,
        conn: sqlite3.Connection,
        table: str,
        clock: Callable[[], float],
    ) -> None:
        self._executor = executor
        self._conn: sqlite3.Connection | None = conn
        self._sql = _Sql.for_table(table)
        self._clock = clock
        self._lock = asyncio.Lock()
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
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqkit-sqlite")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _connect, path, sql, busy_timeout)
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise ConnectionFailed(f"cannot open SQLite database {path!r}: {exc}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, conn, table, clock)

    async def claim(self, key: str, lease: float) -> Claim:
        """NEW (now held for ``lease`` seconds), DONE, or BUSY (another live claim)."""
        async with self._lock:
            conn, sql, now = self._connection(), self._sql, self._clock()
            self._claims += 1
            sweep = self._claims % _CLEANUP_EVERY == 0
            return await self._guarded(lambda: _claim(conn, sql, key, now, lease, sweep))

    async def complete(self, key: str, ttl: float) -> None:
        """Record ``key`` as done for ``ttl`` seconds, whoever held it."""
        async with self._lock:
            conn, sql, expires = self._connection(), self._sql, self._clock() + ttl
            await self._guarded(lambda: conn.execute(sql.upsert, (key, "done", expires)))

    async def release(self, key: str) -> None:
        """Drop a claim so a retry can take it; a done key is kept. Safe to call twice."""
        async with self._lock:
            conn, sql = self._connection(), self._sql
            await self._guarded(lambda: conn.execute(sql.release, (key,)))

    @asynccontextmanager
    async def transaction(self, key: str, ttl: float) -> AsyncIterator[SqliteTransaction | None]:
        """Hold ``key`` as done in an open transaction; yield None if it was already done.

        Normal exit commits the key with every effect written through ``connection``; an
        exception (or cancellation) rolls both back and propagates. Transactions on one
        store run one after another; stores in other processes wait on SQLite's lock.
        """
        tx = await self._begin_transaction(key, ttl)
        if tx is None:
            yield None
            return
        conn = self._connection()
        try:
            try:
                yield tx
            except BaseException:
                tx.connection._finish()
                await self._guarded(lambda: _end(conn, commit=False))
                raise
            tx.connection._finish()
            await self._guarded(lambda: _end(conn, commit=True))
        finally:
            self._lock.release()

    async def _begin_transaction(self, key: str, ttl: float) -> SqliteTransaction | None:
        """A transaction holding the store's lock, or None (lock free) if ``key`` is done."""
        await self._lock.acquire()
        try:
            conn, sql, now = self._connection(), self._sql, self._clock()
            began = await self._guarded(lambda: _begin_done(conn, sql, key, now, ttl))
        except BaseException:
            self._lock.release()
            raise
        if not began:
            self._lock.release()
            return None
        return SqliteTransaction(key, SqliteConnection(self))

    async def close(self) -> None:
        """Close the database after any open transaction ends. Safe to call twice."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    await self._run(conn.close)
                finally:
                    self._executor.shutdown(wait=False)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteIdempotencyStore is closed")
        return self._conn

    async def _run(self, fn: Callable[[], T]) -> T:
        # Shielded: a cancelled caller does not cancel work already queued on the thread, so
        # a commit or rollback always runs, and statements keep their order.
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(self._executor, fn))

    async def _guarded(self, fn: Callable[[], T]) -> T:
        try:
            return await self._run(fn)
        except sqlite3.Error as exc:
            raise ConnectionFailed(f"SQLite idempotency store {self.table!r}: {exc}") from exc
