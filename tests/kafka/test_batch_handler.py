"""The core's batch handler on Kafka reads whole fetched batches (the source's ``take_batch``)
and settles each as one unit, or message by message when the handler fails."""

from __future__ import annotations

import asyncio

import pytest

from mqkit import Client
from mqkit import headers as h
from mqkit.errors import AlreadySettledError
from mqkit.message import Message, new_id
from mqkit.middleware.retry import RetryPolicy
from mqkit.testing import wait_until
from mqkit.transport import TopicSpec
from mqkit_kafka import KafkaTransport
from mqkit_kafka.subscriber import KafkaBatch, Subscription


async def test_batch_handler_gets_every_message_once_in_lists(kafka_url: str) -> None:
    # Given a batch handler on a fresh 2-partition topic
    topic, group = f"batch-{new_id()[:10]}", f"batch-g-{new_id()[:10]}"
    seen: list[int] = []
    calls: list[int] = []
    async with Client(kafka_url) as client:
        await client.ensure_topic(topic, partitions=2)

        @client.subscribe(topic, group=group, batch_size=200, batch_timeout=0.2)
        async def handle(numbers: list[int]) -> None:
            calls.append(len(numbers))
            seen.extend(numbers)

        await client.start()
        # When 1,000 messages and one undecodable body arrive
        await client.publish_batch(topic, range(1000), key=lambda n: str(n % 7))
        await client.publish_messages(
            [Message(topic, b"{bad", headers={h.CONTENT_TYPE: "application/json"})]
        )
        # Then every number is handled once, in lists of at most 200
        await wait_until(lambda: len(seen) >= 1000, 60)
        assert sorted(seen) == list(range(1000))
        assert max(calls) <= 200 and len(calls) < 1000
        # And the bad one went to the dead-letter topic on its own
        letter = await anext(client.consume(f"{topic}.dlq", group="mqkit.dlq"))
        assert letter.message.headers[h.DLQ_ERROR_TYPE] == "DecodeError"


async def test_a_failing_batch_is_retried_per_message_then_acked(kafka_url: str) -> None:
    # Given a bytes batch handler (the path that builds no message per record) that fails
    # its first call with a transient error
    topic, group = f"batch-fail-{new_id()[:10]}", f"batch-fail-g-{new_id()[:10]}"
    seen: list[bytes] = []
    calls = 0
    async with Client(kafka_url) as client:
        await client.ensure_topic(topic, partitions=2)

        @client.subscribe(topic, group=group, batch_size=50, batch_timeout=0.5,
                          retry=RetryPolicy(base_delay=0.1, max_delay=0.2))
        async def handle(bodies: list[bytes]) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ConnectionError("downstream is down")
            seen.extend(bodies)

        # When 20 messages arrive
        await client.publish_batch(topic, [f"m{i}".encode() for i in range(20)])
        await client.start()
        # Then each is handled exactly once in the end: the failed batch went back through
        # the retry topic one message at a time, nothing was acked with it
        await wait_until(lambda: len(seen) >= 20, 60)
        await asyncio.sleep(1.0)  # room for a wrong duplicate to show up
        assert sorted(seen) == sorted(f"m{i}".encode() for i in range(20))
        assert calls >= 2


async def test_a_batch_is_acked_as_one_and_commits_no_further_than_finished(
    kafka_url: str,
) -> None:
    # Given six messages on a one-partition topic
    topic, group = f"batch-unit-{new_id()[:10]}", f"batch-unit-g-{new_id()[:10]}"
    transport = KafkaTransport(kafka_url)
    await transport.connect()
    try:
        await transport.ensure_topic(TopicSpec(topic, groups=(group,), partitions=1))
        await transport.publish([Message(topic, str(i).encode()) for i in range(6)])
        first = transport.subscription(topic, group, prefetch=100)
        async with asyncio.timeout(30):
            # When the first three are taken as one batch and acked as one
            head = await _take(first, 3)
            assert head.bodies() == [b"0", b"1", b"2"]
            assert [m.body for m in head.messages()] == [b"0", b"1", b"2"]
            await head.ack()
            with pytest.raises(AlreadySettledError):
                await head.ack()
            # And the next three are split into deliveries, of which only the last is acked
            tail = await _take(first, 3)
            deliveries = tail.deliveries()
            with pytest.raises(AlreadySettledError):
                await tail.ack()
            assert [d.message.body for d in deliveries] == [b"3", b"4", b"5"]
            await deliveries[2].ack()
        await first.aclose()
        # Then the group resumes at the first unfinished message: the batch's ack was
        # committed, the out-of-order ack was not carried past the unfinished ones
        second = transport.subscription(topic, group, prefetch=100)
        async with asyncio.timeout(30):
            again = await _take(second, 3)
            assert again.bodies() == [b"3", b"4", b"5"]
            await again.ack()
        await second.aclose()
    finally:
        await transport.close()


async def _take(sub: Subscription, count: int) -> KafkaBatch:
    """A batch of exactly ``count`` records (fetches may hand them out in pieces)."""
    batch = await sub.take_batch(count, 10.0)
    while len(batch) < count:
        batch.extend(await sub.take_batch(count - len(batch), 10.0))
    return batch
