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
up to ``max_idle`` idle ones. No pool library.

Limits: a ``claim`` on a key whose ``transaction()`` is still open waits for it, and holds up
the store's other calls meanwhile; use one style per key. Rows past their expiry are swept
every 1024 claims.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from mqkit.errors import ConfigurationError, ConnectionFailed, MqkitError
from mqkit.stores.base import Claim
from mqkit.stores.sqlite import check_table_name
from mqkit.url import BrokerURL, redact_text, redact_url

Connection = psycopg.AsyncConnection[Any]

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
        self._url = url
        self._where = redact_url(url)
        password = BrokerURL.parse(url).password
        self._secrets = [password] if password else []
        self._connect_options: dict[str, Any] = {}
        if "connect_timeout" not in url:
            self._connect_options["connect_timeout"] = connect_timeout
        self._max_idle = max_idle
        self._sql = _Sql.for_table(table)
        self._lock = asyncio.Lock()
        self._conn: Connection | None = None
        self._idle: list[Connection] = []
        self._claims = 0
        self._closed = False

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
        try:
            conninfo_to_dict(url)
        except psycopg.ProgrammingError:  # its message may quote the URL: do not keep it
            raise ConfigurationError(f"bad Postgres URL {redact_url(url)!r}") from None
        store = cls(url, table, connect_timeout=connect_timeout, max_idle=max_idle)
        async with store._lock:
            await store._main()
        return store

    async def claim(self, key: str, lease: float) -> Claim:
        """NEW (now held for ``lease`` seconds), DONE, or BUSY (another live claim)."""
        async with self._lock:
            conn = await self._main()
            with self._errors():
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
        async with self._lock:
            conn = await self._main()
            with self._errors():
                await conn.execute(self._sql.complete, (key, timedelta(seconds=ttl)))

    async def release(self, key: str) -> None:
        """Drop a claim so a retry can take it; a done key is kept. Safe to call twice."""
        async with self._lock:
            conn = await self._main()
            with self._errors():
                await conn.execute(self._sql.release, (key,))

    @asynccontextmanager
    async def transaction(self, key: str, ttl: float) -> AsyncIterator[PostgresTransaction | None]:
        """Hold ``key`` as done in an open transaction; yield None if it was already done.

        Normal exit commits the key with every effect written through ``connection``; an
        exception (or cancellation) rolls both back and propagates. A busy or expired key is
        taken over. A second transaction for the same key waits until the first ends.
        """
        conn = await self._checkout()
        try:
            held = await self._hold(conn, key, timedelta(seconds=ttl))
        except BaseException:
            await self._checkin(conn)
            raise
        if not held:
            await self._checkin(conn)
            yield None
            return
        try:
            try:
                yield PostgresTransaction(key, conn)
            except BaseException:
                await self._rollback_quietly(conn)
                raise
            with self._errors():
                await conn.commit()
        finally:
            await self._checkin(conn)

    async def close(self) -> None:
        """Close every connection; one lent to an open transaction closes when it ends."""
        self._closed = True
        async with self._lock:
            conns = [c for c in [self._conn, *self._idle] if c is not None]
            self._conn, self._idle = None, []
        for conn in conns:
            await conn.close()

    # --- internals -------------------------------------------------------------------

    async def _hold(self, conn: Connection, key: str, ttl: timedelta) -> bool:
        """Begin a transaction on ``conn`` holding ``key`` as done; False if already done."""
        try:
            with self._errors():
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
        except BaseException:
            await self._rollback_quietly(conn)
            raise

    async def _main(self) -> Connection:
        """The autocommit connection (call under ``_lock``), reconnecting if it broke."""
        if self._closed:
            raise RuntimeError("PostgresIdempotencyStore is closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = await self._connect(autocommit=True)
            try:
                await self._create_table(conn)
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _create_table(self, conn: Connection) -> None:
        with self._errors():
            try:
                await conn.execute(self._sql.create)
            except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
                pass  # another process created it at the same moment

    async def _maybe_sweep(self, conn: Connection) -> None:
        self._claims += 1
        if self._claims % _SWEEP_EVERY == 0:
            await conn.execute(self._sql.sweep)

    async def _checkout(self) -> Connection:
        if self._closed:
            raise RuntimeError("PostgresIdempotencyStore is closed")
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and not conn.broken:
                return conn
            await conn.close()
        return await self._connect(autocommit=False)

    async def _checkin(self, conn: Connection) -> None:
        reusable = (
            not self._closed
            and not conn.closed
            and conn.info.transaction_status == TransactionStatus.IDLE
            and len(self._idle) < self._max_idle
        )
        if reusable:
            self._idle.append(conn)
        else:
            await conn.close()

    async def _rollback_quietly(self, conn: Connection) -> None:
        # The error already raised matters more; a connection left mid-transaction is
        # closed by _checkin instead of reused.
        try:
            await conn.rollback()
        except psycopg.Error:
            pass

    async def _connect(self, *, autocommit: bool) -> Connection:
        try:
            return await psycopg.AsyncConnection.connect(
                self._url, autocommit=autocommit, **self._connect_options
            )
        except psycopg.Error as exc:
            text = self._safe(exc)
            if exc.sqlstate in ("28P01", "28000") or "authentication failed" in text:
                raise ConnectionFailed(
                    f"authentication failed for Postgres at {self._where}: {text}"
                ) from exc
            raise ConnectionFailed(f"cannot connect to Postgres at {self._where}: {text}") from exc

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Convert psycopg errors from the store's own statements into mqkit's."""
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise ConnectionFailed(f"Postgres at {self._where}: {self._safe(exc)}") from exc
        except psycopg.Error as exc:
            raise MqkitError(
                f"Postgres idempotency store {self.table!r} at {self._where}: {self._safe(exc)}"
            ) from exc

    def _safe(self, exc: BaseException) -> str:
        return redact_text(str(exc), self._secrets)
