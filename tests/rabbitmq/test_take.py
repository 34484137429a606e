"""``take``: a RabbitMQ subscription hands out its buffered deliveries in bulk."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mqkit import Client
from mqkit.message import Message, new_id
from mqkit.testing import wait_until
from mqkit.transport import TopicSpec
from mqkit_rabbitmq.errors import ChannelLost
from mqkit_rabbitmq.subscriber import Subscription
from tests.rabbitmq.conftest import TransportFactory, delete_topology, queue_depth


async def test_batch_handler_takes_lists_and_sees_every_message_once(
    url: str, monkeypatch: pytest.MonkeyPatch, raw_channel: Any
) -> None:
    # Given a batch handler on a RabbitMQ topic, with the subscription's take counted
    topic = f"numbers-{new_id()[:10]}"
    takes: list[int] = []
    original = Subscription.take

    async def counted(self: Subscription, max_items: int, timeout: float) -> Any:
        takes.append(max_items)
        return await original(self, max_items, timeout)

    monkeypatch.setattr(Subscription, "take", counted)
    seen: list[int] = []
    sizes: list[int] = []
    client = Client(url)
    try:
        await client.ensure_topic(topic, groups=["batch"])

        @client.subscribe(topic, group="batch", batch_size=200, batch_timeout=0.2)
        async def handle(numbers: list[int]) -> None:
            sizes.append(len(numbers))
            seen.extend(numbers)

        # When 1,000 messages are published before it starts
        await client.publish_batch(topic, range(1000))
        await client.start()
        await wait_until(lambda: len(seen) >= 1000, 30, what="1,000 numbers handled")
        await asyncio.sleep(0.3)  # room for a duplicate that should not come
        await client.close()
        left_in_queue = queue_depth(raw_channel, f"{topic}:batch")  # unacked ones come back
    finally:
        await client.close()
        delete_topology(url, [client.transport])  # type: ignore[list-item]
    # Then every number came once, in lists of more than one and at most 200, through take
    assert sorted(seen) == list(range(1000))
    assert max(sizes) <= 200 and max(sizes) > 1 and len(sizes) < 1000
    assert takes and max(takes) <= 200
    # And every one was acked
    assert left_in_queue == 0


async def test_take_waits_for_one_then_returns_what_is_buffered(
    make_transport: TransportFactory,
) -> None:
    topic = f"jobs-{new_id()[:10]}"
    transport = await make_transport()
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    sub = transport.subscribe(topic, "g", prefetch=100)
    assert isinstance(sub, Subscription)
    # Given nothing published: take waits its timeout and returns nothing
    assert await sub.take(10, 0.3) == []
    # When 30 messages arrive
    await transport.publish([Message(topic=topic, body=str(n).encode()) for n in range(30)])
    first = await sub.take(10, 10)
    # Then take returns at least one and never more than asked
    assert 1 <= len(first) <= 10
    got = [d.message.body for d in first]
    while len(got) < 30:
        more = await sub.take(100, 10)
        assert more, "take timed out with messages still unread"
        got += [d.message.body for d in more]
        for delivery in more:
            await delivery.ack()
    assert sorted(got, key=int) == [str(n).encode() for n in range(30)]
    # And a nacked one comes back, as its next attempt
    await first[0].nack()
    again = await sub.take(10, 10)
    assert [(d.message.body, d.attempt) for d in again] == [(first[0].message.body, 2)]
    for delivery in [*first[1:], *again]:
        await delivery.ack()
    # And once closed, take returns [] at once and iteration ends
    await sub.aclose()
    assert await sub.take(10, 30) == []
    with pytest.raises(StopAsyncIteration):
        await anext(sub)


async def test_take_raises_the_error_that_ended_consuming_once_buffer_is_out(
    make_transport: TransportFactory,
) -> None:
    # Given a subscription holding one message when its consumer is cancelled
    topic = f"jobs-{new_id()[:10]}"
    transport = await make_transport()
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    sub = transport.subscribe(topic, "g")
    assert isinstance(sub, Subscription)
    await sub.start()
    await transport.publish([Message(topic=topic, body=b"last")])
    await wait_until(lambda: len(sub._buffer) == 1, 10, what="the message buffered")
    sub._fail(ChannelLost("the broker cancelled the consumer"))
    # Then take first hands out what was buffered, then raises the error, once
    [delivery] = await sub.take(10, 5)
    await delivery.ack()
    with pytest.raises(ChannelLost):
        await sub.take(10, 5)
    assert await sub.take(10, 0.1) == []
