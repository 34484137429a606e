"""nats-server restarted mid-stream: JetStream loses nothing; the client reconnects.

Restarts only nats-server, through scripts/brokers (the same script that started it), and
always brings it back up. A ledger counts attempted, acknowledged and delivered messages:
nothing acknowledged may be lost, nothing delivered may be unknown.
"""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from mqkit.client import Client
from mqkit.errors import PublishError
from mqkit.testing import wait_until
from tests.brokers import ROOT

SCRIPT = str(ROOT / "scripts" / "brokers")


async def _brokers(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        SCRIPT, *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()


@pytest.mark.broker("nats")
async def test_server_restart_mid_stream_loses_nothing(jetstream_url: str, topic: str) -> None:
    attempted: list[int] = []
    acked: set[int] = set()
    failed: set[int] = set()
    delivered: list[int] = []
    stop = asyncio.Event()

    async with Client(jetstream_url) as consumer, Client(jetstream_url) as producer:

        @consumer.subscribe(topic, group="g", concurrency=4)
        async def handle(n: int) -> None:
            delivered.append(n)

        await consumer.start()

        async def produce() -> None:
            n = 0
            while not stop.is_set():
                attempted.append(n)
                try:
                    await producer.publish(topic, n)
                    acked.add(n)
                except PublishError:
                    failed.add(n)  # raised: the caller knows it may not be stored
                n += 1
                await asyncio.sleep(0.005)

        # Given a producer and a consumer mid-stream
        producing = asyncio.ensure_future(produce())
        await wait_until(lambda: len(delivered) >= 100, 20, what="traffic before the restart")
        # When nats-server is restarted
        try:
            await _brokers("down", "nats")
            await wait_until(lambda: bool(failed) or len(attempted) > len(acked) + 1, 20)
        finally:
            await _brokers("up", "nats")
        acked_before = len(acked)
        await wait_until(lambda: len(acked) >= acked_before + 100, 60, what="publishes after")
        stop.set()
        await producing
        # Then every acknowledged message is delivered, and nothing unknown is
        await wait_until(lambda: acked <= set(delivered), 60, what="every acked message")
        await consumer.transport.js.delete_stream(  # type: ignore[attr-defined]
            consumer.transport._streams[topic]  # type: ignore[attr-defined]
        )
    lost = acked - set(delivered)
    unexpected = set(delivered) - set(attempted)
    assert (lost, unexpected) == (set(), set())
    # Duplicates can only be messages whose publish or ack straddled the restart
    assert len(delivered) - len(set(delivered)) <= len(failed) + 64
