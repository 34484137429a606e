"""One SQLite connection on one worker thread, usable from the event loop (internal).

Shared by the SQLite idempotency store, saga log and event store. The connection is created
and used only on its own thread, so no call blocks the event loop. It is in autocommit mode
and every transaction is an explicit ``BEGIN IMMEDIATE``; the journal is WAL and a busy
timeout makes writers from other processes wait for each other instead of failing at once.

Calls are shielded: a cancelled caller never cancels work already queued on the thread, so a
commit or rollback always runs and statements keep their order. ``call``, ``atomic`` and
``transaction()`` hold one asyncio lock, so they run one at a time; ``transaction()`` holds
it for its whole block, so never call the same store from inside its own transaction (it
deadlocks).

Errors: ``open`` raises ``ConnectionFailed`` when the file cannot be opened; ``errors()``
turns ``sqlite3`` errors from a store's own statements (and ``transaction()``'s begin,
commit and rollback) into ``ConnectionFailed``, the original kept as ``__cause__``.
Statements run through a ``SqliteTransaction`` raise ``sqlite3`` errors unchanged: they are
the caller's, not the store's. After ``close`` (safe twice) every call raises
``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

from mqkit.errors import ConnectionFailed
from mqkit.stores.base import Params

T = TypeVar("T")


# --- run on the worker thread only -------------------------------------------------------


def connect(path: str, schema: Iterable[str], busy_timeout: float) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode (explicit BEGIN IMMEDIATE), WAL, and apply ``schema``."""
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")  # ":memory:" stays "memory": fine
        conn.execute("PRAGMA synchronous = NORMAL")  # durable enough under WAL
        for statement in schema:
            conn.execute(statement)
    except BaseException:
        conn.close()
        raise
    return conn


def begin(conn: sqlite3.Connection) -> None:
    # Under the lock no transaction is open; one left here was abandoned by a cancelled
    # caller, so drop it before starting.
    if conn.in_transaction:
        conn.rollback()
    conn.execute("BEGIN IMMEDIATE")


def end(conn: sqlite3.Connection, commit: bool) -> None:
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


def in_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` in a BEGIN IMMEDIATE transaction; commit, or roll back if it raises."""
    begin(conn)
    try:
        result = work(conn)
    except BaseException:
        end(conn, commit=False)
        raise
    end(conn, commit=True)
    return result


# --- used from the event loop --------------------------------------------------------------


class SqliteTransaction:
    """An open transaction: ``execute``/``executemany`` run inside it on the worker thread.

    They raise ``RuntimeError`` once the transaction block has ended; SQL errors are
    ``sqlite3`` exceptions, raised unchanged.
    """

    def __init__(self, db: SqliteDb) -> None:
        self._db = db
        self._open = True

    @property
    def connection(self) -> sqlite3.Connection:
        """The raw ``sqlite3`` connection: use it only from ``run`` (its own thread)."""
        return self._db.conn()

    async def execute(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Run one statement; its result rows (empty for statements that return none)."""
        conn = self._live()
        return await self._db.run(lambda: [tuple(r) for r in conn.execute(sql, params)])

    async def executemany(self, sql: str, params: Iterable[Params]) -> int:
        """Run one statement once per parameter set; the number of rows changed."""
        conn, rows = self._live(), list(params)
        return await self._db.run(lambda: conn.executemany(sql, rows).rowcount)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the worker thread inside this transaction."""
        conn = self._live()
        return await self._db.run(lambda: fn(conn))

    def _live(self) -> sqlite3.Connection:
        if not self._open:
            raise RuntimeError("this transaction has ended")
        return self._db.conn()


class SqliteDb:
    """The connection, its thread and its lock. Create with ``await SqliteDb.open()``.

    ``label`` names the store in its error messages (``"SQLite saga log 'mqkit_saga'"``).
    """

    def __init__(self, executor: ThreadPoolExecutor, conn: sqlite3.Connection, label: str):
        self._executor = executor
        self._conn: sqlite3.Connection | None = conn
        self.lock = asyncio.Lock()
        self.label = label

    @classmethod
    async def open(
        cls,
        path: str,
        schema: Iterable[str],
        busy_timeout: float,
        *,
        label: str = "SQLite database",
        thread_name: str = "mqkit-sqlite",
    ) -> SqliteDb:
        """Open (creating if missing) ``path`` and apply ``schema``; ``ConnectionFailed``
        when the file cannot be opened."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        loop = asyncio.get_running_loop()
        statements = list(schema)
        try:
            conn = await loop.run_in_executor(executor, connect, path, statements, busy_timeout)
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise ConnectionFailed(f"cannot open SQLite database {path!r}: {exc}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, conn, label)

    def conn(self) -> sqlite3.Connection:
        """The open connection (use it only on the worker thread); RuntimeError once closed."""
        if self._conn is None:
            raise RuntimeError(f"the {self.label} is closed")
        return self._conn

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the worker thread, shielded from the caller's cancellation."""
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(self._executor, fn))

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the worker thread, under the lock (no transaction opened)."""
        async with self.lock:
            conn = self.conn()
            return await self.run(lambda: fn(conn))

    async def atomic(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` in its own BEGIN IMMEDIATE transaction, under the lock."""
        async with self.lock:
            conn = self.conn()
            return await self.run(lambda: in_transaction(conn, fn))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        """A BEGIN IMMEDIATE transaction held for the block, under the lock: committed on
        normal exit, rolled back on an exception (or cancellation), which propagates."""
        async with self.lock:
            conn = self.conn()
            with self.errors():
                await self.run(lambda: begin(conn))
            tx = SqliteTransaction(self)
            try:
                yield tx
            except BaseException:
                tx._open = False
                with self.errors():
                    await self.run(lambda: end(conn, commit=False))
                raise
            tx._open = False
            with self.errors():
                await self.run(lambda: end(conn, commit=True))

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn ``sqlite3`` errors raised in the block into ``ConnectionFailed``."""
        try:
            yield
        except sqlite3.Error as exc:
            raise ConnectionFailed(f"{self.label}: {exc}") from exc

    async def close(self) -> None:
        """Close after any open transaction ends. Safe to call twice."""
        async with self.lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    await self.run(conn.close)
                finally:
                    self._executor.shutdown(wait=False)
