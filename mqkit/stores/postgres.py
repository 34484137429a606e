"""Postgres idempotency store: keys in a table, and effects committed in the same transaction.

Features: ``claim``/``complete``/``release`` with leases and a ttl, and ``transaction(key,
ttl)``, which records the key in the transaction the handler writes its effects in (through
``tx.connection``, a psycopg ``AsyncConnection``), so they commit or roll back together.
Two transactions for one key serialise on the table's primary key: the second waits for the
first, then sees the key done. Expiry uses the server's clock, so workers agree.

URL: ``postgresql://user:password@host:port/dbname`` (or ``postgres://``), with any libpq
option as a query parameter. Needs the ``postgres`` extra (``psycopg[binary]>=3.1``). The
table (``key text primary key, state text, expires_at timestamptz``) is created if missing.

How it runs: one autocommit connection, used by one call at a time, serves ``claim``,
``complete`` and ``release``; each ``transaction()`` takes a connection of its own, reusing
up to ``max_idle`` idle ones (``mqkit.stores._pg``, shared with the other Postgres stores).
No pool library.

Limits: a ``claim`` on a key whose ``transaction()`` is still open waits for it, and holds up
the store's other calls meanwhile; use one style per key. Rows past their expiry are swept
every 1024 claims.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from psycopg import sql

from mqkit.stores._names import check_table_name
from mqkit.stores._pg import Connection, Pool
from mqkit.stores.base import Claim

_SWEEP_EVERY = 1024  # claims between sweeps of expired keys


@dataclass(frozen=True)
class _Sql:
    """The store's statements for one table."""

    create: sql.Composed
    claim: sql.Composed
    state: sql.Composed
    complete: sql.Composed
    release: sql.Composed
    sweep: sql.Composed
    tx_insert: sql.Composed
    tx_lock: sql.Composed
    tx_take: sql.Composed

    @classmethod
    def for_table(cls, table: str) -> _Sql:
        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(t=sql.Identifier(table))

        return cls(
            create=q(
                "CREATE TABLE IF NOT EXISTS {t} (key text PRIMARY KEY, state text NOT NULL, "
                "expires_at timestamptz NOT NULL)"
            ),
            claim=q(
                "INSERT INTO {t} (key, state, expires_at) VALUES (%s, 'busy', now() + %s) "
                "ON CONFLICT (key) DO UPDATE SET state = 'busy', expires_at = EXCLUDED.expires_at "
                "WHERE {t}.expires_at <= now() RETURNING state"
            ),
            state=q("SELECT state FROM {t} WHERE key = %s AND expires_at > now()"),
            complete=q(
                "INSERT INTO {t} (key, state, expires_at) VALUES (%s, 'done', now() + %s) "
                "ON CONFLICT (key) DO UPDATE SET state = 'done', expires_at = EXCLUDED.expires_at"
            ),
            release=q("DELETE FROM {t} WHERE key = %s AND state = 'busy'"),
            sweep=q("DELETE FROM {t} WHERE expires_at <= now()"),
            tx_insert=q(
                "INSERT INTO {t} (key, state, expires_at) VALUES (%s, 'done', now() + %s) "
                "ON CONFLICT (key) DO NOTHING RETURNING key"
            ),
            tx_lock=q(
                "SELECT state = 'done' AND expires_at > now() FROM {t} WHERE key = %s FOR UPDATE"
            ),
            tx_take=q("UPDATE {t} SET state = 'done', expires_at = now() + %s WHERE key = %s"),
        )


class PostgresTransaction:
    """An open transaction: write the handler's effects through ``connection``.

    ``connection`` is a psycopg ``AsyncConnection`` inside the transaction; do not commit or
    roll it back yourself, and do not use it after the block.
    """

    def __init__(self, key: str, connection: Connection) -> None:
        self.key = key
        self.connection = connection


