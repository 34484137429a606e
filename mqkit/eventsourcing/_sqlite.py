"""One SQLite connection on one worker thread, usable from the event loop (internal).

The same pattern as ``mqkit.stores.sqlite``: the connection is created and used only on its
own thread; calls are shielded so a cancelled caller never cancels a commit or rollback
already queued; ``transaction()`` holds an asyncio lock for its whole block, so the store's
other calls wait for it (never call the same store from inside its own transaction).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from mqkit.errors import ConnectionFailed
from mqkit.eventsourcing.store import Params

T = TypeVar("T")


def connect(path: str, schema: Iterable[str], busy_timeout: float) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode (explicit BEGIN IMMEDIATE), WAL, and apply ``schema``."""
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        for statement in schema:
            conn.execute(statement)
    except BaseException:
        conn.close()
        raise
    return conn


def begin(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:  # abandoned by a cancelled caller
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


class SqliteTransaction:
    """An open transaction: ``execute``/``executemany`` run inside it on the worker thread."""

    def __init__(self, db: SqliteDb) -> None:
        self._db = db
        self._open = True

    @property
    def connection(self) -> sqlite3.Connection:
        """The raw ``sqlite3`` connection: use it only from ``db.run`` (its own thread)."""
        return self._db.conn()

    async def execute(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        conn = self._live()
        return await self._db.run(lambda: [tuple(r) for r in conn.execute(sql, params)])

    async def executemany(self, sql: str, params: Iterable[Params]) -> None:
        conn, rows = self._live(), list(params)
        await self._db.run(lambda: conn.executemany(sql, rows))

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the worker thread inside this transaction."""
        conn = self._live()
        return await self._db.run(lambda: fn(conn))

    def _live(self) -> sqlite3.Connection:
        if not self._open:
            raise RuntimeError("this transaction has ended")
        return self._db.conn()


class SqliteDb:
    """The connection, its thread and its lock. Create with ``await SqliteDb.open()``."""

    def __init__(self, executor: ThreadPoolExecutor, conn: sqlite3.Connection, where: str):
        self._executor = executor
        self._conn: sqlite3.Connection | None = conn
        self.lock = asyncio.Lock()
        self.where = where

    @classmethod
    async def open(cls, path: str, schema: Iterable[str], busy_timeout: float) -> SqliteDb:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqkit-es-sqlite")
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
        return cls(executor, conn, path)

    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"the SQLite event store at {self.where!r} is closed")
        return self._conn

    async def run(self, fn: Callable[[], T]) -> T:
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
        async with self.lock:
            conn = self.conn()
            await self.run(lambda: begin(conn))
            tx = SqliteTransaction(self)
            try:
                yield tx
            except BaseException:
                tx._open = False
                await self.run(lambda: end(conn, commit=False))
                raise
            tx._open = False
            await self.run(lambda: end(conn, commit=True))

    async def close(self) -> None:
        async with self.lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    await self.run(conn.close)
                finally:
                    self._executor.shutdown(wait=False)
