"""The orchestrator's rules: order, compensation, timeouts, retries, stuck, idempotent start."""

from __future__ import annotations

import asyncio

import pytest

from mqkit.middleware import RetryPolicy
from mqkit.saga import (
    Orchestrator,
    Phase,
    Saga,
    SagaConflict,
    SagaState,
    SagaStore,
    Status,
    Step,
    StepContext,
    StepFailed,
)
from mqkit.saga.store_memory import MemorySagaStore
from mqkit.testing.clock import VirtualClock
from tests.saga.orderflow import FAST, STEPS, UNDO, Ledger, order_saga, run_on


async def test_happy_path_runs_every_step_once_in_order(any_store: SagaStore) -> None:
    # Given the order saga on each saga log
    ledger = Ledger()
    orchestrator = Orchestrator(any_store)

    # When an order goes through
    outcome = await orchestrator.start(order_saga(ledger), {"order_id": "o-1"})

    # Then every step ran once, in order, and the log says completed
    assert outcome.state is SagaState.COMPLETED
    assert ledger.calls == list(STEPS)
    assert outcome.results["ship-order"] == {"done": "ship-order"}
    record = await orchestrator.get(outcome.id)
    assert record.state is SagaState.COMPLETED
    assert record.data == {"order_id": "o-1"}
    assert [e.seq for e in record.entries] == list(range(1, len(record.entries) + 1))


@pytest.mark.parametrize("failing", STEPS)
async def test_a_failed_step_compensates_exactly_the_completed_steps_in_reverse(
    failing: str,
) -> None:
    # Given a saga whose step `failing` refuses
    ledger = Ledger(fail_at=failing)
    orchestrator = Orchestrator(MemorySagaStore())

    # When it runs
    outcome = await orchestrator.start(order_saga(ledger), {"order_id": "o-2"})

    # Then the steps before it ran, and only those were undone, last first
    done = list(STEPS[: STEPS.index(failing)])
    assert ledger.calls == done + [UNDO[s] for s in reversed(done)]
    assert outcome.state is SagaState.COMPENSATED
    assert outcome.error is not None and failing in outcome.error


@pytest.mark.parametrize("hanging", STEPS)
async def test_a_timed_out_step_is_compensated_too(hanging: str) -> None:
    # Given a step that never answers, with a 5 s timeout on a virtual clock
    clock = VirtualClock()
    ledger = Ledger(hang_at=hanging)
    orchestrator = Orchestrator(MemorySagaStore(), clock=clock)

    # When the saga runs and the clock passes the timeout
    outcome = await run_on(clock, orchestrator.start(order_saga(ledger, timeout=5.0), "o-3"))

    # Then the hanging step (it may have happened) is compensated first, then the others
    done = list(STEPS[: STEPS.index(hanging)])
    assert ledger.calls == done + [UNDO[s] for s in reversed([*done, hanging])]
    assert outcome.state is SagaState.COMPENSATED
    record = await orchestrator.get(outcome.id)
    assert any(e.status == Status.TIMED_OUT.value and e.step_name == hanging
               for e in record.entries)


async def test_a_compensation_that_fails_twice_then_succeeds_completes_compensation() -> None:
    # Given a payment failure and an inventory service down for two calls
    clock = VirtualClock()
    ledger = Ledger(fail_at="charge-payment", failing_undo={"release-inventory": 2})
    orchestrator = Orchestrator(MemorySagaStore(), clock=clock)

    # When the saga runs (backoffs pass on the virtual clock)
    outcome = await run_on(clock, orchestrator.start(order_saga(ledger), "o-4"))

    # Then the release was retried into success and the order cancelled after it
    assert outcome.state is SagaState.COMPENSATED
    assert ledger.calls == ["create-order", "reserve-inventory", "release-inventory",
                            "cancel-order"]
    record = await orchestrator.get(outcome.id)
    release = [e.status for e in record.entries
               if e.phase is Phase.COMPENSATION and e.step_name == "reserve-inventory"]
    assert release == ["started", "retrying", "started", "retrying", "started", "done"]
    assert clock.now() > 0  # the retries waited (virtually) for their backoff


