"""Exactly-once from a broker into PostgreSQL: the position commits with the business write."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import psycopg

from mqkit import Client
from mqkit.eventsourcing.exactly_once import (
    ExactlyOnceConsumer,
    auto_position,
    message_ids,
    partition_offsets,
)
from mqkit.eventsourcing.store import StoreTransaction
from mqkit.message import Delivery, Message
from mqkit.testing import wait_until
from tests.eventsourcing.pg_helpers import count_rows

ROOT = Path(__file__).resolve().parents[2]


async def test_inputs_are_applied_exactly_once_across_random_sigkills(
    postgres_url: str, pg_prefix: str, effects: str
) -> None:
    # given 150 inputs, republished with the same ids by every consumer process that starts
    n, rng = 150, random.Random(5)

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.eventsourcing.exactly_once_child", postgres_url,
             pg_prefix, str(n)], cwd=ROOT)

    # when the consumer is SIGKILLed at four random points, then runs to the end
    for _ in range(4):
        threshold = count_rows(postgres_url, effects) + rng.randint(5, 30)
        child = spawn()
        await wait_until(
            lambda: count_rows(postgres_url, effects) >= threshold  # noqa: B023
            or child.poll() is not None,  # noqa: B023
            timeout=60, what="the consumer to apply more inputs")
        await asyncio.sleep(rng.random() * 0.005)  # a random point, often mid-transaction
        assert child.poll() is None, "the consumer finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.to_thread(child.wait)
    final = spawn()
    assert await asyncio.to_thread(final.wait, 60) == 0
    # then each input's effect is there exactly once, and the running total agrees
    with psycopg.connect(postgres_url) as conn:
        per_input = conn.execute(
            f"SELECT input, count(*) FROM {effects} GROUP BY input"
        ).fetchall()
        total = conn.execute(f"SELECT total FROM {pg_prefix}_totals").fetchone()
    assert sorted(i for i, _ in per_input) == sorted(f"in-{i}" for i in range(n))
    assert {c for _, c in per_input} == {1}
    assert total == (sum(range(n)),)


async def insert_effect(delivery: Delivery, tx: StoreTransaction, table: str) -> None:
    data = json.loads(delivery.message.body)
    await tx.execute(f"INSERT INTO {table} VALUES (?, ?)", (data["id"], data["amount"]))


async def test_a_redelivered_message_is_acked_without_a_second_effect(
    postgres_url: str, pg_prefix: str, effects: str
) -> None:
    # given a consumer positioned by message id, and one message published twice (same id):
    # a producer-side duplicate, which sits at two offsets, so only its id can tell
    async with Client("memory://eo-dup") as client:
        await client.ensure_topic("in", groups=["g"])
        consumer = await ExactlyOnceConsumer.open(
            client, postgres_url, "in", group="g", prefix=pg_prefix, position=message_ids,
            handler=lambda d, tx: insert_effect(d, tx, effects))
        message = client.message("in", {"id": "x", "amount": 5}, message_id="m-1")
        await client.publish_messages([message, message])
        # when both deliveries are processed
        results = []
        async for delivery in client.consume("in", group="g"):
            results.append(await consumer.process(delivery))
            if len(results) == 2:
                break
        await consumer.close()
    # then the first applied, the second was a duplicate, and one row exists
    assert results == [True, False]
    assert (consumer.applied, consumer.duplicates) == (1, 1)
    assert count_rows(postgres_url, effects) == 1


async def test_a_failing_handler_rolls_back_its_position_and_is_retried(
    postgres_url: str, pg_prefix: str, effects: str
) -> None:
    # given a handler that writes its effect, then fails on the first attempt
    attempts = 0

    async def flaky(delivery: Delivery, tx: StoreTransaction) -> None:
        nonlocal attempts
        attempts += 1
        await insert_effect(delivery, tx, effects)
        if attempts == 1:
            raise ConnectionError("the database hiccuped")

    async with Client("memory://eo-retry") as client:
        await client.ensure_topic("in", groups=["g"])
        consumer = await ExactlyOnceConsumer.open(client, postgres_url, "in", group="g",
                                                  prefix=pg_prefix, handler=flaky,
                                                  backoff_base=0.001, backoff_cap=0.001)
        await client.publish("in", {"id": "y", "amount": 1})
        # when it runs until the message was applied
        running = asyncio.create_task(consumer.run())
        await wait_until(lambda: consumer.applied == 1, what="the retry to apply")
        consumer.stop()
        await running
        await consumer.close()
    # then the failed attempt's effect was rolled back: one row after two attempts
    assert attempts == 2
    assert count_rows(postgres_url, effects) == 1


class OffsetDelivery(Delivery):
    """A delivery that exposes a partition and an offset, as Kafka's does."""

    def __init__(self, partition: int, offset: int) -> None:
        body = json.dumps({"id": f"p{partition}-{offset}", "amount": 1}).encode()
        super().__init__(Message(topic="t", body=body), attempt=1)
        self.partition, self.offset, self.source_topic = partition, offset, "t"

    async def _ack(self) -> None: ...

    async def _nack(self, delay: float | None) -> None: ...


async def test_partition_offsets_skip_what_is_at_or_below_the_stored_offset(
    postgres_url: str, pg_prefix: str, effects: str
) -> None:
    # given a consumer positioned by partition offsets
    client = Client("memory://eo-offsets")
    consumer = await ExactlyOnceConsumer.open(
        client, postgres_url, "t", group="g", prefix=pg_prefix, position=partition_offsets,
        handler=lambda d, tx: insert_effect(d, tx, effects))
    # when offsets 0..2 of partition 0 and 0 of partition 1 arrive, then 1 and 2 again
    order = [(0, 0), (0, 1), (0, 2), (1, 0), (0, 1), (0, 2)]
    results = [await consumer.process(OffsetDelivery(p, o)) for p, o in order]
    stored = await consumer.stored_offsets()
    await consumer.close()
    # then the replayed offsets were duplicates, and the stored offsets are the last applied
    assert results == [True, True, True, True, False, False]
    assert stored == {0: 2, 1: 0}
    assert count_rows(postgres_url, effects) == 4


def test_auto_position_uses_offsets_where_the_delivery_has_them() -> None:
    # given a Kafka-like delivery and a plain one
    kafka_like = OffsetDelivery(3, 41)
    plain = Delivery(Message(topic="t", body=b"", id="m-9"), attempt=1)
    # when positioned automatically, then offsets or the message id are used
    assert (auto_position(kafka_like).partition, auto_position(kafka_like).offset) == (3, 41)
    assert auto_position(plain) == message_ids(plain)
    assert auto_position(plain).message_id == "m-9"


