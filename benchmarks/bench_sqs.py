"""SQS: mqkit's bare transport against raw boto3 on the same queue, in one run.

    eval "$(scripts/brokers env)"; .venv/bin/python benchmarks/bench_sqs.py [--count 300]

Both sides use one SQS queue (mqkit's ``mode=queue``, no SNS hop, so the comparison is
like for like) and the same message count and size, in interleaved rounds (mqkit, raw,
mqkit, raw ...), and the table shows medians:

- publish: mqkit ``transport.publish`` of all messages (batches of 10) vs raw
  ``send_message_batch`` of 10 at a time;
- consume: from a full queue to the last ack, mqkit ``subscribe`` + ``ack`` (batched
  deletes) vs raw ``receive_message`` of 10 + ``delete_message_batch``.

A benchmark, not a test: it prints figures and asserts nothing. On moto's server the
figures measure moto (each message costs O(queue depth) there), so keep counts small.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from typing import Any

import boto3

from mqkit.message import Message
from mqkit.transport import TopicSpec
from mqkit_sqs import SqsTransport

DEFAULT_URL = "sqs://127.0.0.1:5000?region=us-east-1"


async def mqkit_round(url: str, topic: str, count: int, body: bytes) -> tuple[float, float]:
    transport = SqsTransport(url, mode="queue", wait_time=1)
    await transport.connect()
    try:
        messages = [Message(topic=topic, body=body) for _ in range(count)]
        started = time.perf_counter()
        await transport.publish(messages)
        published = time.perf_counter() - started
        got = 0
        started = time.perf_counter()
        pending: set[asyncio.Task[None]] = set()
        async for delivery in transport.subscribe(topic, "bench", prefetch=50):
            task = asyncio.create_task(delivery.ack())
            pending.add(task)
            task.add_done_callback(pending.discard)
            got += 1
            if got >= count:
                break
        await asyncio.gather(*pending)
        consumed = time.perf_counter() - started
        return count / published, count / consumed
    finally:
        await transport.close()


def raw_round(sqs: Any, queue_url: str, count: int, body: str) -> tuple[float, float]:
    started = time.perf_counter()
    for start in range(0, count, 10):
        entries = [{"Id": str(i), "MessageBody": body} for i in range(min(10, count - start))]
        reply = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        assert not reply.get("Failed")
    published = time.perf_counter() - started
    got = 0
    started = time.perf_counter()
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
    consumed = time.perf_counter() - started
    return count / published, count / consumed


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
    results: dict[str, list[tuple[float, float]]] = {"mqkit": [], "raw boto3": []}
    for _ in range(args.rounds):
        results["mqkit"].append(await mqkit_round(args.url, topic, args.count, body.encode()))
        results["raw boto3"].append(
            await asyncio.to_thread(raw_round, sqs, queue_url, args.count, body)
        )
    medians = {
        name: (statistics.median(p for p, _ in rows), statistics.median(c for _, c in rows))
        for name, rows in results.items()
    }
    print(
        f"SQS queue on {endpoint or 'AWS'}: {args.count} msgs x {args.size} B, "
        f"{args.rounds} interleaved rounds, medians"
    )
    print(f"{'contender':<12}{'publish msg/s':>15}{'consume msg/s':>15}")
    for name, (pub, con) in medians.items():
        print(f"{name:<12}{pub:>15.1f}{con:>15.1f}")
    mq, raw = medians["mqkit"], medians["raw boto3"]
    print(
        f"{'ratio':<12}{mq[0] / raw[0]:>14.0%} {mq[1] / raw[1]:>14.0%}"
        "   (targets: publish >= 90%, consume >= 85%)"
    )


if __name__ == "__main__":
    asyncio.run(main())
