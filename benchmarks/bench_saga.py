"""Sagas completed per second: local steps on each saga log, remote steps over transports.

    python benchmarks/bench_saga.py [--count 500] [--remote-count 100] [--broker-url URL]

Each saga is the four-step order flow (every step succeeds). Local steps do no work, so the
figure is the orchestrator plus its log (about ten transitions, each one committed write).
Remote steps send each action as a command and wait for the participant's reply. Runs
``--concurrency`` sagas at once. A run prints a table; nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from typing import Any

from mqkit.client import Client
from mqkit.saga import Orchestrator, Saga, Step, StepContext, open_saga_store, participant, remote

STEPS = ("create-order", "reserve-inventory", "charge-payment", "ship-order")


async def noop(ctx: StepContext) -> None:
    return None


def local_saga() -> Saga:
    return Saga("bench-local", [Step(name, noop, noop) for name in STEPS])


async def run_sagas(orchestrator: Orchestrator, saga: Saga, count: int,
                    concurrency: int) -> tuple[float, float]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await orchestrator.start(saga, {"order": i})

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def bench_local(store_url: str, count: int, concurrency: int) -> tuple[float, float]:
    store = await open_saga_store(store_url, table=f"bench_{uuid.uuid4().hex[:8]}")
    try:
        return await run_sagas(Orchestrator(store), local_saga(), count, concurrency)
    finally:
        await store.close()


async def bench_remote(url: str, count: int, concurrency: int) -> tuple[float, float]:
    prefix = f"bench-saga-{uuid.uuid4().hex[:8]}"
    async with Client(url) as workers, Client(url) as api:
        for name in STEPS:
            @participant(workers, f"{prefix}.{name}", group=name)
            async def handle(command: dict[str, Any]) -> None:
                return None

        await workers.start()
        saga = Saga("bench-remote", [
            Step(name, remote(f"{prefix}.{name}"), timeout=30) for name in STEPS
        ])
        store = await open_saga_store("memory://")
        orchestrator = Orchestrator(store, client=api)
        await run_sagas(orchestrator, saga, 2, 2)  # warm up: topics, groups, connections
        try:
            return await run_sagas(orchestrator, saga, count, concurrency)
        finally:
            await orchestrator.close()


def row(name: str, count: int, wall: float, cpu: float) -> str:
    return (f"| {name:<38} | {count:>6} | {count / wall:>10.1f} | {wall * 1000 / count:>9.2f} "
            f"| {cpu * 1e6 / count:>12.0f} |")


async def main(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="mqkit-bench-saga-")
    rows = [
        ("local steps, memory log", bench_local("memory://", args.count, args.concurrency),
         args.count),
        ("local steps, SQLite log", bench_local(f"sqlite:///{tmp}/sagas.db", args.count,
                                                args.concurrency), args.count),
    ]
    postgres = os.environ.get("MQKIT_POSTGRES_URL")
    if postgres:
        rows.append(("local steps, PostgreSQL log",
                     bench_local(postgres, args.count, args.concurrency), args.count))
    rows.append(("remote steps, memory://, memory log",
                 bench_remote("memory://bench", args.remote_count, args.concurrency),
                 args.remote_count))
    if args.broker_url:
        scheme = args.broker_url.split("://")[0]
        rows.append((f"remote steps, {scheme}://, memory log",
                     bench_remote(args.broker_url, args.remote_count, args.concurrency),
                     args.remote_count))
    print(f"| {'case':<38} | {'sagas':>6} | {'sagas/s':>10} | {'ms/saga':>9} "
          f"| {'CPU us/saga':>12} |")
    print(f"|{'-' * 40}|{'-' * 8}|{'-' * 12}|{'-' * 11}|{'-' * 14}|")
    for name, work, count in rows:
        wall, cpu = await work
        print(row(name, count, wall, cpu), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--remote-count", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--broker-url", default=os.environ.get("MQKIT_SQS_URL"))
    asyncio.run(main(parser.parse_args()))
