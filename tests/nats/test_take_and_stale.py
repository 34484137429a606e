"""NATS subscriptions: ``take`` (batch hand-out), the idle pull loop, stale JetStream acks."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import pytest

from mqkit import Client
from mqkit.message import Message
from mqkit.testing import wait_until
from mqkit.transport import TopicSpec
from mqkit_nats.subscriber import CoreSubscription, JetStreamSubscription
from tests.nats.conftest import Factory, fresh_topic

STALE = "passed its ack timeout"


def count_calls(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[int]:
    """Wrap ``cls.name`` so every call is counted (one entry per call)."""
    calls: list[int] = []
    original = getattr(cls, name)

    async def counted(self: Any, *args: Any) -> Any:
        calls.append(1)
        return await original(self, *args)

    monkeypatch.setattr(cls, name, counted)
    return calls


async def test_batch_handler_on_jetstream_takes_lists_and_sees_every_message_once(
    jetstream_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch handler on a JetStream topic, with the subscription's take counted
    takes = count_calls(monkeypatch, JetStreamSubscription, "take")
    topic, group = fresh_topic(), "batch"
    seen: list[int] = []
    sizes: list[int] = []
    async with Client(jetstream_url) as client:
        await client.ensure_topic(topic, groups=[group])

        @client.subscribe(topic, group=group, batch_size=200, batch_timeout=0.2)
        async def handle(numbers: list[int]) -> None:
            sizes.append(len(numbers))
            seen.extend(numbers)

        # When 1,000 messages are published before it starts
        await client.publish_batch(topic, range(1000))
        await client.start()
        await wait_until(lambda: len(seen) >= 1000, 30, what="1,000 numbers handled")
        await asyncio.sleep(0.3)  # room for a duplicate that should not come
        transport: Any = client.transport
        stream = transport._streams[topic]
        consumer = await transport.js.consumer_info(stream, group)
        for name in set(transport._streams.values()):
            await transport.js.delete_stream(name)
    # Then every number came once, in lists of more than one and at most 200, through take
    assert sorted(seen) == list(range(1000))
    assert max(sizes) <= 200 and max(sizes) > 1 and len(sizes) < 1000
    assert takes
    # And every one was acked
    assert (consumer.num_ack_pending, consumer.num_pending) == (0, 0)


async def test_jetstream_take_waits_for_one_then_returns_what_is_buffered(
    jetstream: Factory, topic: str
) -> None:
    transport = await jetstream(fetch_wait=0.2)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    sub = transport.subscribe(topic, "g", prefetch=100)
    # Given nothing published: take waits its timeout and returns nothing
    assert await sub.take(10, 0.3) == []
    # When 30 messages arrive
    await transport.publish([Message(topic=topic, body=str(n).encode()) for n in range(30)])
    got: list[bytes] = []
    first = await sub.take(10, 10)
    # Then take returns at least one and never more than asked
    assert 1 <= len(first) <= 10
    got += [d.message.body for d in first]
    while len(got) < 30:
        more = await sub.take(100, 10)
        assert more, "take timed out with messages still unread"
        got += [d.message.body for d in more]
    assert sorted(got, key=int) == [str(n).encode() for n in range(30)]
    for delivery in first:
        await delivery.ack()
    # And once closed, take returns [] at once and iteration ends
    await sub.aclose()
    assert await sub.take(10, 30) == []
    with pytest.raises(StopAsyncIteration):
        await anext(sub)


async def test_core_nats_take_hands_out_received_messages_in_bulk(
    core: Factory, topic: str
) -> None:
    transport = await core()
    sub = transport.subscribe(topic, "g", prefetch=1000)
    assert isinstance(sub, CoreSubscription)
    await sub.start()
    # Given 50 messages received and one nacked for redelivery
    await transport.publish([Message(topic=topic, body=str(n).encode()) for n in range(50)])
    got: list[bytes] = []
    batches = 0
    while len(got) < 50:
        batch = await sub.take(64, 10)
        assert batch, "take timed out with messages still unread"
        batches += 1
        got += [d.message.body for d in batch]
        if batches == 1:
            await batch[0].nack()
            again = await sub.take(64, 10)
            # Then the redelivery comes first, as the next attempt
            assert again[0].message.body == batch[0].message.body
            assert again[0].attempt == 2
            got += [d.message.body for d in again[1:]]
    # And every message came once (plus the one redelivery), fewer calls than messages
    assert sorted(got, key=int) == [str(n).encode() for n in range(50)]
    assert batches < 50
    await sub.aclose()
    assert await sub.take(10, 30) == []


async def test_idle_jetstream_consumer_logs_no_pull_failures(
    jetstream: Factory, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an idle subscription whose pulls expire every 0.2 s
    caplog.set_level(logging.WARNING, logger="mqkit.nats")
    transport = await jetstream(fetch_wait=0.2)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    sub = transport.subscribe(topic, "g")
    await sub.start()
    # When about ten pulls expire with nothing to fetch
    await asyncio.sleep(2.0)
    # Then none is reported as a failure, and a message published now still arrives at once
    assert [r.getMessage() for r in caplog.records if "pulling" in r.getMessage()] == []
    await transport.publish([Message(topic=topic, body=b"late")])
    delivery = await asyncio.wait_for(anext(sub), 5)
    assert delivery.message.body == b"late"
    await delivery.ack()


async def test_jetstream_late_ack_without_heartbeat_is_logged_stale(
    jetstream: Factory, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given AckWait 1 s and in-progress heartbeats turned off (heartbeat=0)
    caplog.set_level(logging.WARNING, logger="mqkit.nats")
    transport = await jetstream(ack_wait=1, fetch_wait=0.2)
    transport.config = dataclasses.replace(transport.config, heartbeat=0.0)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    await transport.publish([Message(topic=topic, body=b"slow")])
    sub = transport.subscribe(topic, "g")
    first = await asyncio.wait_for(anext(sub), 5)
    # When the handler outlives AckWait: the server redelivers meanwhile
    again = await asyncio.wait_for(anext(sub), 10)
    assert (again.message.id, again.attempt) == (first.message.id, 2)
    # Then the first handler's late ack neither raises nor passes silently
    await first.ack()
    stale = [r for r in caplog.records if STALE in r.getMessage()]
    assert len(stale) == 1 and stale[0].levelno == logging.WARNING
    assert "stale ack" in stale[0].getMessage() and first.message.id in stale[0].getMessage()
    # And the redelivery's own, timely ack is not stale
    await again.ack()
    assert len([r for r in caplog.records if STALE in r.getMessage()]) == 1
    assert isinstance(sub, JetStreamSubscription) and sub._ticker is None


async def test_jetstream_long_handler_with_heartbeat_acks_without_warning(
    jetstream: Factory, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given AckWait 1 s and in-progress heartbeats every 0.25 s
    caplog.set_level(logging.WARNING, logger="mqkit.nats")
    transport = await jetstream(ack_wait=1, heartbeat=0.25, fetch_wait=0.2)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    await transport.publish([Message(topic=topic, body=b"slow")])
    sub = transport.subscribe(topic, "g")
    delivery = await asyncio.wait_for(anext(sub), 5)
    # When the handler runs two AckWaits
    await asyncio.sleep(2.0)
    await delivery.ack()
    # Then the lease was renewed all along: no redelivery, no stale-ack warning
    assert await sub.take(10, 0.5) == []
    assert [r.getMessage() for r in caplog.records if STALE in r.getMessage()] == []
