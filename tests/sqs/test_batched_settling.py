"""Settling in batches: ``take`` + ``ack_many``, acks that share a ``DeleteMessageBatch``, an
ack with nobody to share it sent at once, and the poller refilling by whole batches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mqkit import Client
from mqkit.errors import AlreadySettledError
from mqkit.message import Message
from mqkit.testing import wait_until
from mqkit.transport import TopicSpec
from mqkit_sqs import SqsTransport, subscriber
from mqkit_sqs.errors import UnknownTopicError
from mqkit_sqs.subscriber import Subscription
from tests.sqs.conftest import TransportFactory, raw_client, with_options

TIMEOUT = 30


def record_calls(client: Any, operation: str) -> list[dict[str, Any]]:
    """The keyword arguments of every ``operation`` call made through ``client``."""
    calls: list[dict[str, Any]] = []
    original = getattr(client, operation)

    def recorded(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(**kwargs)

    setattr(client, operation, recorded)
    return calls


def queue_depth(sqs_url: str, transport: SqsTransport, topic: str, group: str) -> int:
    """Messages left in the group's queue, visible or in flight."""
    sqs = raw_client(sqs_url, "sqs")
    url = sqs.get_queue_url(QueueName=transport.topology.queue_name(topic, group))["QueueUrl"]
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


async def published(transport_factory: TransportFactory, topic: str, count: int) -> SqsTransport:
    transport = await transport_factory(wait_time=1)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    if count:
        await transport.publish([Message(topic=topic, body=str(n).encode()) for n in range(count)])
    return transport


async def test_take_and_ack_many_delete_ten_per_call(
    transport_factory: TransportFactory, topic: str, sqs_url: str
) -> None:
    # Given 25 messages and a subscription whose deletes are recorded
    transport = await published(transport_factory, topic, 25)
    deletes = record_calls(transport._conn.sqs, "delete_message_batch")
    sub = transport.subscribe(topic, "g", prefetch=50)
    assert isinstance(sub, Subscription)
    # When each batch that take hands out is settled with ack_many
    got: list[bytes] = []
    batches = 0
    async with asyncio.timeout(TIMEOUT):
        while len(got) < 25:
            batch = await sub.take(10, 5)
            assert batch, "take timed out with messages still unread"
            assert len(batch) <= 10
            got += [d.message.body for d in batch]
            await sub.ack_many(batch)
            batches += 1
            assert all(d.settled == "acked" for d in batch)
    # Then every message came once, each batch was one DeleteMessageBatch call
    assert sorted(got, key=int) == [str(n).encode() for n in range(25)]
    assert len(deletes) == batches
    assert sum(len(call["Entries"]) for call in deletes) == 25
    # And nothing is left in the queue
    await sub.aclose()
    assert await asyncio.to_thread(queue_depth, sqs_url, transport, topic, "g") == 0


async def test_ack_many_with_one_settled_delivery_acks_none(
    transport_factory: TransportFactory, topic: str
) -> None:
    # Given two deliveries, one of them already acked
    transport = await published(transport_factory, topic, 2)
    sub = transport.subscribe(topic, "g")
    assert isinstance(sub, Subscription)
    got: list[Any] = []
    async with asyncio.timeout(TIMEOUT):
        while len(got) < 2:
            got += await sub.take(10, 5)
    first, second = got
    await first.ack()
    # When both are given to ack_many
    with pytest.raises(AlreadySettledError):
        await sub.ack_many([first, second])
    # Then the other one was left unsettled, and can still be acked
    assert second.settled is None
    await second.ack()
    assert second.settled == "acked"


