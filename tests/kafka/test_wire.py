"""On the real Kafka: partitioning like Java, interop with raw clients, clear errors."""

from __future__ import annotations

import asyncio
import time

import confluent_kafka as ck
import pytest

from mqkit.client import Client
from mqkit.errors import ConnectionFailed, MessageTooLarge
from mqkit.message import Message
from mqkit.transport import TopicSpec
from mqkit_kafka import KafkaDelivery, KafkaTransport, UnknownTopicError, java_partition
from tests.kafka.helpers import bootstrap, topic_name


async def test_key_partitions_equal_the_java_clients(transport: KafkaTransport) -> None:
    # Given a topic with 7 partitions
    topic = topic_name("partitions")
    await transport.ensure_topic(TopicSpec(topic, partitions=7))
    keys = [f"customer-{i}" for i in range(60)] + ["21", "foobar", "ünïcødé"]
    # When mqkit publishes one message per key
    partitions = await transport.publish_partitions(
        [Message(topic=topic, body=b"x", key=k) for k in keys]
    )
    # Then each went where Java's murmur2 (positive, mod 7) puts it
    assert partitions == [java_partition(k, 7) for k in keys]


def _raw_consume(url: str, topic: str, count: int) -> list[ck.Message]:
    consumer = ck.Consumer({
        "bootstrap.servers": bootstrap(url), "group.id": f"raw-{topic}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    got: list[ck.Message] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(got) < count and time.monotonic() < deadline:
            for record in consumer.consume(count, 0.5):
                assert record.error() is None, record.error()
                got.append(record)
    finally:
        consumer.close()
    return got


async def test_a_raw_consumer_reads_what_mqkit_published(kafka_url: str) -> None:
    # Given mqkit publishes a keyed message with headers
    topic = topic_name("interop-out")
    async with Client(kafka_url) as client:
        await client.ensure_topic(topic)
        sent = await client.publish(
            topic, {"amount": 5}, key="order-1", headers={"x-tenant": "acme ✓"},
            correlation_id="c-1",
        )
    # When a plain confluent-kafka consumer reads the topic
    [record] = await asyncio.to_thread(_raw_consume, kafka_url, topic, 1)
    # Then it sees the key, the body and the headers as plain Kafka data
    headers = dict(record.headers() or [])
    assert record.key() == b"order-1"
    assert record.value() == b'{"amount":5}'
    assert headers["x-tenant"] == "acme ✓".encode()
    assert headers["correlation-id"] == b"c-1"
    assert headers["content-type"] == b"application/json"
    assert headers["x-mqkit-id"] == sent.id.encode()
    assert record.timestamp() == (ck.TIMESTAMP_CREATE_TIME, int(sent.timestamp * 1000))


async def test_mqkit_reads_what_a_raw_producer_published(kafka_url: str) -> None:
    # Given a plain confluent-kafka producer writes a record with headers
    topic = topic_name("interop-in")
    async with Client(kafka_url) as client:
        await client.ensure_topic(topic, groups=[f"g-{topic}"])
        producer = ck.Producer({"bootstrap.servers": bootstrap(kafka_url)})
        producer.produce(topic, key=b"k-9", value=b"raw body", headers=[("x-from", b"java")])
        assert producer.flush(10) == 0
        # When mqkit consumes it
        async with asyncio.timeout(30):
            consumer = client.consume(topic, group=f"g-{topic}")
            delivery = await anext(consumer)
            await delivery.ack()
            await consumer.aclose()
    # Then key, body and headers arrive, with an id stable for redeliveries
    m = delivery.message
    assert (m.key, m.body, m.headers["x-from"]) == ("k-9", b"raw body", "java")
    assert isinstance(delivery, KafkaDelivery) and delivery.offset == 0
    assert m.id == f"{topic}:{delivery.partition}:0"  # topic:partition:offset
    assert delivery.attempt == 1


async def test_unreachable_broker_fails_fast_with_connection_failed() -> None:
    transport = KafkaTransport("kafka://127.0.0.1:1?connect_timeout=1")
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="cannot reach Kafka"):
        await transport.connect()
    assert time.monotonic() - started < 10


async def test_publishing_to_an_unknown_topic_is_a_clear_error(kafka_url: str) -> None:
    transport = KafkaTransport(kafka_url, connect_timeout=2)
    await transport.connect()
    try:
        with pytest.raises(UnknownTopicError, match="create it with ensure_topic"):
            await transport.publish([Message(topic=topic_name("missing"), body=b"x")])
    finally:
        await transport.close()


async def test_subscribing_to_an_unknown_topic_is_a_clear_error(
    transport: KafkaTransport,
) -> None:
    sub = transport.subscription(topic_name("missing"), "g")
    with pytest.raises(UnknownTopicError, match="does not exist"):
        await anext(sub)


async def test_broker_refusing_a_large_message_is_message_too_large(kafka_url: str) -> None:
    # Given a topic whose broker-side limit is lower than what mqkit lets through
    topic = topic_name("small")
    transport = KafkaTransport(kafka_url)
    await transport.connect()
    try:
        await transport.ensure_topic(TopicSpec(topic, options={"max.message.bytes": "2000"}))
        # When a 10 kB message is published, then the broker's refusal is MessageTooLarge
        with pytest.raises(MessageTooLarge):
            await transport.publish([Message(topic=topic, body=b"x" * 10_000)])
    finally:
        await transport.close()
