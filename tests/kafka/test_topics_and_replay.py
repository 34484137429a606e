"""On the real Kafka: ensure_topic, compacted tables, lag and replay of a stopped group."""

from __future__ import annotations

import asyncio

import pytest

from mqkit.message import Message
from mqkit.transport import TopicSpec
from mqkit_kafka import (
    KafkaTransport,
    TopicMismatchError,
    consumer_lag,
    seek_group,
    table_view,
    tombstone,
)
from tests.kafka.helpers import topic_name


async def topic_config(transport: KafkaTransport, topic: str, name: str) -> str:
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    admin = AdminClient({"bootstrap.servers": transport.config.bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = await asyncio.wrap_future(admin.describe_configs([resource])[resource])
    value: str = entries[name].value
    return value


async def test_partitions_grow_but_never_shrink(transport: KafkaTransport) -> None:
    topic = topic_name("grow")
    await transport.ensure_topic(TopicSpec(topic, partitions=2))
    await transport.ensure_topic(TopicSpec(topic, partitions=5))
    assert (await transport.admin.partitions([topic]))[topic] == 5
    with pytest.raises(TopicMismatchError, match="cannot shrink"):
        await transport.ensure_topic(TopicSpec(topic, partitions=3))


async def test_retention_and_compaction_are_set_and_checked(transport: KafkaTransport) -> None:
    topic = topic_name("config")
    await transport.ensure_topic(TopicSpec(topic, compacted=True, retention_seconds=3600))
    assert await topic_config(transport, topic, "cleanup.policy") == "compact"
    # Retention can be changed; the cleanup policy cannot be flipped silently
    await transport.ensure_topic(TopicSpec(topic, compacted=True, retention_seconds=7200))
    assert await topic_config(transport, topic, "retention.ms") == "7200000"
    with pytest.raises(TopicMismatchError, match=r"cleanup\.policy"):
        await transport.ensure_topic(TopicSpec(topic, retention_seconds=10, compacted=False,
                                               options={"cleanup.policy": "delete"}))


async def test_compacted_topic_table_view_keeps_the_latest_value_per_key(
    transport: KafkaTransport, kafka_url: str
) -> None:
    # Given the seed's compaction example on a compacted topic
    topic = topic_name("table")
    await transport.ensure_topic(TopicSpec(topic, compacted=True))
    updates = [("A", b"1"), ("B", b"1"), ("A", b"2"), ("B", b"2"), ("A", b"3")]
    await transport.publish([Message(topic=topic, key=k, body=v) for k, v in updates])
    # Then the view is {A: 3, B: 2}
    view = await table_view(kafka_url, topic)
    assert {k: m.body for k, m in view.items()} == {"A": b"3", "B": b"2"}
    # When B gets a tombstone, then B leaves the view
    await transport.publish([tombstone(topic, "B")])
    view = await table_view(kafka_url, topic)
    assert {k: m.body for k, m in view.items()} == {"A": b"3"}


async def test_lag_and_replay_of_a_stopped_group(transport: KafkaTransport, kafka_url: str) -> None:
    # Given a group that finished 10 messages of a one-partition topic
    topic = topic_name("lag")
    group = f"g-{topic}"  # group ids are cluster-wide: never share one between tests
    await transport.ensure_topic(TopicSpec(topic, partitions=1, groups=(group,)))
    await transport.publish([Message(topic=topic, body=str(i).encode()) for i in range(10)])
    sub = transport.subscription(topic, group, prefetch=100)
    async with asyncio.timeout(30):
        for _ in range(10):
            await (await anext(sub)).ack()
    await sub.aclose()
    [row] = await consumer_lag(kafka_url, topic, group)
    assert (row.committed, row.log_end, row.lag) == (10, 10, 0)
    # When five more arrive, the lag says so
    await transport.publish([Message(topic=topic, body=b"more") for _ in range(5)])
    [row] = await consumer_lag(kafka_url, topic, group)
    assert row.lag == 5
    # When the group is moved to offset 3, then it starts there
    [moved] = await seek_group(kafka_url, topic, group, offset=3)
    assert (moved.before, moved.after) == (10, 3)
    [row] = await consumer_lag(kafka_url, topic, group)
    assert row.lag == 12
    # And to the beginning
    [moved] = await seek_group(kafka_url, topic, group, to="beginning")
    assert moved.after == 0
