"""A consumer process for the crash test: inputs from memory:// into PostgreSQL, exactly once.

    python -m tests.eventsourcing.exactly_once_child POSTGRES_URL PREFIX N

memory:// dies with the process, so each start republishes the same N inputs (same ids),
like a durable broker redelivering everything, already-applied inputs included. Each input's
effect is one row in ``<PREFIX>_effects`` (no unique key: only the helper prevents a second
row) plus an update of a running total. Exits 0 once all N inputs were seen in this run.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

from mqkit import Client
from mqkit.eventsourcing.exactly_once import ExactlyOnceConsumer, message_ids
from mqkit.eventsourcing.store import StoreTransaction
from mqkit.message import Delivery
from mqkit.testing import wait_until


async def main(url: str, prefix: str, n: int) -> None:
    effects, totals = f"{prefix}_effects", f"{prefix}_totals"
    rng = random.Random()

    async def apply(delivery: Delivery, tx: StoreTransaction) -> None:
        data = json.loads(delivery.message.body)
        await tx.execute(f"INSERT INTO {effects} VALUES (?, ?)", (data["id"], data["amount"]))
        await asyncio.sleep(rng.random() * 0.004)  # widen the window before the commit
        await tx.execute(f"UPDATE {totals} SET total = total + ? WHERE id = 1", (data["amount"],))

    async with Client("memory://exactly-once") as client:
        await client.ensure_topic("inputs", groups=["ledger"])
        consumer = await ExactlyOnceConsumer.open(client, url, "inputs", group="ledger",
                                                  handler=apply, position=message_ids,
                                                  prefix=prefix)
        # The same message ids on every start, as a durable broker would redeliver them.
        await client.publish_messages([
            client.message("inputs", {"id": f"in-{i}", "amount": i}, message_id=f"in-{i}")
            for i in range(n)
        ])
        running = asyncio.create_task(consumer.run())
        await wait_until(lambda: consumer.applied + consumer.duplicates >= n, timeout=120)
        consumer.stop()
        await running
        await consumer.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
