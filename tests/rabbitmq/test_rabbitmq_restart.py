"""The broker shut down and started again mid-stream: nothing is lost.

A graceful stop (the broker closes its connections with a reason) on a dedicated RabbitMQ of
the fault suite's (tests/faults/instances.py), never the shared one other tests use; the
fault suite kills it with SIGKILL as well (tests/faults/test_broker_restart.py).
"""

from __future__ import annotations

import asyncio

from mqkit.errors import MqkitError
from mqkit.message import Message
from mqkit.testing import wait_until
from mqkit.transport import TopicSpec
from mqkit_rabbitmq import RabbitMQTransport
from tests.faults.instances import BrokerInstance

TOTAL = 400


async def test_broker_restart_mid_stream_loses_nothing(dedicated_rabbitmq: BrokerInstance) -> None:
    # Given a producer and a consumer on a durable queue, messages flowing
    url = dedicated_rabbitmq.url()
    producer = RabbitMQTransport(url, publish_timeout=60, reconnect_max_delay=1)
    consumer = RabbitMQTransport(url, reconnect_max_delay=1)
    await producer.connect()
    await consumer.connect()
    await producer.ensure_topic(TopicSpec("ledger", groups=("g",)))
    confirmed: set[int] = set()
    failed: set[int] = set()
    delivered: set[int] = set()

    async def consume() -> None:
        async for delivery in consumer.subscribe("ledger", "g", prefetch=20):
            delivered.add(int(delivery.message.body))
            try:
                await delivery.ack()
            except MqkitError:
                pass  # its channel died with the broker: it comes back and is counted again

    async def produce() -> None:
        for n in range(TOTAL):
            try:
                await producer.publish([Message(topic="ledger", body=str(n).encode())])
                confirmed.add(n)
            except MqkitError:
                failed.add(n)  # raised, so not silently lost: the caller knows
            await asyncio.sleep(0.01)

    consuming = asyncio.create_task(consume())
    producing = asyncio.create_task(produce())
    await wait_until(lambda: len(delivered) >= 50, 30, what="the stream to start")
    # When the broker restarts mid-stream
    await asyncio.to_thread(dedicated_rabbitmq.stop)
    await asyncio.to_thread(dedicated_rabbitmq.start)
    await asyncio.wait_for(producing, 120)
    # Then every confirmed message is delivered, after both sides reconnected
    try:
        await wait_until(lambda: confirmed <= delivered, 60, what="every confirmed message")
    finally:
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
        await producer.close()
        await consumer.close()
    assert producer.reconnects >= 1 and consumer.reconnects >= 1
    assert confirmed | failed == set(range(TOTAL))
    assert confirmed - delivered == set(), "lost messages"
    assert delivered <= set(range(TOTAL)), "unexpected messages"
    assert len(failed) < TOTAL // 2, f"{len(failed)} publishes failed"