class PostgresIdempotencyStore:
    """Idempotency keys in a Postgres table. Create with ``await ...open(url, table=...)``.

    Safe to share between tasks and processes. Failures raise ``ConnectionFailed``
    (unreachable, lost connection, "authentication failed") or ``MqkitError`` (any other
    database error from the store's own statements), the driver's error kept as
    ``__cause__`` and the password redacted. ``close`` is idempotent; other calls after it
    raise ``RuntimeError``.
    """

    def __init__(self, url: str, table: str, *, connect_timeout: int, max_idle: int) -> None:
        """Use ``open``: it connects and creates the table."""
        self.table = check_table_name(table)
        self._sql = _Sql.for_table(table)
        self._pool = Pool(url, name=f"Postgres idempotency store {table!r}",
                          schema=[self._sql.create], connect_timeout=connect_timeout,
                          max_idle=max_idle)
        self._claims = 0

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        table: str = "mqkit_idempotency",
        connect_timeout: int = 10,
        max_idle: int = 4,
    ) -> PostgresIdempotencyStore:
        """Connect to ``url`` and create ``table`` if missing.

        Raises ``ConfigurationError`` for a bad URL or table name, ``ConnectionFailed`` if
        the server is unreachable or refuses the credentials.
        """
        store = cls(url, table, connect_timeout=connect_timeout, max_idle=max_idle)
        async with store._pool.shared():
            pass
        return store

    async def claim(self, key: str, lease: float) -> Claim:
        """NEW (now held for ``lease`` seconds), DONE, or BUSY (another live claim)."""
        async with self._pool.shared() as conn:
            with self._pool.errors():
                while True:  # loops only if the key vanished between the two statements
                    cur = await conn.execute(self._sql.claim, (key, timedelta(seconds=lease)))
                    if await cur.fetchone() is not None:
                        await self._maybe_sweep(conn)
                        return Claim.NEW
                    cur = await conn.execute(self._sql.state, (key,))
                    row = await cur.fetchone()
                    if row is not None:
                        return Claim.DONE if row[0] == "done" else Claim.BUSY

    async def complete(self, key: str, ttl: float) -> None:
        """Record ``key`` as done for ``ttl`` seconds, whoever held it."""
        async with self._pool.shared() as conn:
            with self._pool.errors():
                await conn.execute(self._sql.complete, (key, timedelta(seconds=ttl)))

    async def release(self, key: str) -> None:
        """Drop a claim so a retry can take it; a done key is kept. Safe to call twice."""
        async with self._pool.shared() as conn:
            with self._pool.errors():
                await conn.execute(self._sql.release, (key,))

    @asynccontextmanager
    async def transaction(self, key: str, ttl: float) -> AsyncIterator[PostgresTransaction | None]:
        """Hold ``key`` as done in an open transaction; yield None if it was already done.

        Normal exit commits the key with every effect written through ``connection``; an
        exception (or cancellation) rolls both back and propagates. A busy or expired key is
        taken over. A second transaction for the same key waits until the first ends.
        """
        held = False
        async with self._pool.connection() as conn:  # rolls back if the block raises
            held = await self._hold(conn, key, timedelta(seconds=ttl))
            if held:
                yield PostgresTransaction(key, conn)
                with self._pool.errors():
                    await conn.commit()
        if not held:  # the connection is back in the pool
            yield None

    async def close(self) -> None:
        """Close every connection; one lent to an open transaction closes when it ends."""
        await self._pool.close()

    async def _hold(self, conn: Connection, key: str, ttl: timedelta) -> bool:
        """Begin a transaction on ``conn`` holding ``key`` as done; False if already done."""
        with self._pool.errors():
            while True:  # loops only if the key vanished between the statements
                cur = await conn.execute(self._sql.tx_insert, (key, ttl))
                if await cur.fetchone() is not None:
                    return True
                cur = await conn.execute(self._sql.tx_lock, (key,))
                row = await cur.fetchone()
                if row is None:
                    continue
                if row[0]:
                    await conn.rollback()
                    return False
                await conn.execute(self._sql.tx_take, (ttl, key))
                return True

    async def _maybe_sweep(self, conn: Connection) -> None:
        self._claims += 1
        if self._claims % _SWEEP_EVERY == 0:
            await conn.execute(self._sql.sweep)
