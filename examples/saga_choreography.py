"""The order saga, choreographed: no coordinator; services react to each other's events.

    python examples/saga_choreography.py [--url URL]

Each service subscribes to the events it cares about and publishes its own: order-created
-> inventory reserves -> inventory-reserved -> payments charge -> payment-charged -> shipping
ships. A failure publishes a compensating event that flows backwards: payment-failed ->
inventory releases -> inventory-released -> orders cancel. Every handler is idempotent (a
redelivered event does nothing twice).

When to choreograph: few services, a simple flow, teams that own their service end to end,
and no single point of failure. Its cost: no one place knows where an order stands (trace it
by correlation id across topics), and adding a step means changing who listens to what.
With many steps or intricate failures, orchestrate (saga_orchestrated.py): most systems at
scale do.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections import defaultdict
from typing import Any

from mqkit.client import Client
from mqkit.middleware import DeadLetter, Idempotency, Logging, Retry
from mqkit.stores import MemoryIdempotencyStore

ORDERS = {"o-1": "ok", "o-2": "declined"}


async def main(url: str) -> int:
    p = f"example-{uuid.uuid4().hex[:8]}"
    history: dict[str, list[str]] = defaultdict(list)
    finished: dict[str, str] = {}
    done = asyncio.Event()
    keys = MemoryIdempotencyStore()

    async with Client(url) as client:
        async def emit(event: str, order: dict[str, Any]) -> None:
            history[order["order"]].append(event)
            await client.publish(f"{p}.{event}", order, key=order["order"],
                                 idempotency_key=f"{order['order']}:{event}")

        def on(event: str, group: str) -> Any:
            stack = [Logging(), DeadLetter(), Retry(), Idempotency(keys)]
            return client.subscribe(f"{p}.{event}", group=group, middleware=stack)

        @on("order-created", "inventory")
        async def reserve(order: dict[str, Any]) -> None:
            await emit("inventory-reserved", order)

        @on("inventory-reserved", "payments")
        async def charge(order: dict[str, Any]) -> None:
            await emit("payment-failed" if order["card"] == "declined" else "payment-charged",
                       order)

        @on("payment-charged", "shipping")
        async def ship(order: dict[str, Any]) -> None:
            await emit("order-shipped", order)

        @on("order-shipped", "orders")
        async def complete(order: dict[str, Any]) -> None:
            finish(order, "completed")

        # Compensating events flow backwards.
        @on("payment-failed", "inventory")
        async def release(order: dict[str, Any]) -> None:
            await emit("inventory-released", order)

        @on("inventory-released", "orders")
        async def cancel(order: dict[str, Any]) -> None:
            await emit("order-cancelled", order)
            finish(order, "compensated")

        def finish(order: dict[str, Any], how: str) -> None:
            finished[order["order"]] = how
            if len(finished) == len(ORDERS):
                done.set()

        await client.start()
        for order, card in ORDERS.items():
            await emit("order-created", {"order": order, "card": card})
        await asyncio.wait_for(done.wait(), timeout=30)

    for order, events in history.items():
        print(f"{order}: {' -> '.join(events)}  => {finished[order]}")
    if finished != {"o-1": "completed", "o-2": "compensated"}:
        print(f"unexpected outcomes: {finished}")
        return 1
    print("ok: o-1 completed; o-2 compensated by events")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.url)))
