"""Event-store fixtures: each test runs on memory, SQLite and PostgreSQL (skipped locally when
PostgreSQL is not running), with tables of its own that are dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mqkit.eventsourcing.factory import open_event_store

TABLES = ("events", "head", "snapshots", "checkpoints", "outbox", "consumer_offsets",
          "consumer_inbox", "balances", "history")


@pytest.fixture
def prefix() -> str:
    return f"es_{uuid.uuid4().hex[:10]}"


async def drop_tables(url: str, prefix: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for t in TABLES:
            await conn.execute(f'DROP TABLE IF EXISTS "{prefix}_{t}"')


@pytest.fixture
async def pg_prefix(postgres_url: str, prefix: str) -> AsyncIterator[str]:
    yield prefix
    await drop_tables(postgres_url, prefix)


def store_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def any_store(
    request: pytest.FixtureRequest, tmp_path: Path, prefix: str
) -> AsyncIterator[Any]:
    url = store_url(request.param, request, tmp_path)
    store = await open_event_store(url, prefix=prefix)
    yield store
    await store.close()
    if request.param == "postgres":
        await drop_tables(url, prefix)


@pytest.fixture(params=["sqlite", "postgres"])
async def sql_store(
    request: pytest.FixtureRequest, tmp_path: Path, prefix: str
) -> AsyncIterator[Any]:
    url = store_url(request.param, request, tmp_path)
    store = await open_event_store(url, prefix=prefix)
    yield store
    await store.close()
    if request.param == "postgres":
        await drop_tables(url, prefix)


@pytest.fixture
async def effects(postgres_url: str, pg_prefix: str) -> AsyncIterator[str]:
    """``<prefix>_effects`` (no unique key) and a one-row ``<prefix>_totals``."""
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(f"CREATE TABLE {pg_prefix}_effects (input text, amount bigint)")
        await conn.execute(f"CREATE TABLE {pg_prefix}_totals (id int PRIMARY KEY, total bigint)")
        await conn.execute(f"INSERT INTO {pg_prefix}_totals VALUES (1, 0)")
    yield f"{pg_prefix}_effects"
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(f"DROP TABLE IF EXISTS {pg_prefix}_effects, {pg_prefix}_totals")
