"""Client.wait_ready on Kafka: it returns once the group gave each subscription its share."""

from __future__ import annotations

from typing import Any

from mqkit import Client, Delivery
from mqkit.testing import wait_until
from mqkit.transport import TopicSpec
from tests.kafka.helpers import topic_name


def _share(client: Client) -> list[Any]:
    (source,) = client.sources
    return list(source.assignment)  # type: ignore[attr-defined]


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
        # When the first starts and waits, then it owns every partition at once
        await clients[0].start()
        await clients[0].wait_ready(timeout=60)
        assert len(_share(clients[0])) == 2
        # When the other two start, then waiting returns for each, the spare one included
        for client in clients[1:]:
            await client.start()
            await client.wait_ready(timeout=60)
        # And (cooperative rebalancing moves partitions in a second step) the group settles
        # with one owner per partition and the spare member idle
        def settled() -> bool:
            shares = [_share(c) for c in clients]
            owned = sorted(tp for share in shares for tp in share)
            return owned == both and sorted(map(len, shares)) == [0, 1, 1]

        both = sorted([(topic, 0), (f"{topic}.mqkit-retry.g", 0)])
        await wait_until(settled, 30)
    finally:
        for client in reversed(clients):
            await client.close()
