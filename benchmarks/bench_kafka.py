"""mqkit's Kafka transport against the raw confluent-kafka client, on one topic, one run.

    python benchmarks/bench_kafka.py [--url kafka://127.0.0.1:9092] [--count 50000]
                                     [--rounds 3] [--size 256]

Rounds interleave the contenders; the table shows medians and the ratio to raw. Consumers
commit (stored offsets, auto-committed) as they go: raw stores the last offset of each
batch, mqkit stores per partition what its handlers finished. CPU is process time per
message. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import confluent_kafka as ck

from mqkit.client import Client
from mqkit.message import Message
from mqkit.transport import TopicSpec
from mqkit_kafka import KafkaTransport

Result = tuple[float, float]  # (msgs/s, cpu µs per message)


def raw_conf(url: str) -> dict[str, Any]:
    return {"bootstrap.servers": urlsplit(url).netloc}


async def raw_publish(url: str, topic: str, count: int, body: bytes) -> Result:
    def run() -> Result:
        producer = ck.Producer({
            **raw_conf(url), "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "batch.num.messages": 10000, "partitioner": "murmur2_random",
        })
        cpu, start = time.process_time(), time.perf_counter()
        for i in range(count):
            while True:
                try:
                    producer.produce(topic, body, headers=[("x-mqkit-id", b"%d" % i)])
                    break
                except BufferError:
                    producer.poll(0.01)
            if i % 1000 == 0:
                producer.poll(0)
        producer.flush(60)
        return count / (time.perf_counter() - start), (time.process_time() - cpu) / count * 1e6

    return await asyncio.to_thread(run)


async def mqkit_publish(transport: KafkaTransport, topic: str, count: int, body: bytes) -> Result:
    messages = [Message(topic=topic, body=body) for _ in range(count)]
    cpu, start = time.process_time(), time.perf_counter()
    for i in range(0, count, 5000):
        await transport.publish(messages[i : i + 5000])
    return count / (time.perf_counter() - start), (time.process_time() - cpu) / count * 1e6


async def raw_consume(url: str, topic: str, count: int) -> Result:
    def run() -> Result:
        consumer = ck.Consumer({
            **raw_conf(url), "group.id": f"bench-raw-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest", "enable.auto.offset.store": False,
            "partition.assignment.strategy": "cooperative-sticky",
        })
        consumer.subscribe([topic])
        got = 0
        cpu, start = 0.0, 0.0
        while got < count:
            records = consumer.consume(1000, 1.0)
            if records and not start:
                cpu, start = time.process_time(), time.perf_counter()
            last: dict[int, Any] = {}
            for record in records:
                if record.error() is None:
                    record.value()
                    got += 1
                    last[record.partition()] = record
            if last:
                consumer.store_offsets(
                    offsets=[ck.TopicPartition(topic, p, r.offset() + 1) for p, r in last.items()]
                )
        elapsed, used = time.perf_counter() - start, time.process_time() - cpu
        consumer.close()
        return got / elapsed, used / got * 1e6

    return await asyncio.to_thread(run)


async def mqkit_consume(transport: KafkaTransport, topic: str, count: int, batch: bool) -> Result:
    sub = transport.subscription(topic, f"bench-mqkit-{uuid.uuid4().hex}", prefetch=2000)
    got = 0
    first = await anext(sub)
    cpu, start = time.process_time(), time.perf_counter()
    await first.ack()
    got = 1
    if batch:
        while got < count:
            for delivery in await sub.take(1000, 1.0):
                await delivery.ack()
                got += 1
    else:
        async for delivery in sub:
            await delivery.ack()
            got += 1
            if got >= count:
                break
    elapsed, used = time.perf_counter() - start, time.process_time() - cpu
    await sub.aclose()
    return got / elapsed, used / got * 1e6


async def client_consume(url: str, topic: str, count: int) -> Result:
    """The full client: decorator handler, default middleware (log, dead-letter, retry)."""
    client = Client(url)
    done = asyncio.Event()
    got = 0
    clock: list[float] = []

    @client.subscribe(topic, group=f"bench-client-{uuid.uuid4().hex}", concurrency=16,
                      prefetch=2000)
    async def handle(body: bytes) -> None:
        nonlocal got
        if not clock:
            clock.extend((time.process_time(), time.perf_counter()))
        got += 1
        if got >= count:
            done.set()

    await client.start()
    await done.wait()
    elapsed, used = time.perf_counter() - clock[1], time.process_time() - clock[0]
    await client.close()
    return count / elapsed, used / count * 1e6


async def client_batch_consume(url: str, topic: str, count: int) -> Result:
    """The full client with the core's batch handler (a handler taking a list)."""
    client = Client(url)
    done = asyncio.Event()
    got = 0
    clock: list[float] = []

    @client.subscribe(topic, group=f"bench-batch-{uuid.uuid4().hex}", batch_size=1000,
                      batch_timeout=0.05, prefetch=2000)
    async def handle(bodies: list[bytes]) -> None:
        nonlocal got
        if not clock:
            clock.extend((time.process_time(), time.perf_counter()))
        got += len(bodies)
        if got >= count:
            done.set()

    await client.start()
    await done.wait()
    elapsed, used = time.perf_counter() - clock[1], time.process_time() - clock[0]
    await client.close()
    return count / elapsed, used / count * 1e6