async def test_an_ack_nobody_could_share_is_sent_without_the_linger(
    transport_factory: TransportFactory, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an ack linger far longer than the test allows
    monkeypatch.setattr(subscriber, "ACK_LINGER", 3600.0)
    transport = await published(transport_factory, topic, 3)
    deletes = record_calls(transport._conn.sqs, "delete_message_batch")
    sub = transport.subscribe(topic, "g")
    async with asyncio.timeout(TIMEOUT):
        # When a loop acks each delivery before taking the next
        only = await anext(sub)
        await only.ack()
        # And two deliveries out at once are acked together
        first, second = await anext(sub), await anext(sub)
        await asyncio.gather(first.ack(), second.ack())
    # Then each ack returned without waiting for the linger: the lone one alone, the two
    # sharing one DeleteMessageBatch
    assert [len(call["Entries"]) for call in deletes] == [1, 2]


async def test_acks_made_while_a_delete_is_in_flight_share_the_next_call(
    transport_factory: TransportFactory, topic: str
) -> None:
    # Given 6 messages and handlers that take, handle at once and ack one after another (as
    # the Client's workers do when a handler never waits): each ack finds no other delivery
    # handed out, so without the group commit each would be a call of its own
    transport = await published(transport_factory, topic, 6)
    deletes = record_calls(transport._conn.sqs, "delete_message_batch")
    sub = transport.subscribe(topic, "g", prefetch=10)
    assert isinstance(sub, Subscription)
    async with asyncio.timeout(TIMEOUT):
        # When the first is taken (the other five waiting to be handed out) and acked, its
        # delete going out at once
        deliveries = [await anext(sub)]
        await wait_until(lambda: sub._ready.qsize() == 5, timeout=TIMEOUT)
        acks = [asyncio.ensure_future(deliveries[0].ack())]
        await asyncio.sleep(0)
        # And the other five are each taken and acked while that delete is in flight
        for _ in range(5):
            deliveries.append(await anext(sub))
            acks.append(asyncio.ensure_future(deliveries[-1].ack()))
            await asyncio.sleep(0)
        await asyncio.gather(*acks)
    # Then two calls settled all six: the first alone, the five that waited together
    assert [len(call["Entries"]) for call in deletes] == [1, 5]
    assert all(d.settled == "acked" for d in deliveries)
    await sub.aclose()


async def test_the_poller_refills_by_whole_batches(
    transport_factory: TransportFactory, topic: str, sqs_url: str
) -> None:
    # Given 40 messages and a subscription of prefetch 20 whose receives are recorded
    transport = await published(transport_factory, topic, 40)
    receives = record_calls(transport._conn.sqs_receive, "receive_message")
    sub = transport.subscribe(topic, "g", prefetch=20)
    assert isinstance(sub, Subscription)
    # When each delivery is acked before the next is taken
    got: list[bytes] = []
    async with asyncio.timeout(TIMEOUT):
        while len(got) < 40:
            delivery = await anext(sub)
            got.append(delivery.message.body)
            await delivery.ack()
    await sub.aclose()
    # Then every message came once, and every receive asked for a full batch of 10 (an ack
    # freeing one place does not trigger a receive of one)
    assert sorted(got, key=int) == [str(n).encode() for n in range(40)]
    assert receives and {call["MaxNumberOfMessages"] for call in receives} == {10}
    assert await asyncio.to_thread(queue_depth, sqs_url, transport, topic, "g") == 0


async def test_a_small_prefetch_still_gets_everything(
    transport_factory: TransportFactory, topic: str
) -> None:
    # Given 5 messages and a subscription of prefetch 3, holding each delivery unacked
    transport = await published(transport_factory, topic, 5)
    sub = transport.subscribe(topic, "g", prefetch=3)
    held: list[Any] = []
    async with asyncio.timeout(TIMEOUT):
        # When three are taken and held, then acked one by one as more are taken
        while len(held) < 3:
            held.append(await anext(sub))
        more: list[Any] = []
        while len(held) + len(more) < 5:
            await held[len(more)].ack()
            more.append(await anext(sub))
    # Then all five came: each ack made room for one more
    bodies = sorted(d.message.body for d in [*held, *more])
    assert bodies == [str(n).encode() for n in range(5)]


async def test_take_waits_its_timeout_then_returns_nothing_and_nothing_once_closed(
    transport_factory: TransportFactory, topic: str
) -> None:
    transport = await published(transport_factory, topic, 0)
    sub = transport.subscribe(topic, "g")
    assert isinstance(sub, Subscription)
    assert await sub.take(10, 0.3) == []
    await sub.aclose()
    assert await sub.take(10, 30) == []
    with pytest.raises(StopAsyncIteration):
        await anext(sub)


async def test_take_raises_the_error_that_ended_polling(
    transport_factory: TransportFactory, topic: str
) -> None:
    # Given a subscription to a topic nobody created
    transport = await transport_factory(wait_time=1)
    sub = transport.subscribe(topic, "g")
    assert isinstance(sub, Subscription)
    # Then take raises the poller's error
    with pytest.raises(UnknownTopicError):
        await sub.take(10, TIMEOUT)


async def test_a_batch_handler_on_sqs_sees_every_message_once_and_empties_the_queue(
    sqs_url: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch handler, with the subscription's take and ack_many counted
    used: list[str] = []
    take, ack_many = Subscription.take, Subscription.ack_many

    async def counted_take(self: Subscription, max_items: int, timeout: float) -> Any:
        used.append("take")
        return await take(self, max_items, timeout)

    async def counted_ack_many(self: Subscription, deliveries: Any) -> None:
        used.append("ack_many")
        await ack_many(self, deliveries)

    monkeypatch.setattr(Subscription, "take", counted_take)
    monkeypatch.setattr(Subscription, "ack_many", counted_ack_many)
    seen: list[int] = []
    client = Client(with_options(sqs_url, wait_time=1))
    try:
        await client.connect()
        await client.ensure_topic(topic, groups=["batch"])

        @client.subscribe(topic, group="batch", batch_size=10, batch_timeout=0.2)
        async def handle(numbers: list[int]) -> None:
            seen.extend(numbers)

        # When 30 messages are published before it starts
        await client.publish_batch(topic, range(30))
        await client.start()
        await wait_until(lambda: len(seen) >= 30, TIMEOUT, what="30 numbers handled")
        await client.close()
        transport = client.transport
        assert isinstance(transport, SqsTransport)
        depth = await asyncio.to_thread(queue_depth, sqs_url, transport, topic, "batch")
    finally:
        await client.close()
        await client.transport.close()
    # Then every number came once, through take, settled with ack_many, none left behind
    assert sorted(seen) == list(range(30))
    assert "take" in used and "ack_many" in used
    assert depth == 0
