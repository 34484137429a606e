"""PostgreSQL saga log: the production store. Needs the ``postgres`` extra (psycopg 3).

Tables ``<table>`` and ``<table>_log`` (created if missing), as the SQLite store has them;
``data`` and ``detail`` are ``jsonb``. ``append`` locks the saga's row (``FOR UPDATE``),
inserts the entry with the next seq and sets the state, in one transaction committed before
it returns.

URL: ``postgresql://user:password@host:port/dbname`` (or ``postgres://``). Errors raise
``ConnectionFailed`` (unreachable, lost connection, bad credentials) or ``MqkitError``, with
the password redacted and the driver's error as ``__cause__``.

How it runs: one connection used by one call at a time (an ``asyncio.Lock``), reconnected
if it broke (``mqkit.stores._pg``, shared with the other Postgres stores). Throughput is
bounded by one round trip per statement; run several orchestrator processes (each with its
own store) to go wider.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from mqkit.saga.model import (
    LogEntry,
    Phase,
    SagaRecord,
    SagaState,
    SagaSummary,
    UnknownSaga,
    dumps,
)
from mqkit.stores._names import check_table_name
from mqkit.stores._pg import Pool


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
        self._sql = _Sql.for_table(table)
        self._pool = Pool(url, name=f"Postgres saga log {table!r}", schema=self._sql.create,
                          connect_timeout=connect_timeout)

    @classmethod
    async def open(
        cls, url: str, *, table: str = "mqkit_saga", connect_timeout: int = 10
    ) -> PostgresSagaStore:
        """Connect and create the tables if missing (``ConfigurationError`` for a bad URL)."""
        store = cls(url, table, connect_timeout)
        async with store._pool.shared():
            pass
        return store

    async def create(self, record: SagaRecord) -> bool:
        row = (record.id, record.name, record.state.value, _json(record.data), record.error,
               record.created_at, record.updated_at)
        async with self._pool.shared() as conn:
            with self._pool.errors():
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
        async with self._pool.shared() as conn:
            with self._pool.errors():
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
        async with self._pool.shared() as conn:
            with self._pool.errors():
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
        async with self._pool.shared() as conn:
            with self._pool.errors():
                cur = await conn.execute(sql.Composed(parts), params)
                rows = await cur.fetchall()
        return [_summary(r) for r in rows]

    async def close(self) -> None:
        """Close the connection. Safe to call twice; later calls raise ``RuntimeError``."""
        await self._pool.close()
