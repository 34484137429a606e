"""The order flow for the crash tests: every effect is written exactly once, keyed.

Each participant effect is a row in ``effects`` inserted in the same SQLite transaction
that records the step's idempotency key (``SqliteIdempotencyStore.transaction``): running
a step again after a crash finds its key done and writes nothing. ``point()`` is called after
each effect commits and after each transition is logged: the child process SIGKILLs itself at
the chosen point.

Run as a child: ``python -m tests.saga.crash_flow LOG_DB EFFECTS_DB KILL_AT``; prints the
number of points it passed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from mqkit.saga import Orchestrator, Saga, Step, StepContext, StepFailed, Transition
from mqkit.saga.store_sqlite import SqliteSagaStore
from mqkit.stores.sqlite import SqliteIdempotencyStore

SAGAS = {"order-ok": {"order_id": "ok", "refuse": False},
         "order-bad": {"order_id": "bad", "refuse": True}}
STEPS = (("create-order", "cancel-order"), ("reserve-inventory", "release-inventory"),
         ("charge-payment", "refund-payment"), ("ship-order", "cancel-shipment"))
CREATE_EFFECTS = ("CREATE TABLE IF NOT EXISTS effects "
                  "(saga_id TEXT NOT NULL, effect TEXT NOT NULL)")


def order_saga(effects: SqliteIdempotencyStore, point: Callable[[], None]) -> Saga:
    def effect(name: str, refusable: bool = False) -> Callable[[StepContext], Awaitable[Any]]:
        async def apply(ctx: StepContext) -> Any:
            if refusable and ctx.data["refuse"]:
                raise StepFailed("card declined")
            async with effects.transaction(ctx.idempotency_key, ttl=3600) as tx:
                if tx is not None:
                    await tx.connection.execute(
                        "INSERT INTO effects (saga_id, effect) VALUES (?, ?)", (ctx.saga_id, name)
                    )
            point()  # the effect is committed; the log does not know yet
            return name

        return apply

    return Saga("order", [
        Step(name, effect(name, refusable=name == "charge-payment"), effect(undo))
        for name, undo in STEPS
    ])


async def open_effects(path: str) -> SqliteIdempotencyStore:
    store = await SqliteIdempotencyStore.open(path)
    async with store.transaction("schema", ttl=3600) as tx:
        if tx is not None:
            await tx.connection.execute(CREATE_EFFECTS)
    return store


async def child(log_db: str, effects_db: str, kill_at: int) -> int:
    passed = 0

    def point() -> None:
        nonlocal passed
        passed += 1
        if passed == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    async def on_transition(_: Transition) -> None:
        point()

    store = await SqliteSagaStore.open(log_db)
    effects = await open_effects(effects_db)
    orchestrator = Orchestrator(store, hooks=[on_transition])
    saga = order_saga(effects, point)
    for saga_id, data in SAGAS.items():
        await orchestrator.start(saga, data, saga_id=saga_id)
    await effects.close()
    await store.close()
    return passed


if __name__ == "__main__":
    print(asyncio.run(child(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
