"""SQS: mqkit's bare transport against raw boto3 on the same queue, in one run.

    eval "$(scripts/brokers env)"; .venv/bin/python benchmarks/bench_sqs.py [--count 300]

Every side uses one SQS queue (mqkit's ``mode=queue``, no SNS hop, so the comparison is
like for like) and the same message count and size, in interleaved rounds (each contender
once per round, in the same order), and the table shows medians:

- publish: mqkit ``transport.publish`` of all messages (batches of 10) vs raw
  ``send_message_batch`` of 10 at a time;
- consume, from a full queue to the last confirmed delete:
  - ``mqkit ack``: iterate the subscription and ``await delivery.ack()`` for each before
    taking the next (each ack returns once SQS confirmed its delete);
  - ``mqkit take``: ``take(10)`` then ``ack_many`` (one ``DeleteMessageBatch``), the way a
    raw consumer works;
  - ``raw boto3``: ``receive_message`` of 10 + ``delete_message_batch``.
- CPU µs/msg: this process's CPU time (every thread) over the consume phase, per message.

A benchmark, not a test: it prints figures and asserts nothing. On moto's server the
figures measure moto (each message costs O(queue depth) there, and moto's CPU shares the
machine), so keep counts small.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import boto3

from mqkit.message import Message
from mqkit.transport import TopicSpec
from mqkit_sqs import SqsTransport
from mqkit_sqs.subscriber import Subscription

DEFAULT_URL = "sqs://127.0.0.1:5000?region=us-east-1"
PREFETCH = 50
Round = tuple[float, float, float]
"""publish msgs/s, consume msgs/s, consume CPU µs per message."""


async def consume_acking(sub: Subscription, count: int) -> None:
    got = 0
    async for delivery in sub:
        await delivery.ack()
        got += 1
        if got >= count:
            return


async def consume_taking(sub: Subscription, count: int) -> None:
    got = 0
    while got < count:
        batch = await sub.take(10, 5.0)
        if batch:
            await sub.ack_many(batch)
            got += len(batch)


async def mqkit_round(
    url: str, topic: str, count: int, body: bytes,
    consume: Callable[[Subscription, int], Awaitable[None]],
) -> Round:
    transport = SqsTransport(url, mode="queue", wait_time=1)
    await transport.connect()
    try:
        messages = [Message(topic=topic, body=body) for _ in range(count)]
        started = time.perf_counter()
        await transport.publish(messages)
        published = time.perf_counter() - started
        sub = transport.subscribe(topic, "bench", prefetch=PREFETCH)
        assert isinstance(sub, Subscription)
        started, cpu = time.perf_counter(), time.process_time()
        try:
            await consume(sub, count)
        finally:
            await sub.aclose()
        consumed, cpu = time.perf_counter() - started, time.process_time() - cpu
        return count / published, count / consumed, cpu / count * 1e6
    finally:
        await transport.close()


def raw_round(sqs: Any, queue_url: str, count: int, body: str) -> Round:
    started = time.perf_counter()
    for start in range(0, count, 10):
        entries = [{"Id": str(i), "MessageBody": body} for i in range(min(10, count - start))]
        reply = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        assert not reply.get("Failed")
    published = time.perf_counter() - started
    got = 0
    started, cpu = time.perf_counter(), time.process_time()
    while got < count:
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages = reply.get("Messages", [])
        if messages:
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
        got += len(messages)
    consumed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return count / published, count / consumed, cpu / count * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("MQKIT_SQS_URL", DEFAULT_URL))
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    topic = f"bench.{uuid.uuid4().hex[:8]}"
    setup = SqsTransport(args.url, mode="queue")
    await setup.connect()
    await setup.ensure_topic(TopicSpec(topic))
    queue_name = setup.topology.queue_name(topic, "bench")
    endpoint = setup.config.endpoint_url
    region = setup.config.region
    await setup.close()
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=region)
    queue_url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    body = "x" * args.size
    ways = {"mqkit ack": consume_acking, "mqkit take": consume_taking}
    results: dict[str, list[Round]] = {name: [] for name in [*ways, "raw boto3"]}
    for _ in range(args.rounds):
        for name, consume in ways.items():
            results[name].append(
                await mqkit_round(args.url, topic, args.count, body.encode(), consume)
            )
        results["raw boto3"].append(
            await asyncio.to_thread(raw_round, sqs, queue_url, args.count, body)
        )
    medians = {
        name: tuple(statistics.median(row[i] for row in rows) for i in range(3))
        for name, rows in results.items()
    }
    raw = medians["raw boto3"]
    print(
        f"SQS queue on {endpoint or 'AWS'}: {args.count} msgs x {args.size} B, "
        f"{args.rounds} interleaved rounds, medians"
    )
    print(f"{'contender':<12}{'publish msg/s':>15}{'consume msg/s':>15}{'cons/raw':>10}"
          f"{'CPU µs/msg':>12}")
    for name, (pub, con, cpu) in medians.items():
        print(f"{name:<12}{pub:>15.1f}{con:>15.1f}{con / raw[1]:>10.2f}{cpu:>12.0f}")
    print("(targets: publish >= 90% of raw, consume >= 85%)")


if __name__ == "__main__":
    asyncio.run(main())
