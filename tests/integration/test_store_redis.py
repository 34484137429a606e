"""RedisIdempotencyStore against a real Redis: the three claim states and expiry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from mqkit.errors import ConfigurationError, ConnectionFailed, MqkitError
from mqkit.stores.base import Claim, IdempotencyStore, TransactionalIdempotencyStore
from mqkit.stores.factory import open_idempotency_store
from mqkit.stores.redis import RedisIdempotencyStore


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so runs and tests never share keys."""
    return f"mqkit:test:{uuid.uuid4().hex}:"


@pytest.fixture
async def store(redis_url: str, prefix: str) -> AsyncIterator[RedisIdempotencyStore]:
    opened = await RedisIdempotencyStore.open(redis_url, prefix=prefix)
    yield opened
    await opened.close()
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=10_000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_is_an_idempotency_store_but_not_transactional(
    store: RedisIdempotencyStore,
) -> None:
    # Given an opened store / Then it is a plain store: Redis cannot hold a handler's effects
    checked: IdempotencyStore = store
    assert isinstance(checked, IdempotencyStore)
    assert not isinstance(checked, TransactionalIdempotencyStore)


async def test_first_claim_is_new_and_second_is_busy(store: RedisIdempotencyStore) -> None:
    # Given a key nobody has claimed
    # When two workers claim it
    first = await store.claim("order-1", lease=30)
    second = await store.claim("order-1", lease=30)
    # Then the first holds it and the second sees it busy
    assert (first, second) == (Claim.NEW, Claim.BUSY)


async def test_concurrent_claims_give_exactly_one_new(store: RedisIdempotencyStore) -> None:
    # Given many deliveries of one message at once
    # When each claims the key
    results = await asyncio.gather(*(store.claim("order-1", lease=30) for _ in range(20)))
    # Then exactly one holds it
    assert results.count(Claim.NEW) == 1
    assert results.count(Claim.BUSY) == 19


async def test_completed_key_is_done(store: RedisIdempotencyStore) -> None:
    # Given a claimed key
    await store.claim("order-1", lease=30)
    # When the handler completes it
    await store.complete("order-1", ttl=60)
    # Then a redelivery sees it done
    assert await store.claim("order-1", lease=30) is Claim.DONE


async def test_released_key_can_be_claimed_again(store: RedisIdempotencyStore) -> None:
    # Given a claim whose handler failed
    await store.claim("order-1", lease=30)
    # When the worker releases it
    await store.release("order-1")
    # Then a retry takes it as new
    assert await store.claim("order-1", lease=30) is Claim.NEW


async def test_release_keeps_a_done_key(store: RedisIdempotencyStore) -> None:
    # Given a completed key
    await store.claim("order-1", lease=30)
    await store.complete("order-1", ttl=60)
    # When a late release arrives
    await store.release("order-1")
    # Then the key is still done
    assert await store.claim("order-1", lease=30) is Claim.DONE


async def test_expired_lease_counts_as_new(store: RedisIdempotencyStore) -> None:
    # Given a claim whose worker died holding a 50 ms lease
    await store.claim("order-1", lease=0.05)
    # When the lease runs out
    await asyncio.sleep(0.15)
    # Then another worker takes the key as new
    assert await store.claim("order-1", lease=30) is Claim.NEW


async def test_done_key_expires_after_ttl(store: RedisIdempotencyStore) -> None:
    # Given a key completed with a 50 ms ttl
    await store.claim("order-1", lease=30)
    await store.complete("order-1", ttl=0.05)
    # When the ttl has passed
    await asyncio.sleep(0.15)
    # Then the key is forgotten and new again
    assert await store.claim("order-1", lease=30) is Claim.NEW


async def test_keys_live_under_the_prefix(
    store: RedisIdempotencyStore, redis_url: str, prefix: str
) -> None:
    # Given a completed key
    await store.claim("order-1", lease=30)
    await store.complete("order-1", ttl=60)
    # When Redis is read directly
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        value = await client.get(f"{prefix}order-1")
        ttl_ms = await client.pttl(f"{prefix}order-1")
    finally:
        await client.aclose()
    # Then the key sits under the prefix, done, expiring within the ttl
    assert value == "done"
    assert 0 < ttl_ms <= 60_000


