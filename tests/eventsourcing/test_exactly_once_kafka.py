"""Exactly-once from Kafka into PostgreSQL: offsets stored with the business write, and the
group started at those offsets on open (``KafkaTransport.seek_partitions``)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys

import psycopg
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from mqkit import Client
from mqkit.eventsourcing.exactly_once import ExactlyOnceConsumer
from mqkit.eventsourcing.store import StoreTransaction
from mqkit.message import Delivery
from mqkit.testing import wait_until
from mqkit_kafka import KafkaTransport
from tests.brokers import ROOT
from tests.eventsourcing.pg_helpers import count_rows
from tests.kafka.helpers import topic_name

PARTITIONS = 2


def effects_per_input(url: str, table: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT input, count(*) FROM {table} GROUP BY input").fetchall()
    return {str(i): int(c) for i, c in rows}


async def publish_inputs(kafka_url: str, topic: str, ids: range) -> dict[int, int]:
    """Publish ``{"id": "in-<i>", "amount": i}`` for each i; returns the log end per partition."""
    async with Client(kafka_url) as client:
        await client.ensure_topic(topic, partitions=PARTITIONS)
        await client.publish_messages([
            client.message(topic, {"id": f"in-{i}", "amount": i}, key=f"k-{i}") for i in ids
        ])
        return await log_ends(client, topic, "nobody")


async def log_ends(client: Client, topic: str, group: str) -> dict[int, int]:
    assert isinstance(client.transport, KafkaTransport)
    return {row.partition: row.log_end for row in await client.transport.admin.lag(topic, group)}


async def committed(client: Client, topic: str, group: str) -> dict[int, int | None]:
    assert isinstance(client.transport, KafkaTransport)
    return await client.transport.admin.committed(topic, group, PARTITIONS)


async def test_kafka_inputs_are_applied_exactly_once_across_random_sigkills(
    kafka_url: str, postgres_url: str, pg_prefix: str, effects: str
) -> None:
    # given 300 inputs on a 2-partition topic, published once, up front
    n, rng = 300, random.Random(11)
    topic = topic_name("eo-kill")
    group = f"g-{topic}"
    ends = await publish_inputs(kafka_url, topic, range(n))
    assert all(ends.values()), f"both partitions should hold inputs: {ends}"

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.eventsourcing.exactly_once_kafka_child", kafka_url,
             postgres_url, pg_prefix, topic, group, str(n)], cwd=ROOT, stdout=subprocess.PIPE)

    # when the consumer is SIGKILLed at four random points, restarted each time
    kills = 0
    for _ in range(4):
        threshold = count_rows(postgres_url, effects) + rng.randint(10, 50)
        child = spawn()
        await wait_until(
            lambda: count_rows(postgres_url, effects) >= threshold  # noqa: B023
            or child.poll() is not None,  # noqa: B023
            timeout=30, what="the consumer to apply more inputs")
        await asyncio.sleep(rng.random() * 0.005)  # a random point, often mid-transaction
        assert child.poll() is None, "the consumer finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.to_thread(child.wait)
        kills += 1
    # and then runs until it reached the log end
    before_last = count_rows(postgres_url, effects)
    final = spawn()
    out, _ = await asyncio.to_thread(final.communicate, timeout=60)
    assert final.returncode == 0
    last_run = json.loads(out.decode().strip().splitlines()[-1])
    # then each input's effect is there exactly once, and the running total agrees
    assert kills == 4
    per_input = effects_per_input(postgres_url, effects)
    assert sorted(per_input) == sorted(f"in-{i}" for i in range(n))
    assert set(per_input.values()) == {1}
    with psycopg.connect(postgres_url) as conn:
        total = conn.execute(f"SELECT total FROM {pg_prefix}_totals").fetchone()
        stored: dict[int, int] = dict(conn.execute(
            f'SELECT partition, "offset" FROM {pg_prefix}_consumer_offsets '
            "WHERE grp = %s AND topic = %s", (group, topic)).fetchall())
    assert total == (sum(range(n)),)
    # and the stored offsets are at the log end of each partition
    assert stored == {p: end - 1 for p, end in ends.items()}
    # and the last run started where the stored offsets said: it read nothing twice
    assert last_run == {"applied": n - before_last, "duplicates": 0}


async def delete_group(kafka_url: str, client: Client, group: str) -> None:
    """Delete ``group`` and its committed offsets (as ``offsets.retention.minutes`` would),
    once the broker has seen its last member leave."""
    assert isinstance(client.transport, KafkaTransport)
    admin = AdminClient({"bootstrap.servers": client.transport.config.bootstrap})
    for _ in range(50):
        try:
            await asyncio.wrap_future(admin.delete_consumer_groups([group])[group])
            return
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.NON_EMPTY_GROUP:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError(f"group {group} never became empty")


async def insert_effect(delivery: Delivery, tx: StoreTransaction, table: str) -> None:
    data = json.loads(delivery.message.body)
    await tx.execute(f"INSERT INTO {table} VALUES (?, ?)", (data["id"], data["amount"]))


async def run_until_stored(consumer: ExactlyOnceConsumer, last: dict[int, int]) -> None:
    running = asyncio.create_task(consumer.run())

    async def reached() -> bool:
        return await consumer.stored_offsets() == last

    async with asyncio.timeout(30):
        while not await reached():
            assert not running.done(), "the consumer ended early"
            await asyncio.sleep(0.05)
    consumer.stop()
    await running


async def test_open_starts_the_group_at_the_stored_offsets(
    kafka_url: str, postgres_url: str, pg_prefix: str, effects: str
) -> None:
    # given 40 inputs applied by a consumer that then stopped
    topic = topic_name("eo-resume")
    group = f"g-{topic}"
    ends = await publish_inputs(kafka_url, topic, range(40))
    assert all(ends.values()), f"both partitions should hold inputs: {ends}"

    async def handler(delivery: Delivery, tx: StoreTransaction) -> None:
        await insert_effect(delivery, tx, effects)

    async with Client(kafka_url) as client:
        first = await ExactlyOnceConsumer.open(client, postgres_url, topic, group=group,
                                               handler=handler, prefix=pg_prefix)
        await run_until_stored(first, {p: e - 1 for p, e in ends.items()})
        await first.close()
    # and the group's committed offsets lost (the group deleted on the broker)
    async with Client(kafka_url) as client:
        await delete_group(kafka_url, client, group)
        assert set((await committed(client, topic, group)).values()) == {None}
    # when 20 more inputs arrive and a consumer opens on the same tables
    ends = await publish_inputs(kafka_url, topic, range(40, 60))
    async with Client(kafka_url) as client:
        second = await ExactlyOnceConsumer.open(client, postgres_url, topic, group=group,
                                                handler=handler, prefix=pg_prefix)
        # then the group was committed at the stored offsets + 1 before it subscribed
        stored = await second.stored_offsets()
        assert await committed(client, topic, group) == {p: o + 1 for p, o in stored.items()}
        await run_until_stored(second, {p: e - 1 for p, e in ends.items()})
        await second.close()
    # and it applied the 20 new inputs, read none of the 40 again, skipped none
    assert (second.applied, second.duplicates) == (20, 0)
    per_input = effects_per_input(postgres_url, effects)
    assert sorted(per_input) == sorted(f"in-{i}" for i in range(60))
    assert set(per_input.values()) == {1}


async def test_a_running_member_is_moved_to_the_offsets_of_the_partitions_named(
    kafka_url: str,
) -> None:
    # given a member of the group that read and acked 20 inputs on 2 partitions
    topic = topic_name("eo-live")
    group = f"g-{topic}"
    ends = await publish_inputs(kafka_url, topic, range(20))
    transport = KafkaTransport(kafka_url)
    await transport.connect()
    sub = transport.subscription(topic, group)
    try:
        read = 0
        async with asyncio.timeout(30):
            async for delivery in sub:
                await delivery.ack()
                read += 1
                if read == 20:
                    break
        # when the group is started at offset 1 of partition 0
        await transport.seek_partitions(topic, group, {0: 1})
        # then the member reads partition 0 again from offset 1, and partition 1 not again
        expected = [(0, offset) for offset in range(1, ends[0])]
        again: list[tuple[int, int]] = []

        async def take_some() -> None:
            for delivery in await sub.take(100, timeout=1.0):
                await delivery.ack()
                again.append((delivery.partition, delivery.offset))

        async with asyncio.timeout(30):  # the fetch restarts after the seek: give it time
            while len(again) < len(expected):
                await take_some()
        await take_some()  # and a second more: nothing else comes
        assert again == expected
    finally:
        await sub.aclose()
        await transport.close()
