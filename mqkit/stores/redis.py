"""Redis idempotency store: keys with native expiry, shared by every worker that can reach Redis.

Features: ``claim``/``complete``/``release`` with leases and a ttl, each one atomic command.
Commands that concurrent handlers issue in the same moment share a round trip: they go out
together in one pipeline, and those that come while it is in flight go in the next
(``_Pipeliner``), so a consumer with many workers pays one round trip per wave of keys
rather than one per key.
A key is ``<prefix><key>`` holding ``busy`` (expires after the lease) or ``done`` (expires
after the ttl); Redis's own expiry forgets them, so nothing needs sweeping.

URL: ``redis://[user:password@]host:port/db`` or ``rediss://`` for TLS; options as
``redis.asyncio.Redis.from_url`` accepts them. Needs the ``redis`` extra (``redis>=5``).

Limits: not transactional. Redis is not the database a handler writes its effects to, so
effects and key cannot commit together; use the SQLite or Postgres store for that. Expiry
has Redis's millisecond precision; leases shorter than 1 ms are rounded up.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mqkit.errors import ConfigurationError, ConnectionFailed, MqkitError
from mqkit.stores.base import Claim
from mqkit.url import BrokerURL, redact_text, redact_url

T = TypeVar("T")

DEFAULT_PREFIX = "mqkit:idem:"

# Take the key if free; otherwise report what it holds. Atomic: no gap between SET and GET.
_CLAIM = """
if redis.call('SET', KEYS[1], 'busy', 'NX', 'PX', ARGV[1]) then
  return 'new'
end
return redis.call('GET', KEYS[1])
"""

# Drop the key only while it is still a claim, never a completed key.
_RELEASE = """
if redis.call('GET', KEYS[1]) == 'busy' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _millis(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


Stage = Callable[[Any], object]
"""Adds one command to a pipeline (redis-py's ``Pipeline``, not awaited)."""


def _run_script(pipe: Any, script: Any, key: str, *args: object) -> None:
    """Queue ``script`` on ``pipe`` by its digest; the pipeline loads it first if Redis does
    not know it (redis-py checks its ``scripts`` before executing)."""
    pipe.scripts.add(script)
    pipe.evalsha(script.sha, 1, key, *args)


class _Pipeliner:
    """Sends the commands of concurrent callers in one pipeline per round trip.

    A command waits one loop turn for others to join it; commands that arrive while a
    pipeline is in flight go out together when it returns. Each caller gets its own result,
    or its own error (the pipeline does not stop at a failed command, and it is not a
    transaction: every command stands alone, as it would sent by itself).
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._pending: list[tuple[Stage, asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    def submit(self, stage: Stage) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((stage, future))
        if self._sender is None:
            self._sender = loop.create_task(self._send_all())
        return future

    async def _send_all(self) -> None:
        batch: list[tuple[Stage, asyncio.Future[Any]]] = []
        try:
            await asyncio.sleep(0)  # let the callers of this loop turn join
            while self._pending:
                batch, self._pending = self._pending, []
                pipe = self._client.pipeline(transaction=False)
                for stage, _ in batch:
                    stage(pipe)
                try:
                    results = await pipe.execute(raise_on_error=False)
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
            batch = []
        finally:
            self._sender = None
            # Cancelled (the loop is closing): nobody may wait forever for a reply.
            for _, future in [*batch, *self._pending]:
                if not future.done():
                    future.set_exception(RedisConnectionError("the Redis store was closed"))
            self._pending = []


class RedisIdempotencyStore:
    """Idempotency keys in Redis. Create with ``await RedisIdempotencyStore.open(url)``.

    Safe to share between tasks and processes: every operation is one atomic command or
    script. Redis errors raise ``ConnectionFailed`` (unreachable, timed out, wrong
    credentials) or ``MqkitError`` (anything else), the driver's error kept as
    ``__cause__`` and passwords redacted. ``close`` is idempotent.
    """

    def __init__(
        self, client: aioredis.Redis, *, prefix: str = DEFAULT_PREFIX, url: str | None = None
    ) -> None:
        """Wrap ``client``, made with ``decode_responses=True``; ``close`` closes it.

        ``url`` only names the server in error messages (redacted).
        """
        self._client = client
        self._prefix = prefix
        self._where = redact_url(url) if url else "redis"
        password = BrokerURL.parse(url).password if url else None
        self._secrets = [password] if password else []
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._pipeliner = _Pipeliner(client)
        self._closed = False

    @classmethod
    async def open(
        cls, url: str, *, prefix: str = DEFAULT_PREFIX, socket_timeout: float = 10.0
    ) -> RedisIdempotencyStore:
        """Connect to ``url`` and check it answers (PING); ``socket_timeout`` is in seconds.

        Raises ``ConfigurationError`` for a malformed URL and ``ConnectionFailed`` if Redis
        is unreachable or refuses the credentials.
        """
        BrokerURL.parse(url)  # ConfigurationError, redacted, for a URL that is not one
        try:
            client = aioredis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=socket_timeout,
                socket_timeout=socket_timeout,
            )
        except ValueError as exc:  # from_url's messages name the option, never the URL
            raise ConfigurationError(f"bad Redis URL {redact_url(url)!r}: {exc}") from exc
        store = cls(client, prefix=prefix, url=url)
        try:
            await store._call(client.ping())
        except BaseException:
            await client.aclose()
            raise
        return store

    async def claim(self, key: str, lease: float) -> Claim:
        """NEW (now held for ``lease`` seconds), DONE, or BUSY (another live claim)."""
        name, px = self._prefix + key, _millis(lease)
        found = await self._call(
            self._pipeliner.submit(lambda pipe: _run_script(pipe, self._claim, name, px))
        )
        if found == "new":
            return Claim.NEW
        return Claim.DONE if found == "done" else Claim.BUSY

    async def complete(self, key: str, ttl: float) -> None:
        """Record ``key`` as done for ``ttl`` seconds, whoever held it."""
        name, px = self._prefix + key, _millis(ttl)
        await self._call(self._pipeliner.submit(lambda pipe: pipe.set(name, "done", px=px)))

    async def release(self, key: str) -> None:
        """Drop a claim so a retry can take it; a done key is kept. Safe to call twice."""
        name = self._prefix + key
        await self._call(
            self._pipeliner.submit(lambda pipe: _run_script(pipe, self._release, name))
        )

    async def close(self) -> None:
        """Close the connections. Safe to call twice."""
        if not self._closed:
            self._closed = True
            await self._client.aclose()

    async def _call(self, pending: Awaitable[T]) -> T:
        try:
            return await pending
        except AuthenticationError as exc:
            raise ConnectionFailed(
                f"authentication failed for Redis at {self._where}: {self._safe(exc)}"
            ) from exc
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise ConnectionFailed(
                f"cannot reach Redis at {self._where}: {self._safe(exc)}"
            ) from exc
        except RedisError as exc:
            raise MqkitError(f"Redis at {self._where} failed: {self._safe(exc)}") from exc

    def _safe(self, exc: BaseException) -> str:
        return redact_text(str(exc), self._secrets)
