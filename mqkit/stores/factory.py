"""Pick an idempotency store from a URL; backends' libraries are imported only when used."""

from __future__ import annotations

from mqkit.errors import ConfigurationError
from mqkit.stores.base import IdempotencyStore
from mqkit.url import redact_url


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``; else memory."""
    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
    return path or ":memory:"


async def open_idempotency_store(url: str, *, table: str = "mqkit_idempotency") -> IdempotencyStore:
    """An opened store for ``url`` (memory://, sqlite:///file, redis://, postgresql://)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        from mqkit.stores.memory import MemoryIdempotencyStore

        return MemoryIdempotencyStore()
    if scheme == "sqlite":
        from mqkit.stores.sqlite import SqliteIdempotencyStore

        return await SqliteIdempotencyStore.open(sqlite_path(url), table=table)
    if scheme == "redis":
        from mqkit.stores.redis import RedisIdempotencyStore

        return await RedisIdempotencyStore.open(url)
    if scheme in ("postgres", "postgresql"):
        from mqkit.stores.postgres import PostgresIdempotencyStore

        return await PostgresIdempotencyStore.open(url, table=table)
    raise ConfigurationError(
        f"no idempotency store for {redact_url(url)!r}: use memory://, sqlite:///path.db, "
        "redis://host:port/db or postgresql://user:pass@host/db"
    )
