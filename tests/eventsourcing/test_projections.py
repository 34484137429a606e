"""Projections over the global stream: two read models, checkpoints, rebuild, read-your-writes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mqkit.eventsourcing import (
    MemoryEventStore,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    StoreTransaction,
)
from tests.eventsourcing.domain import TYPES, Account, BalanceView, HistoryView
from tests.eventsourcing.test_aggregate_store import tell_seed_story


async def read_models(store: Any, *views: Any) -> list[list[tuple[object, ...]]]:
    async with store.transaction() as tx:
        return [await view.rows(tx) for view in views]


async def test_a_balance_view_and_a_history_are_built_from_one_stream(
    sql_store: Any, prefix: str
) -> None:
    # given two accounts' events and two projections
    repo = Repository(sql_store, Account, TYPES)
    await tell_seed_story(repo, "a")
    await tell_seed_story(repo, "b")
    balances, history = BalanceView(prefix), HistoryView(prefix)
    runner = ProjectionRunner(sql_store, [balances, history], batch_size=3)
    await runner.setup()
    # when both catch up
    applied = await runner.catch_up()
    # then each saw all ten events and holds its own view of them
    balance_rows, history_rows = await read_models(sql_store, balances, history)
    assert applied == 20
    assert balance_rows == [("a", 500), ("b", 500)]
    assert [(r[1], r[3]) for r in history_rows[:4]] == [("a", 1000), ("a", 200), ("a", 50),
                                                        ("a", 350)]
    assert len(history_rows) == 8


async def test_a_rebuilt_projection_equals_the_live_one(sql_store: Any, prefix: str) -> None:
    # given projections that followed events as they were written
    repo = Repository(sql_store, Account, TYPES)
    balances, history = BalanceView(prefix), HistoryView(prefix)
    runner = ProjectionRunner(sql_store, [balances, history], batch_size=4)
    await runner.setup()
    for name in ("x", "y", "z"):
        await tell_seed_story(repo, name)
        await runner.catch_up()
    live = await read_models(sql_store, balances, history)
    # when both are rebuilt from zero
    replayed = [await runner.rebuild("balances"), await runner.rebuild("history")]
    # then they replayed every event and ended identical to the live views
    assert replayed == [15, 15]
    assert await read_models(sql_store, balances, history) == live


async def test_a_failing_batch_rolls_back_the_read_model_with_its_checkpoint(
    sql_store: Any, prefix: str
) -> None:
    # given a balance view whose handler fails on the fourth event
    repo = Repository(sql_store, Account, TYPES)
    await tell_seed_story(repo, "a")
    view = BalanceView(prefix)
    calls = 0
    real_handle = view.handle

    async def flaky(event: RecordedEvent, tx: StoreTransaction) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise RuntimeError("boom")
        await real_handle(event, tx)

    view.handle = flaky  # type: ignore[method-assign]
    runner = ProjectionRunner(sql_store, [view], batch_size=10)
    await runner.setup()
    # when it catches up and fails mid-batch
    with pytest.raises(RuntimeError):
        await runner.catch_up()
    # then neither the rows nor the checkpoint moved; a retry applies all five exactly once
    assert await sql_store.load_checkpoint("balances") == 0
    assert (await read_models(sql_store, view))[0] == []
    await runner.catch_up()
    assert (await read_models(sql_store, view))[0] == [("a", 500)]


async def test_a_restarted_runner_continues_from_its_checkpoint(
    sql_store: Any, prefix: str
) -> None:
    # given a history projection that caught up, then stopped
    repo = Repository(sql_store, Account, TYPES)
    await tell_seed_story(repo, "a")
    first = ProjectionRunner(sql_store, [HistoryView(prefix)])
    await first.setup()
    await first.catch_up()
    await tell_seed_story(repo, "b")
    # when a new runner starts over the same store
    second = ProjectionRunner(sql_store, [HistoryView(prefix)])
    await second.setup()
    applied = await second.catch_up()
    # then it applies only the five new events, and no movement is recorded twice
    history = (await read_models(sql_store, HistoryView(prefix)))[0]
    assert applied == 5
    assert len(history) == 8 and len({r[0] for r in history}) == 8


async def test_read_your_own_writes_waits_until_the_projection_reached_the_position(
    sql_store: Any, prefix: str
) -> None:
    # given a running projection
    view = BalanceView(prefix)
    runner = ProjectionRunner(sql_store, [view])
    await runner.setup()
    running = asyncio.create_task(runner.run())
    repo = Repository(sql_store, Account, TYPES)
    try:
        # when a command is saved and the caller waits for its position
        account = await repo.load("me")
        account.open("me")
        account.deposit(42)
        recorded = await repo.save(account)
        await runner.wait_for(recorded[-1].position, timeout=10)
        # then the read model already shows the write
        assert (await read_models(sql_store, view))[0] == [("me", 42)]
    finally:
        runner.stop()
        await running


async def test_waiting_for_a_position_never_written_times_out() -> None:
    # given a runner over an empty memory store
    class Nothing:
        name = "nothing"

        async def setup(self, tx: StoreTransaction) -> None: ...

        async def reset(self, tx: StoreTransaction) -> None: ...

        async def handle(self, event: RecordedEvent, tx: StoreTransaction) -> None: ...

    runner = ProjectionRunner(MemoryEventStore(), [Nothing()], poll_interval=0.01)
    # when it waits for position 1, then it gives up with a TimeoutError naming the projection
    with pytest.raises(TimeoutError, match="nothing"):
        await runner.wait_for(1, timeout=0.05)


async def test_projections_run_on_the_memory_store_with_python_state() -> None:
    # given a memory store and a dict-backed balance projection
    store = MemoryEventStore()
    repo = Repository(store, Account, TYPES)
    await tell_seed_story(repo, "m")

    class Balances:
        name = "balances"

        def __init__(self) -> None:
            self.balances: dict[str, int] = {}

        async def setup(self, tx: StoreTransaction) -> None: ...

        async def reset(self, tx: StoreTransaction) -> None:
            self.balances.clear()

        async def handle(self, event: RecordedEvent, tx: StoreTransaction) -> None:
            sign = {"MoneyDeposited": 1, "MoneyWithdrawn": -1}.get(event.type)
            if sign:
                account = event.stream.split("-", 1)[1]
                self.balances[account] = self.balances.get(account, 0) + sign * event.data[
                    "amount"]

    view = Balances()
    runner = ProjectionRunner(store, [view])
    # when it catches up and is then rebuilt
    await runner.catch_up()
    live = dict(view.balances)
    await runner.rebuild("balances")
    # then both give the seed's 500, and the checkpoint is the last position
    assert live == view.balances == {"m": 500}
    assert await store.load_checkpoint("balances") == 5


async def test_a_slow_checkpoint_read_in_wait_for_never_moves_the_runner_back() -> None:
    # given a store whose checkpoint reads answer late with what they saw when they began
    class SlowCheckpoints(MemoryEventStore):
        async def load_checkpoint(self, name: str) -> int:
            seen = await super().load_checkpoint(name)
            await asyncio.sleep(0.05)
            return seen

    class Counting:
        name = "counting"
        handled = 0

        async def setup(self, tx: StoreTransaction) -> None: ...

        async def reset(self, tx: StoreTransaction) -> None: ...

        async def handle(self, event: RecordedEvent, tx: StoreTransaction) -> None:
            Counting.handled += 1

    store = SlowCheckpoints()
    repo = Repository(store, Account, TYPES)
    runner = ProjectionRunner(store, [Counting()], poll_interval=0.01)
    await runner.setup()
    running = asyncio.create_task(runner.run())
    try:
        # when events are saved and a caller waits while the runner applies them
        await tell_seed_story(repo, "slow")
        last = (await store.read_all(0, limit=1000))[-1].position
        await runner.wait_for(last, timeout=5)
        await asyncio.sleep(0.2)  # several polls: a moved-back position would re-apply
    finally:
        runner.stop()
        await running
    # then every event was applied exactly once
    assert Counting.handled == last == 5
