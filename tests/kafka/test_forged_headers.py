"""On the real Kafka: mqkit's internal headers are trusted only on its own retry topic.

A producer that bypasses mqkit can write ``x-mqkit-attempt`` and ``x-mqkit-topic`` on a
record of the main topic. Believing them would dead-letter a healthy message on its first
failure (attempt 99 is past every retry budget) or pass it off as another topic's.
"""

from __future__ import annotations

import asyncio

from confluent_kafka import Producer

from mqkit import Client
from mqkit.message import Delivery, Message
from mqkit.middleware import RetryPolicy
from mqkit.testing import wait_until
from tests.kafka.helpers import bootstrap, topic_name


async def test_forged_attempt_and_topic_on_the_main_topic_are_ignored(kafka_url: str) -> None:
    # Given a handler that fails transiently once, with three attempts allowed
    topic = topic_name("forged")
    group = f"g-{topic}"
    seen: list[tuple[int, str, str | None, str | None]] = []
    handled: list[bytes] = []
    async with Client(kafka_url) as client:

        @client.subscribe(
            topic, group=group, retry=RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2)
        )
        async def handle(message: Message, delivery: Delivery) -> None:
            seen.append((
                delivery.attempt,
                message.topic,
                message.headers.get("x-mqkit-attempt"),
                message.headers.get("x-mqkit-topic"),
            ))
            if len(seen) == 1:
                raise ConnectionError("a blip")
            handled.append(message.body)

        await client.start()
        # When a raw producer writes a record claiming attempt 99 of another topic
        producer = Producer({"bootstrap.servers": bootstrap(kafka_url)})
        producer.produce(
            topic,
            b"forged",
            headers=[("x-mqkit-attempt", b"99"), ("x-mqkit-topic", b"somewhere.else")],
        )
        assert await asyncio.to_thread(producer.flush, 30) == 0
        # Then it is retried through the retry topic and handled, not dead-lettered
        await wait_until(lambda: bool(handled), 60)
        assert handled == [b"forged"]
        # And the first delivery was attempt 1 of the real topic, the retry attempt 2
        assert [s[:2] for s in seen] == [(1, topic), (2, topic)]
        # And the internal headers never reach the handler
        assert all(s[2:] == (None, None) for s in seen)
        assert client.failures and len(client.failures) == 1
