"""PostgresIdempotencyStore against a real Postgres: claim states, expiry, exactly-once effects."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from mqkit.errors import ConfigurationError, ConnectionFailed
from mqkit.stores.base import Claim, TransactionalIdempotencyStore
from mqkit.stores.factory import open_idempotency_store
from mqkit.stores.postgres import PostgresIdempotencyStore


@pytest.fixture
def table() -> str:
    """A table name of this test's own, so runs and tests never share keys."""
    return f"mqkit_test_idem_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(postgres_url: str, table: str) -> AsyncIterator[PostgresIdempotencyStore]:
    opened = await PostgresIdempotencyStore.open(postgres_url, table=table)
    yield opened
    await opened.close()


@pytest.fixture
async def payments(postgres_url: str, table: str) -> AsyncIterator[sql.Identifier]:
    """A fresh payments table; it and the store's table are dropped afterwards."""
    name = sql.Identifier(f"{table}_payments")
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE TABLE {} (id text, amount int)").format(name))
    yield name
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
        await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


async def pay(
    store: PostgresIdempotencyStore, payments: sql.Identifier, key: str, *, pause: float = 0
) -> bool:
    """Record a payment under ``key`` in a transaction; True if this call wrote it."""
    async with store.transaction(key, ttl=60) as tx:
        if tx is None:
            return False
        await asyncio.sleep(pause)
        insert = sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(payments)
        await tx.connection.execute(insert, (key, 100))
        return True


async def rows(postgres_url: str, payments: sql.Identifier) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        cur = await conn.execute(sql.SQL("SELECT id, amount FROM {} ORDER BY id").format(payments))
        return await cur.fetchall()


async def test_is_a_transactional_idempotency_store(store: PostgresIdempotencyStore) -> None:
    # Given an opened store / Then it satisfies the transactional protocol
    checked: TransactionalIdempotencyStore = store
    assert isinstance(checked, TransactionalIdempotencyStore)


async def test_first_claim_is_new_and_second_is_busy(store: PostgresIdempotencyStore) -> None:
    # Given a key nobody has claimed
    # When two workers claim it
    first = await store.claim("order-1", lease=30)
    second = await store.claim("order-1", lease=30)
    # Then the first holds it and the second sees it busy
    assert (first, second) == (Claim.NEW, Claim.BUSY)


async def test_claims_from_two_stores_give_exactly_one_new(
    postgres_url: str, store: PostgresIdempotencyStore, table: str
) -> None:
    # Given a second store (as another process would have) on the same table
    other = await PostgresIdempotencyStore.open(postgres_url, table=table)
    try:
        # When both claim one key at once
        results = await asyncio.gather(
            store.claim("order-1", lease=30), other.claim("order-1", lease=30)
        )
    finally:
        await other.close()
    # Then exactly one holds it
    assert sorted(r.value for r in results) == ["busy", "new"]


async def test_completed_key_is_done(store: PostgresIdempotencyStore) -> None:
    # Given a claimed key
    await store.claim("order-1", lease=30)
    # When the handler completes it
    await store.complete("order-1", ttl=60)
    # Then a redelivery sees it done
    assert await store.claim("order-1", lease=30) is Claim.DONE


async def test_released_key_can_be_claimed_again(store: PostgresIdempotencyStore) -> None:
    # Given a claim whose handler failed
    await store.claim("order-1", lease=30)
    # When the worker releases it
    await store.release("order-1")
    # Then a retry takes it as new
    assert await store.claim("order-1", lease=30) is Claim.NEW


async def test_release_keeps_a_done_key(store: PostgresIdempotencyStore) -> None:
    # Given a completed key
    await store.claim("order-1", lease=30)
    await store.complete("order-1", ttl=60)
    # When a late release arrives
    await store.release("order-1")
    # Then the key is still done
    assert await store.claim("order-1", lease=30) is Claim.DONE


async def test_expired_lease_counts_as_new(store: PostgresIdempotencyStore) -> None:
    # Given a claim whose worker died holding a 50 ms lease
    await store.claim("order-1", lease=0.05)
    # When the lease runs out
    await asyncio.sleep(0.15)
    # Then another worker takes the key as new
    assert await store.claim("order-1", lease=30) is Claim.NEW


async def test_done_key_expires_after_ttl(store: PostgresIdempotencyStore) -> None:
    # Given a key completed with a 50 ms ttl
    await store.claim("order-1", lease=30)
    await store.complete("order-1", ttl=0.05)
    # When the ttl has passed
    await asyncio.sleep(0.15)
    # Then the key is forgotten and new again
    assert await store.claim("order-1", lease=30) is Claim.NEW


async def test_transaction_commits_effect_and_key_together(
    postgres_url: str, store: PostgresIdempotencyStore, payments: sql.Identifier
) -> None:
    # Given a payments table
    # When the same message is handled twice in transactions
    first = await pay(store, payments, "pay-1")
    second = await pay(store, payments, "pay-1")
    # Then only the first wrote, and the payment exists once
    assert (first, second) == (True, False)
    assert await rows(postgres_url, payments) == [("pay-1", 100)]
    assert await store.claim("pay-1", lease=5) is Claim.DONE


