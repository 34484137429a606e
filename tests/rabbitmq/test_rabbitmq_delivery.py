"""Delivery features: priorities, TTL to the dead-letter queue, delayed retries, heartbeats."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mqkit import headers as h
from mqkit.client import DLQ_GROUP
from mqkit.message import Delivery, Message
from mqkit.testing import wait_until
from mqkit.transport import TopicSpec
from tests.rabbitmq.conftest import TransportFactory, queue_depth


async def test_priorities_are_served_high_first(
    make_transport: TransportFactory, raw_channel: Any
) -> None:
    # Given a priority queue with a backlog: three low, then three high
    transport = await make_transport()
    await transport.ensure_topic(TopicSpec("jobs", groups=("g",), options={"max_priority": "9"}))
    low = [Message(topic="jobs", body=b"low", headers={"priority": "1"}) for _ in range(3)]
    high = [Message(topic="jobs", body=b"high", headers={"priority": "9"}) for _ in range(3)]
    await transport.publish(low + high)
    assert queue_depth(raw_channel, "jobs:g") == 6
    # When a consumer reads them one at a time
    order: list[bytes] = []
    async with asyncio.timeout(10):
        async for delivery in transport.subscribe("jobs", "g", prefetch=1):
            order.append(delivery.message.body)
            assert delivery.message.headers["priority"] in ("1", "9")
            await delivery.ack()
            if len(order) == 6:
                break
    # Then the high ones come first
    assert order == [b"high"] * 3 + [b"low"] * 3


async def test_expired_messages_land_in_the_dead_letter_queue(
    make_transport: TransportFactory,
) -> None:
    # Given a group queue whose messages live 0.2 s, and its dead-letter queue
    transport = await make_transport()
    await transport.ensure_topic(TopicSpec("offers", groups=("g",), retention_seconds=0.2))
    await transport.ensure_topic(TopicSpec("offers.dlq", groups=(DLQ_GROUP,)))
    # When a message nobody consumes is published
    sent = Message(topic="offers", body=b"stale soon", headers={"x-note": "n"})
    await transport.publish([sent])
    # Then the broker dead-letters it, and mqkit says why
    async with asyncio.timeout(10):
        delivery = await anext(transport.subscribe("offers.dlq", DLQ_GROUP))
    await delivery.ack()
    letter = delivery.message
    assert (letter.id, letter.body, letter.topic) == (sent.id, b"stale soon", "offers.dlq")
    assert letter.headers[h.DLQ_REASON] == "expired"
    assert letter.headers[h.DLQ_ORIGINAL_TOPIC] == "offers"
    assert letter.headers["x-note"] == "n"


async def test_per_message_expiration_dead_letters_only_that_message(
    make_transport: TransportFactory, raw_channel: Any
) -> None:
    transport = await make_transport()
    await transport.ensure_topic(TopicSpec("quotes", groups=("g",)))
    await transport.ensure_topic(TopicSpec("quotes.dlq", groups=(DLQ_GROUP,)))
    await transport.publish([
        Message(topic="quotes", body=b"short", headers={"expiration": "100"}),
        Message(topic="quotes", body=b"long"),
    ])
    async with asyncio.timeout(10):
        letter = await anext(transport.subscribe("quotes.dlq", DLQ_GROUP))
    await letter.ack()
    assert letter.message.body == b"short"
    assert queue_depth(raw_channel, "quotes:g") == 1


async def test_delayed_retry_comes_back_not_earlier_and_does_not_block_others(
    make_transport: TransportFactory,
) -> None:
    # Given two messages in a group
    transport = await make_transport()
    await transport.ensure_topic(TopicSpec("tasks", groups=("g",)))
    await transport.publish([
        Message(topic="tasks", body=b"first", headers={"x-note": "kept"}),
        Message(topic="tasks", body=b"second"),
    ])
    sub = transport.subscribe("tasks", "g")
    seen: list[tuple[bytes, int, float]] = []
    async with asyncio.timeout(10):
        # When the first is nacked with a 0.3 s delay
        first = await anext(sub)
        nacked_at = time.monotonic()
        await first.nack(delay=0.3)
        # Then the second flows meanwhile, and the first returns no sooner than asked
        async for delivery in sub:
            seen.append((delivery.message.body, delivery.attempt, time.monotonic() - nacked_at))
            await delivery.ack()
            if len(seen) == 2:
                break
    assert [s[0] for s in seen] == [b"second", b"first"]
    _body, attempt, waited = seen[1]
    assert attempt == 2 and waited >= 0.3
    assert first.message.body == b"first"


async def test_retried_copy_keeps_topic_id_and_headers(make_transport: TransportFactory) -> None:
    transport = await make_transport()
    await transport.ensure_topic(TopicSpec("keep", groups=("g",)))
    sent = Message(topic="keep", body=b"b", key="k", headers={"x-note": "ünï"})
    await transport.publish([sent])
    sub = transport.subscribe("keep", "g")
    async with asyncio.timeout(10):
        await (await anext(sub)).nack()
        again = await anext(sub)
    await again.ack()
    m = again.message
    assert (m.id, m.topic, m.key, m.headers["x-note"]) == (sent.id, "keep", "k", "ünï")
    assert again.attempt == 2


async def test_long_handler_keeps_its_connection_through_heartbeats(
    make_transport: TransportFactory, raw_channel: Any
) -> None:
    # Given a connection with a 1 s heartbeat
    transport = await make_transport(heartbeat=1)
    await transport.ensure_topic(TopicSpec("slow", groups=("g",)))
    await transport.publish([Message(topic="slow", body=b"x")])
    sub = transport.subscribe("slow", "g")
    async with asyncio.timeout(20):
        delivery: Delivery = await anext(sub)
        # When its handler runs for three heartbeat intervals
        await asyncio.sleep(3.0)
        await delivery.ack()
    # Then the ack reached the broker on the same connection
    await wait_until(lambda: queue_depth(raw_channel, "slow:g") == 0, 5, what="the ack")
    assert transport.reconnects == 0
    assert transport._sub_link._conn is not None
    assert transport._sub_link._conn.params.heartbeat == 1
