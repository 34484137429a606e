"""The order saga, orchestrated: one coordinator, a persisted log, remote participants.

    python examples/saga_orchestrated.py [--url URL] [--store sqlite:///sagas.db]

Create order runs locally; inventory and payments are participants reached by commands over
the broker (``remote``), each idempotent by the step's key. Order o-1 completes; order o-2's
card is declined, so inventory is released and then the order cancelled. Inspect the log
afterwards with ``mqkit saga list --store URL``.

When to orchestrate (vs. choreograph, see saga_choreography.py): many steps, failure
handling that must be right, and a need to answer "where is order 42?" from one place.
The orchestrator is a dependency, which the persisted log and ``recover()`` make safe.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

from mqkit.client import Client
from mqkit.middleware import Idempotency
from mqkit.saga import (
    Orchestrator,
    Saga,
    SagaState,
    Step,
    StepContext,
    StepFailed,
    open_saga_store,
    participant,
    remote,
)
from mqkit.stores import MemoryIdempotencyStore


async def create_order(ctx: StepContext) -> dict[str, Any]:
    print(f"  [orders]    order {ctx.data['order']} created")
    return {"status": "created"}


async def cancel_order(ctx: StepContext) -> None:
    print(f"  [orders]    order {ctx.data['order']} cancelled")


def serve(workers: Client, prefix: str) -> None:
    """Inventory and payment services: ordinary subscribers that reply."""
    keys = MemoryIdempotencyStore()

    def service(topic: str, group: str, say: str, refuse: bool = False) -> None:
        @participant(workers, f"{prefix}.{topic}", group=group, middleware=[Idempotency(keys)])
        async def handle(command: dict[str, Any]) -> dict[str, Any]:
            order = command["data"]
            if refuse and order["card"] == "declined":
                print(f"  [{group:<9}] card for {order['order']} declined")
                raise StepFailed("card declined")
            print(f"  [{group:<9}] {say} for {order['order']}")
            return {"ok": topic}

    service("reserve", "inventory", "reserved 1 x book")
    service("release", "inventory", "released the reservation")
    service("charge", "payments", "charged 25.00", refuse=True)
    service("refund", "payments", "refunded 25.00")
    service("ship", "shipping", "shipment booked")
    service("unship", "shipping", "shipment cancelled")


async def main(url: str, store_url: str) -> int:
    prefix = f"example-{uuid.uuid4().hex[:8]}"
    saga = Saga("order", [
        Step("create-order", create_order, cancel_order),
        Step("reserve-inventory", remote(f"{prefix}.reserve"), remote(f"{prefix}.release")),
        Step("charge-payment", remote(f"{prefix}.charge"), remote(f"{prefix}.refund")),
        Step("ship-order", remote(f"{prefix}.ship"), remote(f"{prefix}.unship")),
    ])
    store = await open_saga_store(store_url)
    async with Client(url) as workers, Client(url) as api:
        serve(workers, prefix)
        await workers.start()
        orchestrator = Orchestrator(store, [saga], client=api)
        await orchestrator.recover()  # finish whatever a previous run left behind
        outcomes = []
        for order, card in (("o-1", "ok"), ("o-2", "declined")):
            print(f"order {order} (card {card}):")
            outcome = await orchestrator.start(saga, {"order": order, "card": card})
            print(f"  => saga {outcome.id[-8:]} {outcome.state.value}")
            outcomes.append(outcome.state)
        await orchestrator.close()
    await store.close()
    if outcomes != [SagaState.COMPLETED, SagaState.COMPENSATED]:
        print(f"unexpected outcomes: {[o.value for o in outcomes]}")
        return 1
    print("ok: one saga completed, one compensated in reverse order")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--store", default="sqlite:///example-sagas.db")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.url, args.store)))
