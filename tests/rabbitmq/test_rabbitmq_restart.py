"""The broker restarted mid-stream (scripts/brokers): nothing is lost.

Restarts the RabbitMQ that ``scripts/brokers`` manages; skipped where another RabbitMQ is
used (its process is not ours to restart).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from mqkit.errors import MqkitError
from mqkit.message import Message
from mqkit.testing import wait_until
from mqkit.transport import TopicSpec
from tests.rabbitmq.conftest import TransportFactory

ROOT = Path(__file__).resolve().parents[2]
BROKERS = ROOT / "scripts" / "brokers"
TOTAL = 400


def brokers(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BROKERS), *args], capture_output=True, text=True, timeout=180,
                          check=False)


@pytest.fixture
def managed_rabbitmq(rabbitmq_url: str) -> str:
    if "127.0.0.1:5672" not in rabbitmq_url or brokers("status", "rabbitmq").returncode != 0:
        pytest.skip("RabbitMQ is not the one scripts/brokers runs here; cannot restart it")
    return rabbitmq_url


async def test_broker_restart_mid_stream_loses_nothing(
    managed_rabbitmq: str, make_transport: TransportFactory
) -> None:
    # Given a producer and a consumer on a durable queue, messages flowing
    producer = await make_transport(publish_timeout=60, reconnect_max_delay=1)
    consumer = await make_transport(reconnect_max_delay=1)
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
    down = await asyncio.to_thread(brokers, "down", "rabbitmq")
    up = await asyncio.to_thread(brokers, "up", "rabbitmq")
    assert up.returncode == 0, up.stdout + up.stderr
    assert down.returncode == 0, down.stdout + down.stderr
    await asyncio.wait_for(producing, 120)
    # Then every confirmed message is delivered, after both sides reconnected
    await wait_until(lambda: confirmed <= delivered, 60, what="every confirmed message")
    consuming.cancel()
    await asyncio.gather(consuming, return_exceptions=True)
    assert producer.reconnects >= 1 and consumer.reconnects >= 1
    assert confirmed | failed == set(range(TOTAL))
    assert confirmed - delivered == set(), "lost messages"
    assert delivered <= set(range(TOTAL)), "unexpected messages"
    assert len(failed) < TOTAL // 2, f"{len(failed)} publishes failed"
