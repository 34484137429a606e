"""PostgreSQL saga log: the production store. Needs the ``postgres`` extra (psycopg 3).

Tables ``<table>`` and ``<table>_log`` (created if missing), as the SQLite store has them;
``data`` and ``detail`` are ``jsonb``. ``append`` locks the saga's row (``FOR UPDATE``),
inserts the entry with the next seq and sets the state, in one transaction committed before
it returns.

URL: ``postgresql://user:password@host:port/dbname`` (or ``postgres://``). Errors raise
``ConnectionFailed`` (unreachable, lost connection, bad credentials) or ``MqkitError``, with
the password redacted and the driver's error as ``__cause__``.

How it runs: one connection used by one call at a time (an ``asyncio.Lock``), reconnected
if it broke. Throughput is bounded by one round trip per statement; run several
orchestrator processes (each with its own store) to go wider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from mqkit.errors import ConfigurationError, ConnectionFailed, MqkitError
from mqkit.saga.model import (
    LogEntry,
    Phase,
    SagaRecord,
    SagaState,
    SagaSummary,
    UnknownSaga,
    dumps,
)
from mqkit.stores.sqlite import check_table_name
from mqkit.url import BrokerURL, redact_text, redact_url

Connection = psycopg.AsyncConnection[Any]


@dataclass(frozen=True)
class _Sql:
    create: tuple[sql.Composed, ...]
    insert_saga: sql.Composed
    insert_entry: sql.Composed
    lock: sql.Composed
    set_state: sql.Composed
    get_saga: sql.Composed
    get_entries: sql.Composed
    list_all: sql.Composed

    @classmethod
    def for_table(cls, table: str) -> _Sql:
        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(
                t=sql.Identifier(table), log=sql.Identifier(f"{table}_log"),
                idx=sql.Identifier(f"{table}_state"),
            )

        cols = "id, name, state, created_at, updated_at, error"
        return cls(
            create=(
                q("CREATE TABLE IF NOT EXISTS {t} (id text PRIMARY KEY, name text NOT NULL, "
                  "state text NOT NULL, data jsonb, error text, "
                  "created_at double precision NOT NULL, updated_at double precision NOT NULL)"),
                q("CREATE INDEX IF NOT EXISTS {idx} ON {t} (state, updated_at)"),
                q("CREATE TABLE IF NOT EXISTS {log} (saga_id text NOT NULL, seq integer NOT NULL, "
                  "phase text NOT NULL, status text NOT NULL, step integer, step_name text, "
                  "attempt integer NOT NULL, detail jsonb, at double precision NOT NULL, "
                  "PRIMARY KEY (saga_id, seq))"),
            ),
            insert_saga=q(
                "INSERT INTO {t} (id, name, state, data, error, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id"
            ),
            insert_entry=q(
                "INSERT INTO {log} (saga_id, seq, phase, status, step, step_name, attempt, "
                "detail, at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ),
            lock=q(
                "SELECT (SELECT COALESCE(MAX(seq), 0) + 1 FROM {log} WHERE saga_id = %s) "
                "FROM {t} WHERE id = %s FOR UPDATE"
            ),
            set_state=q("UPDATE {t} SET state = %s, error = %s, updated_at = %s WHERE id = %s"),
            get_saga=q(f"SELECT {cols}, data FROM {{t}} WHERE id = %s"),
            get_entries=q(
                "SELECT seq, phase, status, step, step_name, attempt, detail, at "
                "FROM {log} WHERE saga_id = %s ORDER BY seq"
            ),
            list_all=q(f"SELECT {cols} FROM {{t}}"),
        )


def _json(value: Any) -> Jsonb:
    dumps(value)  # the same "JSON-able or ConfigurationError" check as every store
    return Jsonb(value)


def _entry_row(saga_id: str, seq: int, e: LogEntry) -> tuple[Any, ...]:
    return (saga_id, seq, e.phase.value, e.status, e.step, e.step_name, e.attempt,
            _json(e.detail), e.at)


def _summary(row: tuple[Any, ...]) -> SagaSummary:
    saga_id, name, state, created, updated, error = row[:6]
    return SagaSummary(saga_id, name, SagaState(state), created, updated, error)


class PostgresSagaStore:
    """A ``SagaStore`` in PostgreSQL. Create with ``await PostgresSagaStore.open(url)``."""

    def __init__(self, url: str, table: str, connect_timeout: int) -> None:
        self.table = check_table_name(table)
        self._url = url
        self._where = redact_url(url)
        password = BrokerURL.parse(url).password
        self._secrets = [password] if password else []
        self._timeout = connect_timeout
        self._sql = _Sql.for_table(table)
        self._lock = asyncio.Lock()
        self._conn: Connection | None = None
        self._closed = False

    @classmethod
    async def open(
        cls, url: str, *, table: str = "mqkit_saga", connect_timeout: int = 10
    ) -> PostgresSagaStore:
        """Connect and create the tables if missing (``ConfigurationError`` for a bad URL)."""
        try:
            conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            raise ConfigurationError(f"bad Postgres URL {redact_url(url)!r}") from None
        store = cls(url, table, connect_timeout)
        async with store._lock:
            await store._connection()
        return store

    async def create(self, record: SagaRecord) -> bool:
        row = (record.id, record.name, record.state.value, _json(record.data), record.error,
               record.created_at, record.updated_at)
        async with self._lock:
            conn = await self._connection()
            with self._errors():
                async with conn.transaction():
                    cur = await conn.execute(self._sql.insert_saga, row)
                    if await cur.fetchone() is None:
                        return False
                    async with conn.cursor() as c:
                        await c.executemany(self._sql.insert_entry, [
                            _entry_row(record.id, i, e) for i, e in enumerate(record.entries, 1)
                        ])
        return True

    async def append(
        self, saga_id: str, entry: LogEntry, state: SagaState, error: str | None = None
    ) -> LogEntry:
        at = entry.at or datetime.now(UTC).timestamp()
        async with self._lock:
            conn = await self._connection()
            with self._errors():
                async with conn.transaction():
                    cur = await conn.execute(self._sql.lock, (saga_id, saga_id))
                    found = await cur.fetchone()
                    if found is None:
                        raise UnknownSaga(f"no saga {saga_id!r} in the log")
                    stored = LogEntry(entry.phase, entry.status, entry.step, entry.step_name,
                                      entry.attempt, entry.detail, at, int(found[0]))
                    await conn.execute(self._sql.insert_entry,
                                       _entry_row(saga_id, stored.seq, stored))
                    await conn.execute(self._sql.set_state, (state.value, error, at, saga_id))
        return stored

    async def get(self, saga_id: str) -> SagaRecord | None:
        async with self._lock:
            conn = await self._connection()
            with self._errors():
                cur = await conn.execute(self._sql.get_saga, (saga_id,))
                row = await cur.fetchone()
                if row is None:
                    return None
                cur = await conn.execute(self._sql.get_entries, (saga_id,))
                rows = await cur.fetchall()
        s = _summary(row)
        entries = [
            LogEntry(Phase(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[0]) for r in rows
        ]
        return SagaRecord(s.id, s.name, s.state, row[6], s.created_at, s.updated_at, s.error,
                          entries)

    async def list(
        self, *, states: Iterable[SagaState] | None = None, limit: int | None = 100
    ) -> list[SagaSummary]:
        parts: list[sql.Composable] = [self._sql.list_all]
        params: list[Any] = []
        if states is not None:
            parts.append(sql.SQL(" WHERE state = ANY(%s)"))
            params.append([s.value for s in states])
        parts.append(sql.SQL(" ORDER BY updated_at DESC, id"))
        if limit is not None:
            parts.append(sql.SQL(" LIMIT %s"))
            params.append(int(limit))
        async with self._lock:
            conn = await self._connection()
            with self._errors():
                cur = await conn.execute(sql.Composed(parts), params)
                rows = await cur.fetchall()
        return [_summary(r) for r in rows]

    async def close(self) -> None:
        """Close the connection. Safe to call twice; later calls raise ``RuntimeError``."""
        self._closed = True
        async with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _connection(self) -> Connection:
        if self._closed:
            raise RuntimeError("PostgresSagaStore is closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=self._timeout
                )
            except psycopg.Error as exc:
                raise ConnectionFailed(
                    f"cannot connect to Postgres at {self._where}: {self._safe(exc)}"
                ) from exc
            try:
                with self._errors():
                    for statement in self._sql.create:
                        try:
                            await conn.execute(statement)
                        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
                            pass  # another process created it at the same moment
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise ConnectionFailed(f"Postgres at {self._where}: {self._safe(exc)}") from exc
        except psycopg.Error as exc:
            raise MqkitError(
                f"Postgres saga log {self.table!r} at {self._where}: {self._safe(exc)}"
            ) from exc

    def _safe(self, exc: BaseException) -> str:
        return redact_text(str(exc), self._secrets)
