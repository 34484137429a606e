"""The seed's account on every store: balances, snapshots, concurrency, stream reads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mqkit.eventsourcing import NO_STREAM, ConcurrencyError, NewEvent, Repository
from tests.eventsourcing.domain import TYPES, Account

SEED_STORY = [("deposit", 1000), ("withdraw", 200), ("deposit", 50), ("withdraw", 350)]


async def tell_seed_story(repo: Repository[Account], account_id: str) -> None:
    """Open the account, then one command per save, as separate requests would."""
    account = await repo.load(account_id)
    account.open("ada")
    await repo.save(account)
    for command, amount in SEED_STORY:
        account = await repo.load(account_id)
        getattr(account, command)(amount)
        await repo.save(account)


@pytest.mark.parametrize("snapshot_every", [None, 2])
async def test_the_seed_account_ends_with_a_balance_of_500(
    any_store: Any, snapshot_every: int | None
) -> None:
    # given an account opened, deposited 1000, withdrawn 200, deposited 50, withdrawn 350
    repo = Repository(any_store, Account, TYPES, snapshot_every=snapshot_every)
    await tell_seed_story(repo, "12345")
    # when it is loaded again
    account = await repo.load("12345")
    # then its balance is 500 at version 5
    assert (account.balance, account.version, account.owner) == (500, 5, "ada")


async def test_loading_from_a_snapshot_equals_loading_every_event(any_store: Any) -> None:
    # given the seed account saved with a snapshot every 2 events
    repo = Repository(any_store, Account, TYPES, snapshot_every=2)
    await tell_seed_story(repo, "12345")
    # when it is loaded with and without the snapshot
    snap = await any_store.load_snapshot("Account-12345")
    with_snapshot = await repo.load("12345")
    without = await repo.load("12345", use_snapshot=False)
    # then the latest snapshot was used, and both give the same state
    assert snap is not None and snap.version == 4 and snap.state["balance"] == 850
    assert vars(with_snapshot) == vars(without)


async def test_a_stale_writer_gets_a_concurrency_error_and_nothing_is_appended(
    any_store: Any,
) -> None:
    # given an account loaded twice at the same version
    repo = Repository(any_store, Account, TYPES)
    await tell_seed_story(repo, "1")
    first, second = await repo.load("1"), await repo.load("1")
    first.deposit(10)
    second.withdraw(500)
    # when both save
    await repo.save(first)
    with pytest.raises(ConcurrencyError) as raised:
        await repo.save(second)
    # then the second learns the stream's real version, and only the first's event is kept
    assert (raised.value.expected, raised.value.actual) == (5, 6)
    assert (await repo.load("1")).balance == 510


async def test_two_writers_racing_on_one_stream_one_wins(any_store: Any) -> None:
    # given ten writers that all expect the stream to be new
    async def write(i: int) -> str:
        try:
            await any_store.append("race", [NewEvent("Tick", {"i": i})], NO_STREAM)
        except ConcurrencyError:
            return "conflict"
        return "won"

    # when they append at once
    results = await asyncio.gather(*(write(i) for i in range(10)))
    # then exactly one wins and the stream holds exactly its event
    assert sorted(results) == ["conflict"] * 9 + ["won"]
    assert len(await any_store.read_stream("race")) == 1


async def test_reading_a_stream_from_a_version(any_store: Any) -> None:
    # given a stream of five events and another stream between them
    await any_store.append("a", [NewEvent("E", {"n": n}) for n in range(3)], NO_STREAM)
    await any_store.append("b", [NewEvent("E", {"n": 99})], NO_STREAM)
    await any_store.append("a", [NewEvent("E", {"n": n}) for n in range(3, 5)], 3)
    # when it is read from version 4
    tail = await any_store.read_stream("a", 4)
    # then the later two come back in order, with their global positions
    assert [(e.version, e.data["n"], e.position) for e in tail] == [(4, 3, 5), (5, 4, 6)]


async def test_reading_all_streams_in_global_order_from_a_position(any_store: Any) -> None:
    # given events appended to three streams in turn
    for i in range(6):
        await any_store.append(f"s{i % 3}", [NewEvent("E", {"i": i})], None)
    # when every stream is read after position 2, two at a time
    first = await any_store.read_all(2, limit=2)
    rest = await any_store.read_all(first[-1].position, limit=10)
    # then the positions continue without gaps and keep append order
    assert [e.position for e in first + rest] == [3, 4, 5, 6]
    assert [e.data["i"] for e in first + rest] == [2, 3, 4, 5]
    assert await any_store.head() == 6
