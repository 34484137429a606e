"""On the real Kafka: a member joins and leaves mid-run; nothing is lost, effects once."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

from mqkit.client import Client
from mqkit.message import Delivery
from mqkit.middleware import DeadLetter, Idempotency, Retry, RetryPolicy
from mqkit.middleware.base import Handler
from mqkit.stores.memory import MemoryIdempotencyStore
from mqkit.testing import wait_until
from tests.kafka.helpers import topic_name

COUNT = 20_000
TIMEOUT = 120


def counting(ledger: Counter[int]) -> Any:
    """A middleware that records every delivery (duplicates included) before the chain."""

    def layer(inner: Handler) -> Handler:
        async def count(delivery: Delivery) -> Any:
            ledger[int(delivery.message.body)] += 1
            return await inner(delivery)

        return count

    return layer


async def test_member_joining_and_leaving_loses_nothing_and_effects_happen_once(
    kafka_url: str,
) -> None:
    # Given one member of a group on a 6-partition topic, behind the idempotency middleware
    topic = topic_name("rebalance")
    group = f"g-{topic}"
    store = MemoryIdempotencyStore()
    delivered: Counter[int] = Counter()
    effects: Counter[int] = Counter()
    by_member: Counter[str] = Counter()
    policy = RetryPolicy(max_attempts=5, base_delay=0.05, max_delay=0.2)

    def member(client: Client, name: str) -> None:
        @client.subscribe(
            topic, group=group, concurrency=8,
            middleware=[counting(delivered), DeadLetter(), Retry(policy), Idempotency(store)],
        )
        async def handle(n: int) -> None:
            effects[n] += 1
            by_member[name] += 1
            await asyncio.sleep(0)

    first = Client(kafka_url)
    second = Client(kafka_url)
    try:
        await first.ensure_topic(topic, groups=[group], partitions=6)
        member(first, "first")
        await first.start()
        # When 20,000 messages flow while a second member joins, works, and leaves: the
        # publisher keeps a backlog until the joiner has been handed partitions, so the
        # joiner's share does not depend on how fast the first member drains the topic
        joined, left = asyncio.Event(), asyncio.Event()
        publisher = asyncio.create_task(
            publish_all(
                first, topic,
                hold=lambda: joined.is_set() and not left.is_set() and by_member["second"] < 500,
            )
        )
        await wait_until(lambda: sum(effects.values()) >= 3000, TIMEOUT, what="a first share")
        member(second, "second")
        await second.start()
        joined.set()
        # The joiner's share depends on when the group hands it partitions (seconds, and
        # under load sometimes longer): it leaves after 500 messages or 30 s, whichever first.
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: by_member["second"] >= 500, 30, what="the joiner's work")
        await second.stop()
        left.set()
        await publisher
        await wait_until(lambda: len(effects) >= COUNT, TIMEOUT, what=f"{COUNT} effects")
    finally:
        await second.close()
        await first.close()
    # Then nothing was lost, each effect happened once, and duplicates (redelivered
    # in-flight work) were absorbed by the idempotency middleware
    assert set(effects) == set(range(COUNT))
    assert max(effects.values()) == 1
    assert set(delivered) == set(range(COUNT))
    duplicates = sum(delivered.values()) - COUNT
    assert duplicates >= 0
    print(f"deliveries {sum(delivered.values())}, duplicates absorbed {duplicates}, "
          f"by member {dict(by_member)}")


async def publish_all(client: Client, topic: str, hold: Any) -> None:
    """Publish COUNT messages in batches; while ``hold()`` is true, wait between batches."""
    for start in range(0, COUNT, 1000):
        await client.publish_batch(
            topic, range(start, start + 1000), idempotency_key=str, key=lambda n: f"k{n % 97}"
        )
        for _ in range(300):  # at most 30 s per batch: the joiner's assignment takes seconds
            if not hold():
                break
            await asyncio.sleep(0.1)
