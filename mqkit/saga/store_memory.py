"""In-process saga log: for tests and single-process demos; lost when the process exits."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import replace

from mqkit.saga.model import (
    LogEntry,
    SagaRecord,
    SagaState,
    SagaSummary,
    UnknownSaga,
    dumps,
    loads,
)


def _json_copy(value: object) -> object:
    """What a database would give back: JSON in, JSON out (``ConfigurationError`` if not)."""
    return loads(dumps(value))


class MemorySagaStore:
    """A ``SagaStore`` in a dict. Safe between tasks of one loop (no call awaits midway)."""

    def __init__(self) -> None:
        self._sagas: dict[str, SagaRecord] = {}

    async def create(self, record: SagaRecord) -> bool:
        if record.id in self._sagas:
            return False
        stored = copy.deepcopy(record)
        stored.data = _json_copy(record.data)
        stored.entries = [replace(e, seq=i, detail=_json_copy(e.detail))
                          for i, e in enumerate(stored.entries, 1)]
        self._sagas[record.id] = stored
        return True

    async def append(
        self, saga_id: str, entry: LogEntry, state: SagaState, error: str | None = None
    ) -> LogEntry:
        saga = self._sagas.get(saga_id)
        if saga is None:
            raise UnknownSaga(f"no saga {saga_id!r} in the log")
        stored = replace(entry, seq=len(saga.entries) + 1, at=entry.at or time.time(),
                         detail=_json_copy(entry.detail))
        saga.entries.append(stored)
        saga.state, saga.error, saga.updated_at = state, error, stored.at
        return stored

    async def get(self, saga_id: str) -> SagaRecord | None:
        saga = self._sagas.get(saga_id)
        return copy.deepcopy(saga) if saga is not None else None

    async def list(
        self, *, states: Iterable[SagaState] | None = None, limit: int | None = 100
    ) -> list[SagaSummary]:
        wanted = set(states) if states is not None else None
        rows = [
            SagaSummary(s.id, s.name, s.state, s.created_at, s.updated_at, s.error)
            for s in self._sagas.values()
            if wanted is None or s.state in wanted
        ]
        rows.sort(key=lambda r: r.updated_at, reverse=True)
        return rows if limit is None else rows[:limit]

    async def close(self) -> None:
        return None
