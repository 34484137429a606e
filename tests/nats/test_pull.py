"""JetStream consuming through mqkit's own pull requests and queued acks.

A subscription pulls on its own inbox (not nats-py's ``fetch``) and acks through
``FastWire.queue`` (one write for a burst of acks). These tests pin what that must keep:
at most ``prefetch`` messages fetched-or-unsettled, every ack reaching the server on either
publish path, redelivery of what is not acked, and a status reply ending a pull.
"""

from __future__ import annotations

import asyncio
import logging

import nats.errors
import pytest

from mqkit.message import Message
from mqkit.testing import wait_until
from mqkit.transport import TopicSpec
from mqkit_nats.subscriber import JetStreamDelivery, JetStreamSubscription
from tests.nats.conftest import Factory

PATHS = pytest.mark.parametrize("fast", [True, False], ids=["fast", "public"])


async def _pending(transport: object, topic: str) -> tuple[int, int]:
    """(unacked, not yet delivered) of group ``g`` on ``topic``'s stream, from the server."""
    info = await transport.js.consumer_info(transport._streams[topic], "g")  # type: ignore[attr-defined]
    return info.num_ack_pending, info.num_pending


@PATHS
async def test_every_ack_reaches_the_server(jetstream: Factory, topic: str, fast: bool) -> None:
    # Given 500 messages and a consumer acking each on either path
    transport = await jetstream(fast_publish=fast)
    assert transport.fast_publish is fast
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    await transport.publish([Message(topic=topic, body=str(i).encode()) for i in range(500)])
    sub = transport.subscribe(topic, "g", prefetch=100)
    seen: list[int] = []
    # When all are consumed and acked
    async for delivery in sub:
        seen.append(int(delivery.message.body))
        await delivery.ack()
        if len(seen) == 500:
            break
    # Then each came once, and the server holds no unacked message and nothing undelivered
    assert sorted(seen) == list(range(500))

    async def settled() -> bool:
        return await _pending(transport, topic) == (0, 0)

    await wait_until(settled, 10, what="every ack processed by the server")


async def test_prefetch_bounds_what_is_fetched_or_unsettled(
    jetstream: Factory, topic: str
) -> None:
    # Given 20 messages and a subscription with prefetch 5
    transport = await jetstream(fetch_wait=0.3)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    await transport.publish([Message(topic=topic, body=str(i).encode()) for i in range(20)])
    sub = transport.subscribe(topic, "g", prefetch=5)
    assert isinstance(sub, JetStreamSubscription)
    # When 5 deliveries are held unsettled
    held: list[JetStreamDelivery] = []
    for _ in range(10):
        held += await sub.take(5 - len(held), 1)
        if len(held) >= 5:
            break
    # Then no more is fetched, however long it waits (several pulls would have expired)
    assert await sub.take(10, 1.0) == []
    assert len(sub._buffer) == 0 and len(sub._unsettled) == 5
    assert await _pending(transport, topic) == (5, 15)
    # And once they are acked the rest arrives, never more than 5 out at a time
    for delivery in held:
        await delivery.ack()
    got = 5
    while got < 20:
        batch = await sub.take(10, 10)
        assert batch, "the rest did not arrive"
        assert len(sub._buffer) + len(sub._unsettled) <= 5
        for delivery in batch:
            await delivery.ack()
        got += len(batch)
    assert got == 20


async def test_unacked_messages_of_a_closed_subscription_come_back(
    jetstream: Factory, topic: str
) -> None:
    # Given a consumer that acks 3 of 6 messages, naks 1 and leaves 2 unsettled (no
    # in-progress heartbeats: those would keep renewing the 2 leases)
    transport = await jetstream(ack_wait=1, fetch_wait=0.2, heartbeat=0)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    await transport.publish([Message(topic=topic, body=str(i).encode()) for i in range(6)])
    sub = transport.subscribe(topic, "g", prefetch=10)
    first: list[JetStreamDelivery] = []
    for _ in range(10):
        first += await sub.take(6, 1)
        if len(first) >= 6:
            break
    by_body = {d.message.body: d for d in first}
    for body in (b"0", b"1", b"2"):
        await by_body[body].ack()
    await by_body[b"3"].nack()
    # When the subscription closes and another one reads the group
    await sub.aclose()
    again = transport.subscribe(topic, "g", prefetch=10)
    later: list[JetStreamDelivery] = []
    for _ in range(10):
        later += await again.take(10, 1)
        if len(later) >= 3:
            break
    # Then exactly the nacked and the unsettled ones come back, as later attempts
    assert sorted(d.message.body for d in later) == [b"3", b"4", b"5"]
    assert all(d.attempt >= 2 for d in later)
    for delivery in later:
        await delivery.ack()
    assert await again.take(10, 1.5) == []  # nothing else, even after AckWait


async def test_a_pull_ended_by_a_status_is_retried_with_a_warning(
    jetstream: Factory, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a subscription pulling from group g
    caplog.set_level(logging.WARNING, logger="mqkit.nats")
    transport = await jetstream(fetch_wait=5)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    sub = transport.subscribe(topic, "g")
    assert isinstance(sub, JetStreamSubscription)
    await sub.start()
    await wait_until(lambda: sub._pull is not None, 5, what="a pull in flight")
    # When its consumer is deleted under the waiting pull (the server answers 409) and made
    # again, as seek does
    stream = transport._streams[topic]
    await transport.js.delete_consumer(stream, "g")
    await wait_until(
        lambda: any("pulling" in r.getMessage() for r in caplog.records), 5,
        what="the failed pull reported",
    )
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    # Then the status was reported, not waited out, and pulling resumed on the new consumer
    assert any("409" in r.getMessage() for r in caplog.records)
    await transport.publish([Message(topic=topic, body=b"after")])
    delivery = await asyncio.wait_for(anext(sub), 10)
    assert delivery.message.body == b"after"
    await delivery.ack()


async def test_ack_on_a_closed_transport_raises_like_nats_py(
    jetstream: Factory, topic: str
) -> None:
    # Given a delivery handed out, and its transport closed
    await jetstream()  # the fixture cleans up through the first transport: keep it open
    transport = await jetstream()
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    await transport.publish([Message(topic=topic, body=b"x")])
    sub = transport.subscribe(topic, "g")
    delivery = await asyncio.wait_for(anext(sub), 10)
    await transport.close()
    # When it is acked, then the caller hears of it (the server will redeliver it)
    with pytest.raises(nats.errors.ConnectionClosedError):
        await delivery.ack()