async def latency(url: str, transport: KafkaTransport, raw: bool, seconds: float = 2.0,
                  rate: int = 2000) -> tuple[float, float]:
    """End-to-end p50/p99 in ms at a steady ``rate`` msgs/s (send time in the body)."""
    topic = f"bench.latency.{uuid.uuid4().hex[:8]}"
    await transport.ensure_topic(TopicSpec(topic, groups=("lat",)))
    samples: list[float] = []
    total = int(seconds * rate)
    if raw:
        return await asyncio.to_thread(_raw_latency, url, topic, total, rate)
    sub = transport.subscription(topic, "lat", prefetch=1000)
    await sub.wait_assigned()

    async def consume() -> None:
        async for delivery in sub:
            samples.append(time.time() - float(delivery.message.body))
            await delivery.ack()
            if len(samples) >= total:
                return

    task = asyncio.create_task(consume())
    for _ in range(0, total, rate // 100):
        now = str(time.time()).encode()
        await transport.publish([Message(topic=topic, body=now) for _ in range(rate // 100)])
        await asyncio.sleep(0.01)
    await task
    await sub.aclose()
    return _percentiles(samples)


def _raw_latency(url: str, topic: str, total: int, rate: int) -> tuple[float, float]:
    import threading

    samples: list[float] = []
    consumer = ck.Consumer({**raw_conf(url), "group.id": f"lat-{uuid.uuid4().hex}",
                            "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100})
    ready = threading.Event()
    consumer.subscribe([topic], on_assign=lambda c, p: ready.set())

    def consume() -> None:
        while len(samples) < total:
            for record in consumer.consume(500, 0.1):
                if record.error() is None:
                    samples.append(time.time() - float(record.value()))

    thread = threading.Thread(target=consume)
    thread.start()
    while not ready.is_set():
        time.sleep(0.01)
    producer = ck.Producer({**raw_conf(url), "enable.idempotence": True, "linger.ms": 5})
    for _ in range(0, total, rate // 100):
        now = str(time.time()).encode()
        for _ in range(rate // 100):
            producer.produce(topic, now)
        producer.flush(10)
        time.sleep(0.01)
    thread.join()
    consumer.close()
    return _percentiles(samples)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return (ordered[len(ordered) // 2] * 1000, ordered[int(len(ordered) * 0.99)] * 1000)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="kafka://127.0.0.1:9092")
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    body = b"x" * args.size
    transport = KafkaTransport(args.url)
    await transport.connect()
    topic = f"bench.kafka.{uuid.uuid4().hex[:8]}"
    await transport.ensure_topic(TopicSpec(topic, partitions=4))
    runs: dict[str, list[Result]] = {}
    contenders: list[tuple[str, Callable[[], Awaitable[Result]]]] = [
        ("publish  raw confluent-kafka", lambda: raw_publish(args.url, topic, args.count, body)),
        ("publish  mqkit transport", lambda: mqkit_publish(transport, topic, args.count, body)),
        ("consume  raw confluent-kafka", lambda: raw_consume(args.url, topic, args.count)),
        ("consume  mqkit transport, per message",
         lambda: mqkit_consume(transport, topic, args.count, batch=False)),
        ("consume  mqkit transport, batch (take)",
         lambda: mqkit_consume(transport, topic, args.count, batch=True)),
        ("consume  mqkit client, per-message handler",
         lambda: client_consume(args.url, topic, args.count)),
        ("consume  mqkit client, batch handler",
         lambda: client_batch_consume(args.url, topic, args.count)),
    ]
    for _ in range(args.rounds):
        for name, run in contenders:
            runs.setdefault(name, []).append(await run())
    lat_raw = await latency(args.url, transport, raw=True)
    lat_mqkit = await latency(args.url, transport, raw=False)
    await transport.close()

    print(f"\n{args.count} messages of {args.size} B, {args.rounds} interleaved rounds, "
          f"medians; topic {topic} (4 partitions)\n")
    print(f"{'contender':44} {'msgs/s':>10} {'vs raw':>8} {'CPU µs/msg':>11}")
    print("  (every consumer: at-least-once, offsets stored after processing and auto-committed;"
          "\n   publishers: idempotent, acks=all; raw flushes once at the end, mqkit awaits every"
          "\n   delivery report of each 5,000-message publish)")
    raw_rate = {"publish": 0.0, "consume": 0.0}
    for name, results in runs.items():
        rate = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        kind = name.split()[0]
        if "raw" in name:
            raw_rate[kind] = rate
        ratio = rate / raw_rate[kind] if raw_rate[kind] else float("nan")
        print(f"{name:44} {rate:>10,.0f} {ratio:>7.0%} {cpu:>11.1f}")
    print("\nper-message handler: @client.subscribe(concurrency=16) with the default middleware"
          "\n(log, dead-letter, retry), acked per message; batch handler: @client.subscribe"
          "\n(batch_size=1000), one call per list, each message acked after it returns")
    print(f"\nend-to-end latency at 2,000 msgs/s: raw p50 {lat_raw[0]:.1f} ms, "
          f"p99 {lat_raw[1]:.1f} ms; mqkit p50 {lat_mqkit[0]:.1f} ms, p99 {lat_mqkit[1]:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
