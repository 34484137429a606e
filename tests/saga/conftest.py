"""Saga stores for tests: memory, SQLite in a temp dir and (when reachable) PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mqkit.saga import SagaStore, open_saga_store


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SagaStore]:
    """Each saga store backend in turn (PostgreSQL skips locally when unreachable)."""
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'saga.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    table = f"saga_{uuid.uuid4().hex[:10]}"
    store = await open_saga_store(url, table=table)
    yield store
    await store.close()
    if request.param == "postgres":
        import psycopg

        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_log"')


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SagaStore]:
    store = await open_saga_store(f"sqlite:///{tmp_path / 'saga.db'}")
    yield store
    await store.close()
