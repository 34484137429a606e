"""SqliteIdempotencyStore: the three claim states, expiry, and exactly-once transactions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mqkit.errors import ConfigurationError, ConnectionFailed
from mqkit.stores.base import Claim, TransactionalIdempotencyStore
from mqkit.stores.sqlite import SqliteIdempotencyStore


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(clock: FakeClock) -> AsyncIterator[SqliteIdempotencyStore]:
    opened = await SqliteIdempotencyStore.open(":memory:", clock=clock)
    yield opened
    await opened.close()


async def create_payments(store: SqliteIdempotencyStore) -> None:
    async with store.transaction("setup", ttl=60) as tx:
        assert tx is not None
        await tx.connection.execute("CREATE TABLE payments (id TEXT, amount INTEGER)")


async def pay(store: SqliteIdempotencyStore, key: str, amount: int) -> bool:
    """Record a payment under ``key``; True if this call wrote it."""
    async with store.transaction(key, ttl=60) as tx:
        if tx is None:
            return False
        await tx.connection.execute("INSERT INTO payments VALUES (?, ?)", (key, amount))
        return True


async def payments(store: SqliteIdempotencyStore) -> list[tuple[object, ...]]:
    async with store.transaction("read-payments", ttl=0) as tx:
        assert tx is not None
        return await tx.connection.execute("SELECT id, amount FROM payments ORDER BY id")


async def test_is_a_transactional_idempotency_store(store: SqliteIdempotencyStore) -> None:
    # Given an opened store / Then it satisfies the transactional protocol
    checked: TransactionalIdempotencyStore = store
    assert isinstance(checked, TransactionalIdempotencyStore)


async def test_first_claim_is_new_and_second_is_busy(store: SqliteIdempotencyStore) -> None:
    # Given a key nobody has claimed
    # When two workers claim it
    first = await store.claim("order-1", lease=30)
    second = await store.claim("order-1", lease=30)
    # Then the first holds it and the second sees it busy
    assert (first, second) == (Claim.NEW, Claim.BUSY)


async def test_completed_key_is_done(store: SqliteIdempotencyStore) -> None:
    # Given a claimed key
    await store.claim("order-1", lease=30)
    # When the handler completes it
    await store.complete("order-1", ttl=60)
    # Then a redelivery sees it done
    assert await store.claim("order-1", lease=30) is Claim.DONE


async def test_released_key_can_be_claimed_again(store: SqliteIdempotencyStore) -> None:
    # Given a claim whose handler failed
    await store.claim("order-1", lease=30)
    # When the worker releases it
    await store.release("order-1")
    # Then a retry takes it as new
    assert await store.claim("order-1", lease=30) is Claim.NEW


async def test_release_keeps_a_done_key(store: SqliteIdempotencyStore) -> None:
    # Given a completed key
    await store.claim("order-1", lease=30)
    await store.complete("order-1", ttl=60)
    # When a late release arrives
    await store.release("order-1")
    # Then the key is still done
    assert await store.claim("order-1", lease=30) is Claim.DONE


async def test_expired_lease_counts_as_new(store: SqliteIdempotencyStore, clock: FakeClock) -> None:
    # Given a claim whose worker died holding a 5 s lease
    await store.claim("order-1", lease=5)
    # When the lease runs out
    clock.advance(5.01)
    # Then another worker takes the key as new
    assert await store.claim("order-1", lease=5) is Claim.NEW


async def test_done_key_expires_after_ttl(store: SqliteIdempotencyStore, clock: FakeClock) -> None:
    # Given a key completed with a 60 s ttl
    await store.claim("order-1", lease=5)
    await store.complete("order-1", ttl=60)
    clock.advance(59)
    assert await store.claim("order-1", lease=5) is Claim.DONE
    # When the ttl has passed
    clock.advance(2)
    # Then the key is forgotten and new again
    assert await store.claim("order-1", lease=5) is Claim.NEW


async def test_real_short_lease_expires() -> None:
    # Given a store on the real clock and a 50 ms lease
    store = await SqliteIdempotencyStore.open(":memory:")
    try:
        await store.claim("order-1", lease=0.05)
        # When the lease passes
        await asyncio.sleep(0.1)
        # Then the key is new again
        assert await store.claim("order-1", lease=0.05) is Claim.NEW
    finally:
        await store.close()


async def test_transaction_commits_effect_and_key_together(
    store: SqliteIdempotencyStore,
) -> None:
    # Given a payments table
    await create_payments(store)
    # When the same message is handled twice in transactions
    first = await pay(store, "pay-1", 100)
    second = await pay(store, "pay-1", 100)
    # Then only the first wrote, and the payment exists once
    assert (first, second) == (True, False)
    assert await payments(store) == [("pay-1", 100)]
    assert await store.claim("pay-1", lease=5) is Claim.DONE


async def test_transaction_rolls_back_effect_and_key_on_error(
    store: SqliteIdempotencyStore,
) -> None:
    # Given a payments table
    await create_payments(store)
    # When the handler fails after writing its effect
    with pytest.raises(ZeroDivisionError):
        async with store.transaction("pay-1", ttl=60) as tx:
            assert tx is not None
            await tx.connection.execute("INSERT INTO payments VALUES (?, ?)", ("pay-1", 100))
            _ = 1 / 0
    # Then neither the effect nor the key was kept
    assert await payments(store) == []
    assert await store.claim("pay-1", lease=5) is Claim.NEW


async def test_cancelled_transaction_rolls_back_and_frees_the_store(
    store: SqliteIdempotencyStore,
) -> None:
    # Given a handler cancelled while its transaction is open
    await create_payments(store)
    written = asyncio.Event()

    async def handle() -> None:
        async with store.transaction("pay-1", ttl=60) as tx:
            assert tx is not None
            await tx.connection.execute("INSERT INTO payments VALUES ('pay-1', 100)")
            written.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(handle())
    await written.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # When the message is redelivered
    again = await pay(store, "pay-1", 100)
    # Then the cancelled effect was rolled back and the redelivery wrote the only payment
    assert again is True
    assert await payments(store) == [("pay-1", 100)]


async def test_concurrent_transactions_on_one_key_make_one_effect(
    store: SqliteIdempotencyStore,
) -> None:
    # Given a payments table
    await create_payments(store)

    # When two deliveries of one message are handled at the same time
    async def handle() -> bool:
        async with store.transaction("pay-1", ttl=60) as tx:
            if tx is None:
                return False
            await asyncio.sleep(0.02)  # let the other delivery arrive mid-transaction
            await tx.connection.execute("INSERT INTO payments VALUES (?, ?)", ("pay-1", 100))
            return True

    results = await asyncio.gather(handle(), handle())
    # Then exactly one wrote the payment
    assert sorted(results) == [False, True]
    assert await payments(store) == [("pay-1", 100)]


async def test_transaction_takes_over_an_expired_done_key(
    store: SqliteIdempotencyStore, clock: FakeClock
) -> None:
    # Given a payment handled long ago, past its ttl
    await create_payments(store)
    await pay(store, "pay-1", 100)
    clock.advance(61)
    # When the message arrives again
    again = await pay(store, "pay-1", 100)
    # Then it is handled as new
    assert again is True


async def test_executemany_writes_every_row(store: SqliteIdempotencyStore) -> None:
    # Given a payments table
    await create_payments(store)
    # When a handler writes several rows at once
    async with store.transaction("batch-1", ttl=60) as tx:
        assert tx is not None
        changed = await tx.connection.executemany(
            "INSERT INTO payments VALUES (?, ?)", [("a", 1), ("b", 2)]
        )
    # Then every row is committed
    assert changed == 2
    assert await payments(store) == [("a", 1), ("b", 2)]


async def test_connection_is_unusable_after_the_block(store: SqliteIdempotencyStore) -> None:
    # Given a transaction that has ended
    async with store.transaction("k", ttl=60) as tx:
        assert tx is not None
    # When the handler keeps the connection and uses it later
    # Then it is refused rather than writing outside the transaction
    with pytest.raises(RuntimeError, match="ended"):
        await tx.connection.execute("SELECT 1")


async def test_file_database_is_shared_by_two_stores(tmp_path: Path) -> None:
    # Given two stores (as two processes would) on one file
    path = str(tmp_path / "idem.db")
    first = await SqliteIdempotencyStore.open(path, table="idem")
    second = await SqliteIdempotencyStore.open(path, table="idem")
    try:
        # When one completes a key
        assert await first.claim("order-1", lease=30) is Claim.NEW
        assert await second.claim("order-1", lease=30) is Claim.BUSY
        await first.complete("order-1", ttl=60)
        # Then the other sees it done
        assert await second.claim("order-1", lease=30) is Claim.DONE
    finally:
        await first.close()
        await second.close()


async def test_file_database_concurrent_transactions_make_one_effect(tmp_path: Path) -> None:
    # Given two stores on one file with a payments table
    path = str(tmp_path / "idem.db")
    first = await SqliteIdempotencyStore.open(path)
    second = await SqliteIdempotencyStore.open(path)
    try:
        await create_payments(first)

        # When each handles the same message at the same time
        async def handle(store: SqliteIdempotencyStore) -> bool:
            async with store.transaction("pay-1", ttl=60) as tx:
                if tx is None:
                    return False
                await asyncio.sleep(0.02)
                await tx.connection.execute("INSERT INTO payments VALUES ('pay-1', 100)")
                return True

        results = await asyncio.gather(handle(first), handle(second))
        # Then SQLite's write lock let exactly one write the payment
        assert sorted(results) == [False, True]
        assert await payments(second) == [("pay-1", 100)]
    finally:
        await first.close()
        await second.close()


async def test_file_database_keeps_keys_after_reopen(tmp_path: Path) -> None:
    # Given a key completed and the store closed
    path = str(tmp_path / "idem.db")
    store = await SqliteIdempotencyStore.open(path)
    await store.claim("order-1", lease=30)
    await store.complete("order-1", ttl=60)
    await store.close()
    # When the store is opened again
    reopened = await SqliteIdempotencyStore.open(path)
    try:
        # Then the key is still done
        assert await reopened.claim("order-1", lease=30) is Claim.DONE
    finally:
        await reopened.close()


async def test_bad_table_name_is_refused() -> None:
    # Given a table name that would inject SQL / When opening / Then configuration is refused
    with pytest.raises(ConfigurationError, match="table name"):
        await SqliteIdempotencyStore.open(":memory:", table='idem"; DROP TABLE x; --')


async def test_unopenable_file_is_connection_failed(tmp_path: Path) -> None:
    # Given a path inside a directory that does not exist
    path = str(tmp_path / "missing" / "idem.db")
    # When opening / Then the failure is mqkit's, with sqlite's error kept as the cause
    with pytest.raises(ConnectionFailed) as caught:
        await SqliteIdempotencyStore.open(path)
    assert caught.value.__cause__ is not None


async def test_close_twice_is_fine_and_later_calls_are_refused() -> None:
    # Given a closed store
    store = await SqliteIdempotencyStore.open(":memory:")
    await store.close()
    # When it is closed again / Then nothing happens
    await store.close()
    # And a claim is refused
    with pytest.raises(RuntimeError, match="closed"):
        await store.claim("order-1", lease=5)
