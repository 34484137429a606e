"""Visibility: the heartbeat keeps a long handler's message hidden; a crash brings it back."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap

from mqkit.message import Message
from mqkit.transport import TopicSpec
from tests.sqs.conftest import TransportFactory, with_options

VISIBILITY = 1
TIMEOUT = 30


async def test_long_handler_is_not_redelivered_while_it_runs(
    transport_factory: TransportFactory, topic: str
) -> None:
    # Given a 1 s visibility timeout and two consumers of one group
    first = await transport_factory(visibility_timeout=VISIBILITY, wait_time=1)
    second = await transport_factory(visibility_timeout=VISIBILITY, wait_time=1)
    await first.ensure_topic(TopicSpec(topic, groups=("g",)))
    await first.publish([Message(topic=topic, body=b"slow")])
    rival: list[Message] = []

    async def watch() -> None:
        async for delivery in second.subscribe(topic, "g"):
            rival.append(delivery.message)
            await delivery.ack()

    watcher = asyncio.create_task(watch())
    # When the first consumer's handler runs three times the visibility timeout
    async with asyncio.timeout(TIMEOUT):
        delivery = await anext(aiter(first.subscribe(topic, "g")))
    await asyncio.sleep(3 * VISIBILITY + 0.5)  # the handler's work: the behaviour under test
    # Then the other consumer never got the message meanwhile, and the ack succeeds
    assert rival == []
    await delivery.ack()
    watcher.cancel()
    assert delivery.attempt == 1


CRASHING_CONSUMER = textwrap.dedent(
    """
    import asyncio, sys
    from mqkit_sqs import SqsTransport

    async def main(url, topic):
        transport = SqsTransport(url)
        await transport.connect()
        async for delivery in transport.subscribe(topic, "g"):
            print("handling", delivery.message.id, flush=True)
            await asyncio.sleep(600)  # killed long before this ends

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_message_of_a_killed_consumer_is_redelivered_after_the_timeout(
    transport_factory: TransportFactory, topic: str, sqs_url: str
) -> None:
    # Given a message being handled by a consumer in another process
    url = with_options(sqs_url, visibility_timeout=2, wait_time=1)
    transport = await transport_factory(visibility_timeout=2, wait_time=1)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    await transport.publish([Message(topic=topic, body=b"crash", id="crash-1")])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_CONSUMER,
        url,
        topic,
        stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    assert process.stdout is not None
    async with asyncio.timeout(TIMEOUT):
        line = await process.stdout.readline()
    assert line.split() == [b"handling", b"crash-1"]
    # When that process is killed mid-handler
    process.send_signal(signal.SIGKILL)
    await process.wait()
    # Then the message comes back to another consumer once its visibility timeout ends
    async with asyncio.timeout(TIMEOUT):
        delivery = await anext(aiter(transport.subscribe(topic, "g")))
    assert delivery.message.id == "crash-1"
    assert delivery.attempt == 2
    await delivery.ack()
