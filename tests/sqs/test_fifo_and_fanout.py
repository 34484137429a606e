"""FIFO order and deduplication, and SNS fan-out to several groups."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from mqkit.message import Delivery
from mqkit.testing import wait_until
from tests.sqs.conftest import ClientMaker

TIMEOUT = 30


async def test_fifo_keeps_order_per_key_under_concurrency(
    client_maker: ClientMaker, topic: str
) -> None:
    # Given a FIFO topic consumed by 8 concurrent workers
    client = await client_maker(wait_time=0)
    fifo = f"{topic}.fifo"
    seen: dict[str, list[int]] = defaultdict(list)
    running: set[str] = set()
    overlaps: list[str] = []

    @client.subscribe(fifo, group="g", concurrency=8)
    async def handle(item: dict[str, Any]) -> None:
        if item["key"] in running:
            overlaps.append(item["key"])
        running.add(item["key"])
        await asyncio.sleep(0.002)
        seen[item["key"]].append(item["n"])
        running.discard(item["key"])

    await client.start()
    # When 3 keys' messages are published interleaved
    items = [{"key": f"k{i % 3}", "n": i} for i in range(90)]
    await client.publish_batch(fifo, items, key=lambda item: item["key"])
    # Then each key's messages arrive in publish order, one at a time
    await wait_until(lambda: sum(map(len, seen.values())) >= 90, TIMEOUT)
    assert {k: v == sorted(v) for k, v in seen.items()} == {"k0": True, "k1": True, "k2": True}
    assert sorted(n for v in seen.values() for n in v) == list(range(90))
    assert overlaps == []


async def test_fifo_repeated_deduplication_id_is_delivered_once(
    client_maker: ClientMaker, topic: str
) -> None:
    # Given a FIFO topic deduplicating on idempotency keys (the default)
    client = await client_maker(wait_time=0)
    fifo = f"{topic}.fifo"
    await client.ensure_topic(fifo, groups=["g"])
    # When one payment is published twice with one idempotency key, then a sentinel
    first = await client.publish(fifo, {"pay": 1}, key="acct", idempotency_key="pay-1")
    await client.publish(fifo, {"pay": 1, "retry": True}, key="acct", idempotency_key="pay-1")
    await client.publish(fifo, "sentinel", key="acct", idempotency_key="sentinel-1")
    # Then the consumer gets the payment once, then the sentinel (same group, so in order:
    # a second copy would have come before the sentinel)
    got: list[Delivery] = []
    async with asyncio.timeout(TIMEOUT):
        async for delivery in client.consume(fifo, group="g"):
            got.append(delivery)
            await delivery.ack()
            if delivery.message.body == b"sentinel":
                break
    assert next(d.message.id for d in got) == first.id
    assert len(got) == 2


async def test_fan_out_gives_each_of_three_groups_every_message(
    client_maker: ClientMaker, topic: str
) -> None:
    # Given three groups on one topic
    client = await client_maker()
    seen: dict[str, list[int]] = defaultdict(list)
    for group in ("billing", "shipping", "analytics"):

        @client.subscribe(topic, group=group)
        async def handle(n: int, group: str = group) -> None:
            seen[group].append(n)

    await client.start()
    # When 30 messages are published
    await client.publish_batch(topic, range(30))
    # Then every group sees all 30, once each
    await wait_until(lambda: all(len(seen[g]) >= 30 for g in seen) and len(seen) == 3, TIMEOUT)
    for group in ("billing", "shipping", "analytics"):
        assert sorted(seen[group]) == list(range(30)), group


async def test_queue_mode_is_point_to_point(client_maker: ClientMaker, topic: str) -> None:
    # Given the plain-queue mode and two groups
    client = await client_maker(mode="queue")
    seen: dict[str, list[int]] = defaultdict(list)
    for group in ("a", "b"):

        @client.subscribe(topic, group=group, concurrency=2)
        async def handle(n: int, group: str = group) -> None:
            seen[group].append(n)
            await asyncio.sleep(0.005)

    await client.start()
    # When 40 messages are sent to the topic's queue
    await client.publish_batch(topic, range(40))
    # Then together the groups see each message once (they compete on one queue)
    await wait_until(lambda: len(seen["a"]) + len(seen["b"]) >= 40, TIMEOUT)
    assert sorted(seen["a"] + seen["b"]) == list(range(40))
