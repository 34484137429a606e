"""Client.wait_ready on Kafka: it returns once the group gave each subscription its share."""

from __future__ import annotations

from typing import Any

from mqkit import Client, Delivery
from mqkit.transport import TopicSpec
from tests.kafka.helpers import topic_name


async def test_wait_ready_returns_once_the_group_shared_out_its_partitions(
    kafka_url: str,
) -> None:
    # Given a one-partition topic (two partitions with the group's retry topic) and three
    # clients subscribing in one group: one member too many
    topic = topic_name("ready")
    clients = [Client(kafka_url) for _ in range(3)]
    await clients[0].connect()
    await clients[0].transport.ensure_topic(TopicSpec(topic, groups=("g",), partitions=1))
    for client in clients:

        @client.subscribe(topic, group="g")
        async def handle(body: bytes, delivery: Delivery) -> None: ...

    try:
        # When each starts and waits until ready
        owned: list[list[Any]] = []
        for client in clients:
            await client.start()
            await client.wait_ready(timeout=60)
        # Then every partition has exactly one owner, and the spare member is ready with none
        for client in clients:
            (source,) = client.sources
            owned.append(list(source.assignment))  # type: ignore[attr-defined]
        everything = sorted(tp for share in owned for tp in share)
        assert everything == sorted([(topic, 0), (f"{topic}.mqkit-retry.g", 0)])
        assert sorted(len(share) for share in owned) == [0, 1, 1]
    finally:
        for client in reversed(clients):
            await client.close()
