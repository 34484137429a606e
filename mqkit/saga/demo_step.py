"""The order saga step of ``mqkit demo``: one order completes, one fails at payment.

The seed's flow, as local steps on a SQLite saga log: create order, reserve inventory,
charge payment, ship. The second order's card is declined, so inventory is released, then
the order cancelled: the compensations of the completed steps, in reverse order. Each
transition is reported through ``emit(actor, text, kind)`` as it is written to the log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqkit.saga.definition import Saga, Step, StepContext
from mqkit.saga.model import Phase, SagaState, Status, StepFailed
from mqkit.saga.orchestrator import Orchestrator, Transition
from mqkit.saga.store_sqlite import SqliteSagaStore

Emit = Callable[[str, str, str], None]
STEPS = (("create-order", "cancel-order"), ("reserve-inventory", "release-inventory"),
         ("charge-payment", "refund-payment"), ("ship-order", "cancel-shipment"))
ORDERS = {"o-10": "4242-ok", "o-11": "0000-declined"}


@dataclass
class SagaDemoResult:
    outcomes: dict[str, SagaState] = field(default_factory=dict)
    compensations: dict[str, list[str]] = field(default_factory=dict)
    """Order id -> the compensations that ran, in the order they ran."""
    store: str = ""


def order_saga(result: SagaDemoResult) -> Saga:
    def action(name: str) -> Callable[[StepContext], Any]:
        async def act(ctx: StepContext) -> Any:
            if name == "charge-payment" and ctx.data["card"].endswith("declined"):
                raise StepFailed(f"the bank refused card {ctx.data['card']}")
            return {"order": ctx.data["order"], "did": name}

        return act

    def undo(name: str) -> Callable[[StepContext], Any]:
        async def compensate(ctx: StepContext) -> None:
            result.compensations.setdefault(ctx.data["order"], []).append(name)

        return compensate

    return Saga("order", [Step(a, action(a), undo(u), timeout=5.0) for a, u in STEPS])


def narrate(emit: Emit, orders: dict[str, str]) -> Callable[[Transition], Any]:
    async def hook(t: Transition) -> None:
        order, e = orders.get(t.saga_id, t.saga_id), t.entry
        if e.phase is Phase.SAGA:
            kind = {"completed": "handle", "compensated": "ops", "stuck": "fail"}.get(e.status,
                                                                                    "info")
            emit("saga", f"{order}: saga {e.status}", kind)
        elif e.status == Status.DONE.value:
            what = "compensated" if e.phase is Phase.COMPENSATION else "done"
            emit("saga", f"{order}: {e.step_name} {what}",
                 "retry" if e.phase is Phase.COMPENSATION else "handle")
        elif e.status in (Status.FAILED.value, Status.TIMED_OUT.value):
            emit("saga", f"{order}: {e.step_name} {e.status}: {(e.detail or {}).get('error')}",
                 "fail")

    return hook


async def run_order_sagas(path: Path, emit: Emit) -> SagaDemoResult:
    """Run both orders on a saga log at ``path``; what happened, for the demo's checks."""
    result = SagaDemoResult(store=f"sqlite ({path.name})")
    store = await SqliteSagaStore.open(str(path))
    ids = {f"order-{order}": order for order in ORDERS}
    try:
        orchestrator = Orchestrator(store, hooks=[narrate(emit, ids)])
        saga = order_saga(result)
        for order, card in ORDERS.items():
            emit("api", f"order {order} placed (card {card})", "publish")
            outcome = await orchestrator.start(saga, {"order": order, "card": card},
                                               saga_id=f"order-{order}")
            result.outcomes[order] = outcome.state
    finally:
        await store.close()
    return result
