"""A few PostgreSQL connections for the event-sourcing stores (internal; no pool library).

``Pool.transaction()`` lends a connection in a transaction (commit on normal exit, rollback
on an exception) and keeps up to ``max_idle`` idle connections for reuse. Driver errors are
converted at this edge: ``ConnectionFailed`` when the server is unreachable or refuses us,
``MqkitError`` otherwise; messages never carry the URL's password.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from mqkit.errors import ConfigurationError, ConnectionFailed, MqkitError
from mqkit.eventsourcing.store import Params
from mqkit.url import BrokerURL, redact_text, redact_url

Connection = psycopg.AsyncConnection[Any]


def check_url(url: str) -> None:
    """Raise ``ConfigurationError`` (without the password) for a URL libpq cannot parse."""
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError:
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
    """Connections to one database. ``close`` is safe twice; later calls raise RuntimeError."""

    def __init__(self, url: str, *, connect_timeout: int = 10, max_idle: int = 4) -> None:
        check_url(url)
        self._url = url
        self.where = redact_url(url)
        password = BrokerURL.parse(url).password
        self._secrets = [password] if password else []
        self._options: dict[str, Any] = {}
        if "connect_timeout" not in url:
            self._options["connect_timeout"] = connect_timeout
        self._max_idle = max_idle
        self._idle: list[Connection] = []
        self._closed = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A connection outside any transaction's block (autocommit is off: commit yourself)."""
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

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    @contextmanager
    def errors(self, what: str = "Postgres") -> Iterator[None]:
        """Convert psycopg errors raised inside the block into mqkit's (redacted)."""
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise ConnectionFailed(f"{what} at {self.where}: {self.safe(exc)}") from exc
        except psycopg.Error as exc:
            raise MqkitError(f"{what} at {self.where}: {self.safe(exc)}") from exc

    def safe(self, exc: BaseException) -> str:
        return redact_text(str(exc), self._secrets)

    async def _checkout(self) -> Connection:
        if self._closed:
            raise RuntimeError(f"the Postgres store at {self.where} is closed")
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and not conn.broken:
                return conn
            await conn.close()
        try:
            return await psycopg.AsyncConnection.connect(self._url, **self._options)
        except psycopg.Error as exc:
            raise ConnectionFailed(
                f"cannot connect to Postgres at {self.where}: {self.safe(exc)}"
            ) from exc

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