async def test_transaction_rolls_back_effect_and_key_on_error(
    postgres_url: str, store: PostgresIdempotencyStore, payments: sql.Identifier
) -> None:
    # Given a payments table
    # When the handler fails after writing its effect
    with pytest.raises(ZeroDivisionError):
        async with store.transaction("pay-1", ttl=60) as tx:
            assert tx is not None
            insert = sql.SQL("INSERT INTO {} VALUES ('pay-1', 100)").format(payments)
            await tx.connection.execute(insert)
            _ = 1 / 0
    # Then neither the effect nor the key was kept
    assert await rows(postgres_url, payments) == []
    assert await store.claim("pay-1", lease=5) is Claim.NEW


async def test_concurrent_transactions_on_one_key_make_one_effect(
    postgres_url: str, store: PostgresIdempotencyStore, payments: sql.Identifier
) -> None:
    # Given a payments table
    # When two deliveries of one message are handled at the same time
    results = await asyncio.gather(
        pay(store, payments, "pay-1", pause=0.1), pay(store, payments, "pay-1", pause=0.1)
    )
    # Then the second waited on the key, saw it done, and exactly one payment exists
    assert sorted(results) == [False, True]
    assert await rows(postgres_url, payments) == [("pay-1", 100)]


async def test_transaction_after_a_rolled_back_one_takes_the_key(
    postgres_url: str, store: PostgresIdempotencyStore, payments: sql.Identifier
) -> None:
    # Given a first delivery that fails while a second waits on the same key
    async def failing() -> None:
        async with store.transaction("pay-1", ttl=60) as tx:
            assert tx is not None
            await asyncio.sleep(0.1)
            raise RuntimeError("handler crashed")

    first = asyncio.create_task(failing())
    await asyncio.sleep(0.03)
    # When the second goes ahead after the rollback
    second = await pay(store, payments, "pay-1")
    with pytest.raises(RuntimeError):
        await first
    # Then the second wrote the only payment
    assert second is True
    assert await rows(postgres_url, payments) == [("pay-1", 100)]


async def test_cancelled_transaction_rolls_back(
    postgres_url: str, store: PostgresIdempotencyStore, payments: sql.Identifier
) -> None:
    # Given a handler cancelled while its transaction is open
    written = asyncio.Event()

    async def handle() -> None:
        async with store.transaction("pay-1", ttl=60) as tx:
            assert tx is not None
            insert = sql.SQL("INSERT INTO {} VALUES ('pay-1', 100)").format(payments)
            await tx.connection.execute(insert)
            written.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(handle())
    await written.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # When the message is redelivered
    again = await pay(store, payments, "pay-1")
    # Then the cancelled effect was rolled back and the redelivery wrote the only payment
    assert again is True
    assert await rows(postgres_url, payments) == [("pay-1", 100)]


async def test_transaction_takes_over_a_busy_claim(
    postgres_url: str, store: PostgresIdempotencyStore, payments: sql.Identifier
) -> None:
    # Given a key claimed outside a transaction
    await store.claim("pay-1", lease=30)
    # When a transaction for the key runs
    wrote = await pay(store, payments, "pay-1")
    # Then it takes the key over and commits it done
    assert wrote is True
    assert await store.claim("pay-1", lease=30) is Claim.DONE


async def test_factory_opens_a_postgres_store(postgres_url: str, table: str) -> None:
    # Given a postgresql:// URL / When the factory opens it / Then it is the Postgres store
    opened = await open_idempotency_store(postgres_url, table=table)
    try:
        assert isinstance(opened, PostgresIdempotencyStore)
    finally:
        await opened.close()


async def test_wrong_password_says_authentication_failed(postgres_url: str) -> None:
    # Given the test server's URL with a password it does not accept
    parts = urlsplit(postgres_url)
    user = parts.username or "mqkit"
    url = urlunsplit(parts._replace(netloc=f"{user}:wrong-pw@{parts.hostname}:{parts.port}"))
    # When opening
    with pytest.raises(ConnectionFailed) as caught:
        await PostgresIdempotencyStore.open(url)
    # Then it says so, hides the password and keeps the driver's error
    assert "authentication failed" in str(caught.value)
    assert "wrong-pw" not in str(caught.value)
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)


async def test_unreachable_server_is_connection_failed() -> None:
    # Given a URL with a password, pointing where nothing listens
    url = "postgresql://mqkit:s3cret-pw@127.0.0.1:1/mqkit"
    # When opening / Then it is a connection failure naming the server, password hidden
    with pytest.raises(ConnectionFailed) as caught:
        await PostgresIdempotencyStore.open(url, connect_timeout=2)
    assert "127.0.0.1:1" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)


async def test_bad_table_name_is_refused(postgres_url: str) -> None:
    # Given a table name that is not an identifier / When opening / Then it is refused
    with pytest.raises(ConfigurationError, match="table name"):
        await PostgresIdempotencyStore.open(postgres_url, table="idem; DROP TABLE x")


async def test_close_twice_is_fine_and_later_calls_are_refused(
    postgres_url: str, table: str
) -> None:
    # Given a closed store
    opened = await PostgresIdempotencyStore.open(postgres_url, table=table)
    await opened.close()
    # When it is closed again / Then nothing happens
    await opened.close()
    # And a claim is refused
    with pytest.raises(RuntimeError, match="closed"):
        await opened.claim("order-1", lease=5)
