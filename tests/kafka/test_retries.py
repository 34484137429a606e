"""On the real Kafka: delayed redelivery through the group's retry topic."""

from __future__ import annotations

import asyncio
import time

import pytest

from mqkit.message import Message
from mqkit.transport import TopicSpec
from mqkit_kafka import KafkaTransport, retry_topic
from tests.kafka.helpers import topic_name


async def test_a_nack_in_one_group_is_not_seen_by_another(transport: KafkaTransport) -> None:
    # Given two groups on one topic
    topic = topic_name("retry-groups")
    billing, audit = f"billing-{topic}", f"audit-{topic}"
    await transport.ensure_topic(TopicSpec(topic, groups=(billing, audit)))
    await transport.publish([Message(topic=topic, body=b"once", key="k")])
    async with asyncio.timeout(30):
        # When billing nacks the message and gets its redelivery
        first = transport.subscription(topic, billing)
        delivery = await anext(first)
        await delivery.nack()
        again = await anext(first)
        await again.ack()
        # Then the redelivery is the same message, attempt 2, with its original topic
        assert (again.message.id, again.attempt, again.message.topic) == (
            delivery.message.id, 2, topic,
        )
        assert again.source_topic == retry_topic(topic, billing)
        # And audit sees the message exactly once (the retry copy is billing's own)
        second = transport.subscription(topic, audit)
        seen = await anext(second)
        await seen.ack()
        assert seen.message.id == delivery.message.id
        assert second.assignment  # it owns partitions of the topic and of its retry topic
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):
            await anext(second)  # nothing more for audit
    await first.aclose()
    await second.aclose()


async def test_delayed_redelivery_is_not_early_even_after_the_consumer_restarts(
    transport: KafkaTransport,
) -> None:
    # Given a message nacked with a 3 s delay
    topic = topic_name("retry-restart")
    group = f"g-{topic}"
    await transport.ensure_topic(TopicSpec(topic, groups=(group,)))
    await transport.publish([Message(topic=topic, body=b"later")])
    async with asyncio.timeout(30):
        sub = transport.subscription(topic, group)
        delivery = await anext(sub)
        nacked_at = time.time()
        await delivery.nack(delay=3.0)
        # When the consumer stops right away and a new member of the group takes over
        await sub.aclose()
        successor = transport.subscription(topic, group)
        again = await anext(successor)
        waited = time.time() - nacked_at
        await again.ack()
        await successor.aclose()
    # Then the redelivery still waited for the time asked
    assert again.message.id == delivery.message.id and again.attempt == 2
    assert waited >= 3.0, f"redelivered after {waited:.3f}s, asked for 3s"
