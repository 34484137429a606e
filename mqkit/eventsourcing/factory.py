"""Open an event store by URL: ``memory://``, ``sqlite:///path.db`` (default) or
``postgresql://user:pass@host/db``. Backends' libraries are imported only when used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mqkit.errors import ConfigurationError
from mqkit.eventsourcing.memory_store import MemoryEventStore
from mqkit.eventsourcing.sqlite_store import SqliteEventStore
from mqkit.stores.factory import sqlite_path
from mqkit.url import redact_url

if TYPE_CHECKING:
    from mqkit.eventsourcing.postgres_store import PostgresEventStore


async def open_event_store(
    url: str = "sqlite://", *, prefix: str = "mqkit"
) -> MemoryEventStore | SqliteEventStore | PostgresEventStore:
    """An opened store for ``url``; ``ConfigurationError`` for an unknown scheme."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryEventStore()
    if scheme == "sqlite":
        return await SqliteEventStore.open(sqlite_path(url), prefix=prefix)
    if scheme in ("postgres", "postgresql"):
        from mqkit.eventsourcing.postgres_store import PostgresEventStore

        return await PostgresEventStore.open(url, prefix=prefix)
    raise ConfigurationError(
        f"no event store for {redact_url(url)!r}: use memory://, sqlite:///path.db "
        "or postgresql://user:pass@host/db"
    )
