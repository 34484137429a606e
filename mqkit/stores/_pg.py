"""A few PostgreSQL connections for the SQL stores (internal; psycopg 3, no pool library).

Shared by the PostgreSQL idempotency store, saga log, event store and exactly-once consumer.
``Pool.transaction()`` lends a connection in a transaction (commit on normal exit, rollback
on an exception) and keeps up to ``max_idle`` idle connections for reuse. ``Pool.shared()``
lends the pool's one autocommit connection, to one caller at a time (an asyncio lock),
reconnecting when it broke and running ``schema`` on each new one.

Driver errors are converted at this edge: ``ConnectionFailed`` when the server is
unreachable, refuses the credentials or drops the connection, ``MqkitError`` otherwise; the
driver's error is kept as ``__cause__`` and messages never carry the URL's password.
``close`` is safe twice; later calls raise ``RuntimeError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg.abc import Query
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from mqkit.errors import ConfigurationError, ConnectionFailed, MqkitError
from mqkit.stores.base import Params
from mqkit.url import BrokerURL, redact_text, redact_url

Connection = psycopg.AsyncConnection[Any]

_AUTH_FAILED = ("28P01", "28000")  # invalid_password, invalid_authorization_specification


def check_url(url: str) -> None:
    """Raise ``ConfigurationError`` (without the password) for a URL libpq cannot parse."""
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError:  # its message may quote the URL: do not keep it
        raise ConfigurationError(f"bad Postgres URL {redact_url(url)!r}") from None


class PgTransaction:
    """An open transaction. ``execute`` takes ``?`` placeholders (rewritten to ``%s``)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    async def execute(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        cur = await self.connection.execute(sql.replace("?", "%s"), params)
        return list(await cur.fetchall()) if cur.description is not None else []

    async def executemany(self, sql: str, params: Iterable[Params]) -> None:
        async with self.connection.cursor() as cur:
            await cur.executemany(sql.replace("?", "%s"), list(params))


class Pool:
    """Connections to one database. ``name`` labels error messages (``"Postgres saga log"``).

    Raises ``ConfigurationError`` for a URL libpq cannot parse. ``connect_timeout`` applies
    unless the URL sets its own.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "Postgres",
        schema: Sequence[Query] = (),
        connect_timeout: int = 10,
        max_idle: int = 4,
    ) -> None:
        check_url(url)
        self._url = url
        self.name = name
        self.where = redact_url(url)
        password = BrokerURL.parse(url).password
        self._secrets = [password] if password else []
        self._options: dict[str, Any] = {}
        if "connect_timeout" not in url:
            self._options["connect_timeout"] = connect_timeout
        self._schema = tuple(schema)
        self._max_idle = max_idle
        self._idle: list[Connection] = []
        self._shared: Connection | None = None
        self._lock = asyncio.Lock()  # guards _shared
        self._closed = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A connection outside any transaction's block (autocommit is off: commit yourself);
        rolled back if the block raises, then kept for reuse if it is idle."""
        conn = await self._checkout()
        try:
            yield conn
        except BaseException:
            await self._rollback_quietly(conn)
            raise
        finally:
            await self._checkin(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection in a transaction: committed on normal exit, else rolled back."""
        async with self.connection() as conn:
            yield conn
            with self.errors():
                await conn.commit()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[Connection]:
        """The pool's autocommit connection, held by one caller at a time for the block.

        Connects (and runs ``schema``) on first use and again when the connection broke.
        """
        async with self._lock:
            yield await self._live_shared()

    async def close(self) -> None:
        """Close every connection; one lent out closes when it comes back. Safe twice."""
        self._closed = True
        async with self._lock:
            conns = [c for c in [self._shared, *self._idle] if c is not None]
            self._shared, self._idle = None, []
        for conn in conns:
            await conn.close()

    @contextmanager
    def errors(self, what: str | None = None) -> Iterator[None]:
        """Convert psycopg errors raised inside the block into mqkit's (redacted)."""
        what = what or self.name
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise ConnectionFailed(f"{what} at {self.where}: {self.safe(exc)}") from exc
        except psycopg.Error as exc:
            raise MqkitError(f"{what} at {self.where}: {self.safe(exc)}") from exc

    def safe(self, exc: BaseException) -> str:
        """``exc``'s text with the URL's password redacted."""
        return redact_text(str(exc), self._secrets)

    async def connect(self, *, autocommit: bool = False) -> Connection:
        """A new connection of the caller's own; ``ConnectionFailed`` if it cannot be had."""
        try:
            return await psycopg.AsyncConnection.connect(
                self._url, autocommit=autocommit, **self._options
            )
        except psycopg.Error as exc:
            text = self.safe(exc)
            if exc.sqlstate in _AUTH_FAILED or "authentication failed" in text:
                raise ConnectionFailed(
                    f"authentication failed for Postgres at {self.where}: {text}"
                ) from exc
            raise ConnectionFailed(f"cannot connect to Postgres at {self.where}: {text}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the {self.name} at {self.where} is closed")

    async def _live_shared(self) -> Connection:
        self._check_open()
        if self._shared is None or self._shared.closed or self._shared.broken:
            conn = await self.connect(autocommit=True)
            try:
                with self.errors():
                    for statement in self._schema:
                        try:
                            await conn.execute(statement)
                        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
                            pass  # another process created it at the same moment
            except BaseException:
                await conn.close()
                raise
            self._shared = conn
        return self._shared

    async def _checkout(self) -> Connection:
        self._check_open()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and not conn.broken:
                return conn
            await conn.close()
        return await self.connect()

    async def _checkin(self, conn: Connection) -> None:
        if (
            not self._closed
            and not conn.closed
            and conn.info.transaction_status == TransactionStatus.IDLE
            and len(self._idle) < self._max_idle
        ):
            self._idle.append(conn)
        else:
            await conn.close()

    async def _rollback_quietly(self, conn: Connection) -> None:
        try:
            await conn.rollback()
        except psycopg.Error:
            pass  # the error already raised matters more; _checkin closes the connection
