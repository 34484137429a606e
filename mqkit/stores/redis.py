"""Redis idempotency store: keys with native expiry, shared by every worker that can reach Redis.

Features: ``claim``/``complete``/``release`` with leases and a ttl, each one atomic round trip.
A key is ``<prefix><key>`` holding ``busy`` (expires after the lease) or ``done`` (expires
after the ttl); Redis's own expiry forgets them, so nothing needs sweeping.

URL: ``redis://[user:password@]host:port/db`` or ``rediss://`` for TLS; options as
``redis.asyncio.Redis.from_url`` accepts them. Needs the ``redis`` extra (``redis>=5``).

Limits: not transactional. Redis is not the database a handler writes its effects to, so
effects and key cannot commit together; use the SQLite or Postgres store for that. Expiry
has Redis's millisecond precision; leases shorter than 1 ms are rounded up.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import TypeVar

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
        found = await self._call(self._claim(keys=[self._prefix + key], args=[_millis(lease)]))
        if found == "new":
            return Claim.NEW
        return Claim.DONE if found == "done" else Claim.BUSY

    async def complete(self, key: str, ttl: float) -> None:
        """Record ``key`` as done for ``ttl`` seconds, whoever held it."""
        await self._call(self._client.set(self._prefix + key, "done", px=_millis(ttl)))

    async def release(self, key: str) -> None:
        """Drop a claim so a retry can take it; a done key is kept. Safe to call twice."""
        await self._call(self._release(keys=[self._prefix + key]))

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
