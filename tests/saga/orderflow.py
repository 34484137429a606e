"""The seed's order flow as a test saga, with a ledger of every call the steps received."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mqkit.middleware import RetryPolicy
from mqkit.saga import Saga, Step, StepContext, StepFailed
from mqkit.testing.clock import VirtualClock, settle

STEPS = ("create-order", "reserve-inventory", "charge-payment", "ship-order")
UNDO = {
    "create-order": "cancel-order",
    "reserve-inventory": "release-inventory",
    "charge-payment": "refund-payment",
    "ship-order": "cancel-shipment",
}
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)


@dataclass
class Ledger:
    """Calls in order (``"create-order"``, ``"cancel-order"``...) and behaviour switches."""

    calls: list[str] = field(default_factory=list)
    fail_at: str | None = None
    hang_at: str | None = None
    failing_undo: dict[str, int] = field(default_factory=dict)
    """Compensation name -> how many times it fails (transiently) before succeeding."""
    started: set[str] = field(default_factory=set)

    def action(self, name: str) -> Callable[[StepContext], Awaitable[Any]]:
        async def act(ctx: StepContext) -> Any:
            self.started.add(name)
            if name == self.hang_at:
                await asyncio.Event().wait()  # never answers: the step's timeout ends it
            if name == self.fail_at:
                raise StepFailed(f"{name} refused")
            self.calls.append(name)
            return {"done": name}

        return act

    def undo(self, name: str) -> Callable[[StepContext], Awaitable[Any]]:
        async def compensate(ctx: StepContext) -> Any:
            left = self.failing_undo.get(name, 0)
            if left != 0:
                self.failing_undo[name] = left - 1
                raise ConnectionError(f"{name}: service unavailable")
            self.calls.append(name)
            return None

        return compensate


def order_saga(ledger: Ledger, *, timeout: float = 30.0,
               compensation_retry: RetryPolicy = FAST) -> Saga:
    return Saga("order", [
        Step(name, ledger.action(name), ledger.undo(UNDO[name]), timeout=timeout,
             retry=FAST, compensation_retry=compensation_retry)
        for name in STEPS
    ])


async def run_on(clock: VirtualClock, work: Awaitable[Any]) -> Any:
    """Await ``work``, advancing ``clock`` to each timer it sets (timeouts, backoffs)."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await settle()
        due = clock.next_due()
        if due is not None and not task.done():
            await clock.advance(max(0.0, due - clock.now()))
    return task.result()