async def test_a_compensation_that_never_succeeds_leaves_the_saga_stuck() -> None:
    # Given a release that always fails, with four attempts allowed
    clock = VirtualClock()
    ledger = Ledger(fail_at="charge-payment", failing_undo={"release-inventory": -1})
    policy = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=10.0)
    orchestrator = Orchestrator(MemorySagaStore(), clock=clock)

    # When the saga runs
    saga = order_saga(ledger, compensation_retry=policy)
    outcome = await run_on(clock, orchestrator.start(saga, "o-5"))

    # Then it is stuck (not compensated, not dropped), the order is not cancelled behind it
    assert outcome.state is SagaState.STUCK
    assert outcome.error is not None and "release-inventory" in outcome.error
    assert "cancel-order" not in ledger.calls
    stuck = await orchestrator.store.list(states=[SagaState.STUCK])
    assert [s.id for s in stuck] == [outcome.id]
    record = await orchestrator.get(outcome.id)
    attempts = [e for e in record.entries
                if e.phase is Phase.COMPENSATION and e.status == "started"]
    assert len(attempts) == 4


async def test_recover_leaves_a_stuck_saga_and_resume_finishes_it() -> None:
    # Given a stuck saga
    clock = VirtualClock()
    ledger = Ledger(fail_at="charge-payment", failing_undo={"release-inventory": -1})
    policy = RetryPolicy(max_attempts=2, base_delay=1.0, max_delay=10.0)
    saga = order_saga(ledger, compensation_retry=policy)
    orchestrator = Orchestrator(MemorySagaStore(), [saga], clock=clock)
    stuck = await run_on(clock, orchestrator.start(saga, "o-6"))

    # When recover runs, then an operator fixes the service and resumes it
    recovered = await orchestrator.recover()
    ledger.failing_undo["release-inventory"] = 0
    outcome = await run_on(clock, orchestrator.resume(stuck.id))

    # Then recover did not touch it, and resume compensated it in order
    assert recovered == []
    assert outcome.state is SagaState.COMPENSATED
    assert ledger.calls[-2:] == ["release-inventory", "cancel-order"]


async def test_transient_action_failures_are_retried_with_the_same_idempotency_key() -> None:
    # Given a step that fails twice with ConnectionError, then works
    keys: list[str] = []

    async def flaky(ctx: StepContext) -> str:
        keys.append(ctx.idempotency_key)
        if len(keys) < 3:
            raise ConnectionError("blip")
        return "ok"

    clock = VirtualClock()
    saga = Saga("flaky", [Step("call", flaky, retry=FAST)])
    orchestrator = Orchestrator(MemorySagaStore(), clock=clock)

    # When it runs
    outcome = await run_on(clock, orchestrator.start(saga, None, saga_id="s-1"))

    # Then it completed on the third attempt, every attempt with one key
    assert outcome.state is SagaState.COMPLETED
    assert keys == ["s-1:call:action"] * 3


async def test_starting_a_saga_id_twice_runs_it_once() -> None:
    # Given a completed saga with a chosen id
    ledger = Ledger()
    orchestrator = Orchestrator(MemorySagaStore())
    saga = order_saga(ledger)
    first = await orchestrator.start(saga, {"order_id": "o-7"}, saga_id="order-o-7")

    # When the same id is started again with the same data
    again = await orchestrator.start(saga, {"order_id": "o-7"}, saga_id="order-o-7")

    # Then it reports the first run and no step ran twice
    assert again.state is first.state is SagaState.COMPLETED
    assert ledger.calls == list(STEPS)


async def test_starting_a_saga_id_with_other_data_is_a_conflict() -> None:
    orchestrator = Orchestrator(MemorySagaStore())
    saga = order_saga(Ledger())
    await orchestrator.start(saga, {"order_id": "o-8"}, saga_id="order-o-8")

    with pytest.raises(SagaConflict):
        await orchestrator.start(saga, {"order_id": "other"}, saga_id="order-o-8")


async def test_concurrent_sagas_keep_their_own_logs() -> None:
    # Given twenty orders at once: each holds funds, every third is refused at charge
    held: list[int] = []
    released: list[int] = []

    async def hold(ctx: StepContext) -> None:
        held.append(ctx.data)

    async def release(ctx: StepContext) -> None:
        released.append(ctx.data)

    async def charge(ctx: StepContext) -> None:
        if ctx.data % 3 == 0:
            raise StepFailed("declined")

    saga = Saga("pay", [Step("hold", hold, release), Step("charge", charge)])
    orchestrator = Orchestrator(MemorySagaStore())

    # When they run concurrently
    outcomes = await asyncio.gather(*(orchestrator.start(saga, i) for i in range(20)))

    # Then each ended by its own rule: exactly the refused orders released their hold
    for i, outcome in enumerate(outcomes):
        expected = SagaState.COMPENSATED if i % 3 == 0 else SagaState.COMPLETED
        assert outcome.state is expected
    assert sorted(held) == list(range(20))
    assert sorted(released) == [i for i in range(20) if i % 3 == 0]
