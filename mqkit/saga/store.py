"""The saga log: where each transition is written before the orchestrator acts on it.

``SagaStore`` is small on purpose. ``create`` writes a new saga with its first entry;
``append`` adds one entry and sets the saga's state in the same transaction, so a state never
disagrees with its log. ``open_saga_store(url)`` picks a backend: ``sqlite:///path.db`` (the
embedded default), ``postgresql://user:pass@host/db`` (production) or ``memory://`` (tests,
one process, lost on exit). Backends' libraries are imported only when used.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from mqkit.errors import ConfigurationError
from mqkit.saga.model import LogEntry, SagaRecord, SagaState, SagaSummary
from mqkit.url import redact_url

DEFAULT_TABLE = "mqkit_saga"


@runtime_checkable
class SagaStore(Protocol):
    """A saga log. Safe to use from many tasks; ``close`` is safe to call twice.

    Backends raise ``ConnectionFailed`` when the database cannot be reached and
    ``UnknownSaga`` from ``append`` for an id that was never created.
    """

    async def create(self, record: SagaRecord) -> bool:
        """Write a new saga and its ``entries``; False (nothing written) if the id exists."""
        ...

    async def append(
        self, saga_id: str, entry: LogEntry, state: SagaState, error: str | None = None
    ) -> LogEntry:
        """Append ``entry`` and set the saga's state (and error); the entry with its seq."""
        ...

    async def get(self, saga_id: str) -> SagaRecord | None:
        """The saga with its whole log, oldest entry first; None if unknown."""
        ...

    async def list(
        self, *, states: Iterable[SagaState] | None = None, limit: int | None = 100
    ) -> list[SagaSummary]:
        """Sagas (optionally only in ``states``), most recently updated first."""
        ...

    async def close(self) -> None: ...


async def open_saga_store(url: str, *, table: str = DEFAULT_TABLE) -> SagaStore:
    """An opened saga store for ``url``; tables ``<table>`` and ``<table>_log``."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        from mqkit.saga.store_memory import MemorySagaStore

        return MemorySagaStore()
    if scheme == "sqlite":
        from mqkit.saga.store_sqlite import SqliteSagaStore
        from mqkit.stores.factory import sqlite_path

        return await SqliteSagaStore.open(sqlite_path(url), table=table)
    if scheme in ("postgres", "postgresql"):
        from mqkit.saga.store_postgres import PostgresSagaStore

        return await PostgresSagaStore.open(url, table=table)
    raise ConfigurationError(
        f"no saga store for {redact_url(url)!r}: use sqlite:///path.db, "
        "postgresql://user:pass@host/db or memory://"
    )
