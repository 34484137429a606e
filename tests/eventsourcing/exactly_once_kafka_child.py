"""A consumer process for the Kafka crash test: inputs from Kafka into PostgreSQL, exactly once.

    python -m tests.eventsourcing.exactly_once_kafka_child KAFKA_URL POSTGRES_URL PREFIX \
        TOPIC GROUP N

The test publishes the N inputs to TOPIC once, up front; Kafka keeps them, so every start
reads on from where ``ExactlyOnceConsumer.open`` positions the group (the offsets stored in
PostgreSQL, through ``KafkaTransport.seek_partitions``). Each input's effect is one row in
``<PREFIX>_effects`` (no unique key: only the helper prevents a second row) plus an update
of a running total. Exits 0 once the stored offsets reach the log end of every partition,
after printing this run's counters as JSON (``{"applied": .., "duplicates": ..}``).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from typing import Any

from mqkit import Client
from mqkit.eventsourcing.exactly_once import ExactlyOnceConsumer
from mqkit.eventsourcing.store import StoreTransaction
from mqkit.message import Delivery
from mqkit_kafka import KafkaTransport

# The broker's smallest session: a killed member holds its partitions this long.
OPTIONS: dict[str, Any] = {"consumer.session.timeout.ms": 6000}


async def main(
    kafka_url: str, postgres_url: str, prefix: str, topic: str, group: str, n: int
) -> None:
    effects, totals = f"{prefix}_effects", f"{prefix}_totals"
    rng = random.Random()

    async def apply(delivery: Delivery, tx: StoreTransaction) -> None:
        data = json.loads(delivery.message.body)
        await tx.execute(f"INSERT INTO {effects} VALUES (?, ?)", (data["id"], data["amount"]))
        await asyncio.sleep(rng.random() * 0.004)  # widen the window before the commit
        await tx.execute(f"UPDATE {totals} SET total = total + ? WHERE id = 1", (data["amount"],))

    async with Client(kafka_url, **OPTIONS) as client:
        transport = client.transport
        assert isinstance(transport, KafkaTransport)
        ends = {row.partition: row.log_end for row in await transport.admin.lag(topic, group)}
        assert sum(ends.values()) == n, f"expected {n} inputs in {topic}, found {ends}"
        last = {p: end - 1 for p, end in ends.items() if end > 0}
        consumer = await ExactlyOnceConsumer.open(client, postgres_url, topic, group=group,
                                                  handler=apply, prefix=prefix)
        running = asyncio.create_task(consumer.run())

        async def done() -> bool:
            return await consumer.stored_offsets() == last

        while not await done():
            if running.done():
                running.result()  # raises what ended it
                raise SystemExit("the consumer ended before reaching the log end")
            await asyncio.sleep(0.05)
        consumer.stop()
        await running
        await consumer.close()
    print(json.dumps({"applied": consumer.applied, "duplicates": consumer.duplicates}))


if __name__ == "__main__":
    kafka, postgres, prefix, topic, group, n = sys.argv[1:7]
    asyncio.run(main(kafka, postgres, prefix, topic, group, int(n)))
