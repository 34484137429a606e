"""PostgreSQL's global order: no gaps visible to a reader while many writers append."""

from __future__ import annotations

import asyncio

from mqkit.eventsourcing import NO_STREAM, NewEvent
from mqkit.eventsourcing.postgres_store import PostgresEventStore


async def test_readers_never_see_a_gap_while_writers_race(
    postgres_url: str, pg_prefix: str
) -> None:
    # given eight writers, each on a store (and connections) of its own
    writers = [await PostgresEventStore.open(postgres_url, prefix=pg_prefix) for _ in range(8)]
    reader = await PostgresEventStore.open(postgres_url, prefix=pg_prefix)
    done = asyncio.Event()
    seen: list[list[int]] = []

    async def write(store: PostgresEventStore, w: int) -> None:
        for i in range(25):
            await store.append(f"w{w}-{i}", [NewEvent("E", {}), NewEvent("E", {})], NO_STREAM)

    async def read() -> None:
        while not done.is_set():
            seen.append([e.position for e in await reader.read_all(0, limit=100_000)])
            await asyncio.sleep(0)

    # when they append concurrently while a reader keeps reading everything
    reading = asyncio.create_task(read())
    await asyncio.gather(*(write(s, w) for w, s in enumerate(writers)))
    done.set()
    await reading
    final = [e.position for e in await reader.read_all(0, limit=100_000)]
    for store in [*writers, reader]:
        await store.close()
    # then every read was a gapless prefix 1..n, and all 400 events arrived
    assert len(seen) > 1
    assert all(positions == list(range(1, len(positions) + 1)) for positions in seen)
    assert final == list(range(1, 401))
