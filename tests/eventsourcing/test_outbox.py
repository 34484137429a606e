"""The transactional outbox: rows written with events or state in one transaction; a relay
that publishes them in order, survives SIGKILL, and whose duplicates consumers absorb."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mqkit import Client, Idempotency
from mqkit.eventsourcing import NO_STREAM, ConcurrencyError, NewEvent, OutboxRelay
from mqkit.memory import MemoryTransport
from mqkit.message import Delivery, Message
from mqkit.middleware.base import Handler
from mqkit.stores import MemoryIdempotencyStore
from mqkit.testing import wait_until

ROOT = Path(__file__).resolve().parents[2]


async def test_events_and_their_outbox_rows_are_written_together(any_store: Any) -> None:
    # given a stream with one event announced on "accounts"
    await any_store.append("acc-1", [NewEvent("Opened", {"n": 1})], NO_STREAM,
                           outbox_topic="accounts")
    # when a stale writer's append is refused
    with pytest.raises(ConcurrencyError):
        await any_store.append("acc-1", [NewEvent("Opened", {"n": 2})], NO_STREAM,
                               outbox_topic="accounts")
    # then the outbox holds only the first event's message, keyed by stream, id = event id
    (event,) = await any_store.read_stream("acc-1")
    (row,) = await any_store.pending(10)
    assert row.message.id == row.message.idempotency_key == event.event_id
    assert (row.message.topic, row.message.key, json.loads(row.message.body)) == (
        "accounts", "acc-1", {"n": 1})


async def test_state_and_outbox_rows_roll_back_together(sql_store: Any, prefix: str) -> None:
    # given a state table beside the outbox
    async with sql_store.transaction() as tx:
        await tx.execute(f"CREATE TABLE {prefix}_orders (id text PRIMARY KEY)")
    # when a transaction writes a row and a message, then fails
    with pytest.raises(RuntimeError):
        async with sql_store.transaction() as tx:
            await tx.execute(f"INSERT INTO {prefix}_orders VALUES (?)", ("o-1",))
            await sql_store.enqueue(tx, [Message(topic="orders", body=b"o-1")])
            raise RuntimeError("the handler failed after writing")
    # then neither the row nor the message exists; a successful one keeps both
    async with sql_store.transaction() as tx:
        assert await tx.execute(f"SELECT id FROM {prefix}_orders") == []
    assert await sql_store.pending(10) == []
    async with sql_store.transaction() as tx:
        await tx.execute(f"INSERT INTO {prefix}_orders VALUES (?)", ("o-2",))
        await sql_store.enqueue(tx, [Message(topic="orders", body=b"o-2")])
    assert [r.message.body for r in await sql_store.pending(10)] == [b"o-2"]
    async with sql_store.transaction() as tx:
        await tx.execute(f"DROP TABLE {prefix}_orders")


async def test_the_relay_publishes_in_order_and_marks_rows_sent(any_store: Any) -> None:
    # given 25 events on two streams in the outbox, and a consumer on memory://
    for i in range(25):
        await any_store.append(f"s{i % 2}", [NewEvent("E", {"i": i})], None,
                               outbox_topic="events")
    transport = MemoryTransport("memory://relay-order")
    async with Client("memory://relay-order", transport=transport) as client:
        await client.ensure_topic("events", groups=["g"])
        # when the relay drains the outbox in batches of 10
        relay = OutboxRelay(any_store, transport, batch_size=10)
        published = await relay.drain()
        got: list[int] = []
        async for delivery in client.consume("events", group="g"):
            got.append(json.loads(delivery.message.body)["i"])
            await delivery.ack()
            if len(got) == 25:
                break
    # then all 25 arrived in outbox order and nothing is left pending
    assert published == 25
    assert got == list(range(25))
    assert await any_store.pending(10) == []


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_relay_killed_mid_batch_loses_nothing_and_duplicates_are_absorbed(
    kind: str, tmp_path: Path, prefix: str, request: pytest.FixtureRequest
) -> None:
    from mqkit.eventsourcing import open_event_store
    from tests.eventsourcing.conftest import drop_tables, store_url

    # given 200 events waiting in the outbox
    url = store_url(kind, request, tmp_path)
    store = await open_event_store(url, prefix=prefix)
    try:
        for i in range(100):
            await store.append(f"acc-{i % 7}", [NewEvent("Moved", {"i": 2 * i}),
                                                NewEvent("Moved", {"i": 2 * i + 1})], None,
                               outbox_topic="moves")
        expected = [r.event_id for r in await store.read_all(0, limit=1000)]
    finally:
        await store.close()
    sink = tmp_path / "sink.jsonl"
    sink.touch()
    rng = random.Random(9)

    # when a relay process is SIGKILLed three times mid-batch, then runs to the end
    for _ in range(3):
        # batches hold 20: stop 3..15 messages into one
        await kill_after(url, prefix, sink, 20 * rng.randint(1, 2) + rng.randint(3, 15))
    final = spawn(url, prefix, sink)
    assert await asyncio.to_thread(final.wait, 60) == 0
    if kind == "postgres":
        await drop_tables(url, prefix)
    # then every event was published, some more than once, first copies in outbox order
    published = [json.loads(line) for line in sink.read_text().splitlines()]
    ids = [p["id"] for p in published]
    assert list(dict.fromkeys(ids)) == expected
    assert len(ids) > len(expected)
    # and a consumer with idempotency applies each event exactly once
    effects = await consume_with_idempotency(published)
    assert sorted(effects) == sorted(expected) and len(effects) == len(set(effects))


def lines(sink: Path) -> int:
    return sink.read_bytes().count(b"\n")


async def kill_after(url: str, prefix: str, sink: Path, more: int) -> None:
    """Start a relay and SIGKILL it once it wrote ``more`` messages to ``sink``."""
    threshold = lines(sink) + more
    child = spawn(url, prefix, sink)
    await wait_until(lambda: lines(sink) >= threshold or child.poll() is not None, timeout=60,
                     what=f"the relay to publish {threshold} messages")
    assert child.poll() is None, "the relay finished before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    await asyncio.to_thread(child.wait)


def spawn(url: str, prefix: str, sink: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.eventsourcing.outbox_child", url, prefix, str(sink)],
        cwd=ROOT,
    )


async def consume_with_idempotency(published: list[dict[str, Any]]) -> list[str]:
    """Replay the sink's messages (duplicates included) into a consumer: its effects."""
    name = f"memory://outbox-dedupe-{time.monotonic_ns()}"
    effects: list[str] = []
    seen = 0

    def count_every_delivery(inner: Handler) -> Handler:
        async def counted(delivery: Delivery) -> Any:
            nonlocal seen
            result = await inner(delivery)
            seen += 1
            return result

        return counted

    stack = [count_every_delivery, Idempotency(MemoryIdempotencyStore())]
    async with Client(name, middleware=stack) as client:
        await client.ensure_topic("moves", groups=["ledger"])

        @client.subscribe("moves", group="ledger")
        async def apply(payload: dict[str, Any]) -> None:
            effects.append(str(payload["event"]))

        await client.start()
        for p in published:
            body = dict(json.loads(p["body"]), event=p["id"])
            await client.transport.publish([Message(
                topic="moves", body=json.dumps(body).encode(), key=p["key"],
                headers={**p["headers"], "content-type": "application/json"}, id=p["id"],
            )])
        await wait_until(lambda: seen == len(published), timeout=20,
                         what="every copy to be handled")
    return effects


async def test_state_events_and_outbox_rows_commit_in_one_transaction(
    sql_store: Any, prefix: str
) -> None:
    # given a state table, and a transaction that writes state, events and their messages
    async with sql_store.transaction() as tx:
        await tx.execute(f"CREATE TABLE {prefix}_orders (id text PRIMARY KEY)")
    with pytest.raises(RuntimeError):
        async with sql_store.transaction() as tx:
            await tx.execute(f"INSERT INTO {prefix}_orders VALUES (?)", ("o-1",))
            await sql_store.append_in(tx, "order-o-1", [NewEvent("Placed", {})], NO_STREAM,
                                      outbox_topic="orders")
            # when it fails before the end
            raise RuntimeError("crash before commit")
    # then no state, no event and no outbox row exist
    async with sql_store.transaction() as tx:
        assert await tx.execute(f"SELECT id FROM {prefix}_orders") == []
        await tx.execute(f"DROP TABLE {prefix}_orders")
    assert await sql_store.read_stream("order-o-1") == []
    assert await sql_store.pending(10) == []
