"""Event store throughput: append, full replay and projection catch-up, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/bench_eventsourcing.py [--events 50000] [--postgres URL]

PostgreSQL comes from ``--postgres`` or ``$MQKIT_POSTGRES_URL`` (skipped when neither is set);
tables use a fresh prefix and are dropped afterwards. Prints one table; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from typing import Any

from mqkit.eventsourcing import (
    NO_STREAM,
    NewEvent,
    ProjectionRunner,
    RecordedEvent,
    StoreTransaction,
    iterate_all,
    open_event_store,
)

PER_APPEND = 10


class Balances:
    """A one-table projection: balance per stream, updated per event."""

    name = "bench_balances"

    def __init__(self, table: str) -> None:
        self.table = table

    async def setup(self, tx: StoreTransaction) -> None:
        await tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table} "
                         "(stream text PRIMARY KEY, balance bigint NOT NULL)")

    async def reset(self, tx: StoreTransaction) -> None:
        await tx.execute(f"DELETE FROM {self.table}")

    async def handle(self, event: RecordedEvent, tx: StoreTransaction) -> None:
        if event.version == 1:
            await tx.execute(f"INSERT INTO {self.table} VALUES (?, 0)", (event.stream,))
        await tx.execute(f"UPDATE {self.table} SET balance = balance + ? WHERE stream = ?",
                         (event.data["amount"], event.stream))


async def measure(url: str, events: int) -> dict[str, float]:
    prefix = f"bench_{uuid.uuid4().hex[:8]}"
    store: Any = await open_event_store(url, prefix=prefix)
    try:
        batch = [NewEvent("Deposited", {"amount": 1, "note": "x" * 40}) for _ in range(PER_APPEND)]
        start = time.perf_counter()
        for i in range(events // PER_APPEND):
            fresh = [NewEvent(e.type, e.data) for e in batch]
            await store.append(f"acc-{i}", fresh, NO_STREAM)
        append_rate = events / (time.perf_counter() - start)

        start = time.perf_counter()
        for i in range(1000):
            await store.append(f"single-{i}", [NewEvent("Deposited", {"amount": 1})], NO_STREAM)
        single_rate = 1000 / (time.perf_counter() - start)

        start = time.perf_counter()
        replayed = 0
        async for _ in iterate_all(store, 0, batch_size=5000):
            replayed += 1
        replay_rate = replayed / (time.perf_counter() - start)

        view = Balances(f"{prefix}_balances")
        runner = ProjectionRunner(store, [view], batch_size=1000)
        await runner.setup()
        start = time.perf_counter()
        caught = await runner.catch_up()
        projection_rate = caught / (time.perf_counter() - start)
        return {"append": append_rate, "append1": single_rate, "replay": replay_rate,
                "replayed": replayed, "projection": projection_rate}
    finally:
        await store.close()
        if url.startswith("postgres"):
            import psycopg

            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                for t in ("events", "head", "snapshots", "checkpoints", "outbox", "balances"):
                    await conn.execute(f'DROP TABLE IF EXISTS "{prefix}_{t}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--postgres", default=os.environ.get("MQKIT_POSTGRES_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("SQLite (file, WAL)", f"sqlite:///{tmp}/bench.db")]
        if args.postgres:
            targets.append(("PostgreSQL", args.postgres))
        rows = [(name, asyncio.run(measure(url, args.events))) for name, url in
                targets]
    print(f"events: {args.events} appended {PER_APPEND} per call, + 1000 single-event appends")
    print(f"{'store':<20} {'append ev/s':>12} {'append 1/call':>14} {'replay ev/s':>12} "
          f"{'projection ev/s':>16}")
    for name, r in rows:
        print(f"{name:<20} {r['append']:>12,.0f} {r['append1']:>14,.0f} {r['replay']:>12,.0f} "
              f"{r['projection']:>16,.0f}")


if __name__ == "__main__":
    main()
