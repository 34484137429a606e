"""On the real Kafka: the broker restarts mid-stream; producer and consumer recover.

Restarts only Kafka (``scripts/brokers down kafka; scripts/brokers up kafka``) and leaves it
up. Marked slow: it costs the broker's restart time.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from mqkit.client import Client
from mqkit.testing import wait_until
from tests.brokers import ROOT
from tests.kafka.helpers import topic_name

TIMEOUT = 180


async def brokers(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "brokers"), *args, cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(TIMEOUT):
        assert await proc.wait() == 0, f"scripts/brokers {' '.join(args)} failed"


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MQKIT_KAFKA_URL", "kafka://127.0.0.1:9092") != "kafka://127.0.0.1:9092",
    reason="restarts the Kafka that scripts/brokers runs on 127.0.0.1:9092 only",
)
async def test_broker_restart_mid_stream_loses_nothing(kafka_url: str) -> None:
    # Given a consumer and a producer streaming through Kafka
    topic = topic_name("restart")
    group = f"g-{topic}"
    handled: set[int] = set()
    published: list[int] = []
    restarted = asyncio.Event()
    client = Client(kafka_url, publish_timeout=TIMEOUT)

    @client.subscribe(topic, group=group, concurrency=8)
    async def handle(n: int) -> None:
        handled.add(n)

    async def stream() -> None:
        n, after = 0, 0
        while after < 10:
            batch = list(range(n, n + 50))
            await client.publish_batch(topic, batch)
            published.extend(batch)
            n += 50
            after += restarted.is_set()
            await asyncio.sleep(0.02)  # a steady stream, not a burst

    try:
        await client.start()
        producer = asyncio.create_task(stream())
        await wait_until(lambda: len(handled) >= 500, TIMEOUT, what="the stream to flow")
        # When the broker stops and starts again mid-stream
        await brokers("down", "kafka")
        await brokers("up", "kafka")
        restarted.set()
        await producer
        # Then every published message is handled (duplicates allowed, losses not)
        await wait_until(lambda: handled >= set(published), TIMEOUT, what="all messages")
    finally:
        await client.close()
        await brokers("up", "kafka")  # idempotent: make sure Kafka stays up for others
    assert handled == set(published)