async def test_factory_opens_a_redis_store(redis_url: str) -> None:
    # Given a redis:// URL / When the factory opens it / Then it is the Redis store
    opened = await open_idempotency_store(redis_url)
    try:
        assert isinstance(opened, RedisIdempotencyStore)
    finally:
        await opened.close()


async def test_unreachable_redis_is_connection_failed_without_password() -> None:
    # Given a URL with a password, pointing where nothing listens
    url = "redis://:s3cret-pw@127.0.0.1:1/0"
    # When opening
    with pytest.raises(ConnectionFailed) as caught:
        await RedisIdempotencyStore.open(url, socket_timeout=2)
    # Then the error names the server, hides the password and keeps the driver's error
    assert "127.0.0.1:1" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
    assert caught.value.__cause__ is not None


async def test_malformed_url_is_a_configuration_error() -> None:
    # Given a URL whose option is not a number
    url = "redis://:s3cret-pw@127.0.0.1:6379/0?health_check_interval=soon"
    # When opening / Then the configuration is refused, the password hidden
    with pytest.raises(ConfigurationError) as caught:
        await RedisIdempotencyStore.open(url)
    assert "health_check_interval" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)


async def test_close_twice_is_fine(redis_url: str, prefix: str) -> None:
    # Given an opened store
    opened = await RedisIdempotencyStore.open(redis_url, prefix=prefix)
    # When it is closed twice
    await opened.close()
    await opened.close()
    # Then the second close did nothing and raised nothing
    assert opened._closed


async def test_concurrent_commands_share_round_trips(
    store: RedisIdempotencyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store whose round trips are counted: pipelines and single commands
    round_trips = 0
    make_pipeline, execute = store._client.pipeline, store._client.execute_command

    def counted_pipeline(*args: object, **kwargs: object) -> object:
        nonlocal round_trips
        round_trips += 1
        return make_pipeline(*args, **kwargs)  # type: ignore[arg-type]

    async def counted_command(*args: object, **kwargs: object) -> object:
        nonlocal round_trips
        round_trips += 1
        return await execute(*args, **kwargs)

    monkeypatch.setattr(store._client, "pipeline", counted_pipeline)
    monkeypatch.setattr(store._client, "execute_command", counted_command)
    # When 50 workers claim and complete keys of their own at once
    async def work(n: int) -> tuple[Claim, Claim]:
        first = await store.claim(f"k{n}", lease=30)
        await store.complete(f"k{n}", ttl=60)
        return first, await store.claim(f"k{n}", lease=30)

    results = await asyncio.gather(*(work(n) for n in range(50)))
    # Then every worker got its own answers, and 150 commands took a handful of round trips
    assert results == [(Claim.NEW, Claim.DONE)] * 50
    assert round_trips <= 6


async def test_a_failing_command_fails_only_its_caller(
    store: RedisIdempotencyStore, redis_url: str, prefix: str
) -> None:
    # Given a key that holds a list, which the claim script cannot read as a string
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.rpush(f"{prefix}not-a-key", "x")
    finally:
        await client.aclose()
    # When it is claimed together with good keys, in one pipeline
    results = await asyncio.gather(
        store.claim("a", lease=30), store.claim("not-a-key", lease=30),
        store.claim("b", lease=30), return_exceptions=True,
    )
    # Then only that claim failed, as an MqkitError naming Redis's complaint
    assert results[0] == Claim.NEW and results[2] == Claim.NEW
    assert isinstance(results[1], MqkitError) and "WRONGTYPE" in str(results[1])


async def test_scripts_flushed_from_redis_are_loaded_again(
    store: RedisIdempotencyStore, redis_url: str
) -> None:
    # Given a store that ran its scripts, then a Redis that forgot them
    assert await store.claim("before", lease=30) == Claim.NEW
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.script_flush()
    finally:
        await client.aclose()
    # When it claims and releases again / Then the scripts are loaded and run
    assert await store.claim("after", lease=30) == Claim.NEW
    await store.release("after")
    assert await store.claim("after", lease=30) == Claim.NEW
