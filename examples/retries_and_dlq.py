"""Retries with backoff, a dead-letter topic and replay.

A flaky dependency fails twice with ConnectionError (transient): the message is redelivered
with exponential backoff and full jitter, then succeeds. A malformed message fails with a
permanent error: it goes straight to ``<topic>.dlq``. We inspect the DLQ, "deploy a fix",
replay the dead letter (new id, original id as causation) and it is handled.

    python examples/retries_and_dlq.py [--url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from typing import Any

from mqkit import dlq
from mqkit.client import Client
from mqkit.message import Delivery
from mqkit.middleware import RetryPolicy

POLICY = RetryPolicy(max_attempts=5, base_delay=0.05, max_delay=1.0)


class Malformed(ValueError):
    """ValueError is permanent for mqkit's default classifier: no retries, dead-letter."""


async def main(url: str) -> int:
    topic = f"example-{uuid.uuid4().hex[:8]}.shipments"
    idle = 0.3 if url.startswith("memory:") else 2.0
    calls: dict[str, int] = {}
    done: list[str] = []
    shipped = {"s-1": asyncio.Event(), "s-2": asyncio.Event()}
    fixed = False
    started = time.monotonic()

    async with Client(url) as client:

        @client.subscribe(topic, group="shipping", retry=POLICY)
        async def ship(order: dict[str, Any], delivery: Delivery) -> None:
            calls[order["id"]] = n = calls.get(order["id"], 0) + 1
            at = time.monotonic() - started
            if order["id"] == "s-1" and n <= 2:
                print(f"  {at:5.2f}s s-1 attempt {delivery.attempt}: carrier API down -> retry")
                raise ConnectionError("carrier API unreachable")
            if not isinstance(order["weight"], int | float) and not fixed:
                print(f"  {at:5.2f}s {order['id']}: weight {order['weight']!r} -> dead-letter")
                raise Malformed(f"weight {order['weight']!r} is not a number")
            done.append(order["id"])
            shipped[order["id"]].set()
            print(f"  {at:5.2f}s {order['id']} shipped (attempt {delivery.attempt})")

        await client.start()
        await client.publish(topic, {"id": "s-1", "weight": 2.5}, key="s-1")
        await client.publish(topic, {"id": "s-2", "weight": "2,5kg"}, key="s-2")
        async with asyncio.timeout(30):
            await shipped["s-1"].wait()

        letters: list[Any] = []
        for _ in range(20):  # the dead letter may still be on its way on a remote broker
            letters = await dlq.inspect(client, topic, idle=idle)
            if letters:
                break
        print(f"dead letters: {dlq.summarize(letters)}")
        for letter in letters:
            print(f"  {letter.id}: {letter.headers.get('x-dlq-error-message')}")

        fixed = True  # the fix is deployed: the handler now accepts "2,5kg"
        result = await dlq.replay(client, topic, idle=idle)
        print(f"replayed {result.replayed}; causation ids: "
              f"{[c.causation_id for c in result.copies]}")
        async with asyncio.timeout(30):
            await shipped["s-2"].wait()
        left = await dlq.inspect(client, topic, idle=idle)

    ok = (
        calls.get("s-1") == 3
        and len(letters) == 1
        and result.replayed == 1
        and result.copies[0].causation_id == letters[0].id
        and sorted(done) == ["s-1", "s-2"]
        and not left
    )
    print("ok: retried, dead-lettered, replayed, DLQ empty" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://", help="broker URL (default memory://)")
    sys.exit(asyncio.run(main(parser.parse_args().url)))
