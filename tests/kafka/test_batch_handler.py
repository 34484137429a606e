"""The core's batch handler on Kafka reads whole fetched batches (the source's ``take``)."""

from __future__ import annotations

from mqkit import Client
from mqkit import headers as h
from mqkit.message import Message, new_id
from mqkit.testing import wait_until


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
