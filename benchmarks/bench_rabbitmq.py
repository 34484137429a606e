"""mqkit's RabbitMQ transport against raw pika (and Kombu), same queue, same messages.

    eval "$(scripts/brokers env)"; .venv/bin/python benchmarks/bench_rabbitmq.py [--count N]

Contenders, in interleaved rounds (each round runs every contender once, in turn):

- mqkit: the bare ``RabbitMQTransport`` (confirms, persistent, mandatory): ``publish`` in
  batches of ``--batch`` (confirms pipelined), consume with ``subscribe`` (prefetch 256)
  acking each delivery;
- pika: ``BlockingConnection``; publish without confirms (bare messages sharing one
  ``BasicProperties``, and again with the properties mqkit sends: unique message id,
  timestamp, exact-timestamp header), and with a confirm awaited per message
  (``confirm_delivery``); consume with ``basic_consume`` (prefetch 256), ack each;
- kombu (py-amqp): ``Producer.publish`` without confirms, and with a confirm awaited per
  message (transport option ``confirm_publish``, the only confirm mode kombu has); consume
  with ``drain_events`` (prefetch 256), ack each.

Like for like: every contender publishes *persistent* messages (``delivery_mode=2``) of
``--size`` bytes to the same durable topic exchange and routing key, into the same kind of
durable classic queue (fresh per phase), and consumes that queue's backlog with manual acks.
Each row names its confirm mode. Figures are medians over rounds: msgs/s, CPU microseconds
per message in this process, the broker's CPU microseconds per message (when its pid file
from ``scripts/brokers`` is readable; the broker is shared, so others' load shows there
too), and for mqkit and pika the publish-to-handler latency (p50/p99) of messages sent one
at a time at a steady pace while a consumer runs. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import kombu
import pika

from mqkit.bench import percentile
from mqkit.message import Message
from mqkit.transport import TopicSpec
from mqkit_rabbitmq import RabbitMQTransport

EXCHANGE = "mqkit-bench"
MQKIT_PUB = "mqkit publish (confirms, batches, mandatory)"
PIKA_PUB = "pika publish (no confirms, bare)"
PIKA_PUB_SAME = "pika publish (no confirms, mqkit's props)"
PIKA_PUB_CONFIRM = "pika publish (confirm each, mandatory)"
KOMBU_PUB = "kombu publish (no confirms)"
KOMBU_PUB_CONFIRM = "kombu publish (confirm each)"
PREFETCH = 256
LATENCY_COUNT = 1000
LATENCY_RATE = 1000.0  # msgs/s


@dataclass
class Figures:
    rate: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    broker_us: list[float] = field(default_factory=list)


def broker_cpu() -> float:
    """Seconds of CPU the RabbitMQ started by ``scripts/brokers`` has used; NaN if unknown."""
    home = os.environ.get("MQKIT_BROKERS_HOME", os.path.expanduser("~/.cache/mqkit-brokers"))
    try:
        with open(os.path.join(home, "run", "rabbitmq.pid")) as f:
            pid = f.read().split()[0]
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Timing = tuple[float, float, float]
"""msgs/s, CPU us/msg of this process, CPU us/msg of the broker."""


def timed(fn: Callable[[], int]) -> Timing:
    """The ``Timing`` of ``fn`` returning how many messages it moved."""
    wall, cpu, broker = time.perf_counter(), time.process_time(), broker_cpu()
    count = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return count / wall, cpu / count * 1e6, (broker_cpu() - broker) / count * 1e6


# --- mqkit --------------------------------------------------------------------------------


def mqkit_url(url: str) -> str:
    return url + ("&" if "?" in url else "?") + f"exchange={EXCHANGE}"


async def mqkit_publish(t: RabbitMQTransport, topic: str, count: int, size: int,
                        batch: int) -> int:
    body = b"x" * size
    for start in range(0, count, batch):
        await t.publish([Message(topic=topic, body=body)
                         for _ in range(min(batch, count - start))])
    return count


async def mqkit_consume(t: RabbitMQTransport, topic: str, count: int) -> int:
    got = 0
    sub = t.subscribe(topic, "g", prefetch=PREFETCH)
    async for delivery in sub:
        await delivery.ack()
        got += 1
        if got == count:
            break
    await sub.aclose()  # type: ignore[attr-defined]
    return got


async def mqkit_latency(t: RabbitMQTransport, topic: str, size: int) -> list[float]:
    lat: list[float] = []

    async def consume() -> None:
        async for delivery in t.subscribe(topic, "lat", prefetch=PREFETCH):
            lat.append(time.time() - delivery.message.timestamp)
            await delivery.ack()
            if len(lat) == LATENCY_COUNT:
                return

    await t.ensure_topic(TopicSpec(topic, groups=("lat",)))
    task = asyncio.create_task(consume())
    body = b"x" * size
    start = time.perf_counter()
    for n in range(LATENCY_COUNT):
        await asyncio.sleep(max(0.0, start + n / LATENCY_RATE - time.perf_counter()))
        await t.publish([Message(topic=topic, body=body)])
    await asyncio.wait_for(task, 60)
    return lat


# --- pika ---------------------------------------------------------------------------------


def pika_channel(url: str) -> tuple[pika.BlockingConnection, object]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    return conn, conn.channel()


def pika_publish(url: str, topic: str, count: int, size: int, confirm: bool,
                 same_properties: bool = False) -> int:
    """Bare messages (one shared ``BasicProperties``), or with ``same_properties`` what
    mqkit puts on the wire for a message without headers: a fresh 32-hex-digit
    ``message_id``, ``timestamp`` and the nanoseconds past its second in the ``x-mqkit-ns``
    header (the broker decodes and stores that table; it costs it CPU)."""
    conn, ch = pika_channel(url)
    if confirm:
        ch.confirm_delivery()  # type: ignore[attr-defined]
    props = pika.BasicProperties(delivery_mode=2, message_id="m")
    body = b"x" * size
    publish = ch.basic_publish  # type: ignore[attr-defined]
    for _ in range(count):
        if same_properties:
            now = time.time()
            props = pika.BasicProperties(
                delivery_mode=2, message_id=os.urandom(16).hex(), timestamp=int(now),
                headers={"x-mqkit-ns": round((now - int(now)) * 1e9)},
            )
        publish(EXCHANGE, topic, body, props, mandatory=confirm)
    conn.close()
    return count


def pika_consume(url: str, queue: str, count: int) -> int:
    conn, ch = pika_channel(url)
    ch.basic_qos(prefetch_count=PREFETCH)  # type: ignore[attr-defined]
    got = 0

    def on_message(chan: object, method: object, _props: object, _body: bytes) -> None:
        nonlocal got
        chan.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
        got += 1
        if got == count:
            chan.stop_consuming()  # type: ignore[attr-defined]

    ch.basic_consume(queue, on_message)  # type: ignore[attr-defined]
    ch.start_consuming()  # type: ignore[attr-defined]
    conn.close()
    return got


def pika_latency(url: str, topic: str, queue: str, size: int) -> list[float]:
    lat: list[float] = []
    ready = threading.Event()

    def consumer() -> None:
        conn, ch = pika_channel(url)
        ch.basic_qos(prefetch_count=PREFETCH)  # type: ignore[attr-defined]

        def on_message(chan: object, method: object, props: object, _body: bytes) -> None:
            lat.append(time.time() - float(props.headers["ts"]))  # type: ignore[attr-defined]
            chan.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
            if len(lat) == LATENCY_COUNT:
                chan.stop_consuming()  # type: ignore[attr-defined]

        ch.basic_consume(queue, on_message)  # type: ignore[attr-defined]
        ready.set()
        ch.start_consuming()  # type: ignore[attr-defined]
        conn.close()

    thread = threading.Thread(target=consumer)
    thread.start()
    ready.wait()
    conn, ch = pika_channel(url)
    ch.confirm_delivery()  # type: ignore[attr-defined]
    body = b"x" * size
    start = time.perf_counter()
    for n in range(LATENCY_COUNT):
        time.sleep(max(0.0, start + n / LATENCY_RATE - time.perf_counter()))
        props = pika.BasicProperties(delivery_mode=2, headers={"ts": repr(time.time())})
        ch.basic_publish(EXCHANGE, topic, body, props, mandatory=True)  # type: ignore[attr-defined]
    thread.join(60)
    conn.close()
    return lat


# --- kombu --------------------------------------------------------------------------------


def kombu_publish(url: str, topic: str, count: int, size: int, confirm: bool) -> int:
    with kombu.Connection(url, transport_options={"confirm_publish": confirm}) as conn:
        producer = conn.Producer(serializer="raw")
        exchange = kombu.Exchange(EXCHANGE, type="topic", passive=True)
        body = b"x" * size
        for _ in range(count):
            producer.publish(body, exchange=exchange, routing_key=topic, delivery_mode=2,
                             declare=[], content_type="application/octet-stream",
                             content_encoding="binary")
    return count


def kombu_consume(url: str, queue: str, count: int) -> int:
    got = 0
    with kombu.Connection(url) as conn:
        q = kombu.Queue(queue, no_declare=True)

        def on_message(_body: object, message: kombu.Message) -> None:
            nonlocal got
            message.ack()
            got += 1

        with conn.Consumer(q, callbacks=[on_message], prefetch_count=PREFETCH,
                           accept=["application/octet-stream"]):
            while got < count:
                conn.drain_events(timeout=30)
    return got


# --- the run ------------------------------------------------------------------------------


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("MQKIT_RABBITMQ_URL",
                                                        "amqp://guest:guest@127.0.0.1:5672/%2F"))
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url, count, size = args.url, args.count, args.size
    t = RabbitMQTransport(mqkit_url(url))
    await t.connect()
    figures: dict[str, Figures] = {}
    latencies: dict[str, list[float]] = {"mqkit": [], "pika": []}

    def record(name: str, timing: Timing) -> None:
        f = figures.setdefault(name, Figures())
        f.rate.append(timing[0])
        f.cpu_us.append(timing[1])
        f.broker_us.append(timing[2])

    async def fresh_topic() -> tuple[str, str]:
        topic = f"bench.{uuid.uuid4().hex[:10]}"
        await t.ensure_topic(TopicSpec(topic, groups=("g",)))
        return topic, f"{topic}:g"

    async def in_thread(fn: Callable[[], int]) -> Timing:
        return await asyncio.to_thread(timed, fn)

    async def mqkit_timed(coro_fn: Callable[[], object]) -> Timing:
        wall, cpu, broker = time.perf_counter(), time.process_time(), broker_cpu()
        moved = await coro_fn()  # type: ignore[misc]
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return moved / wall, cpu / moved * 1e6, (broker_cpu() - broker) / moved * 1e6

    deleter = pika.BlockingConnection(pika.URLParameters(url)).channel()
    for round_no in range(1, args.rounds + 1):
        print(f"round {round_no}/{args.rounds}", flush=True)
        # mqkit
        topic, queue = await fresh_topic()
        record(MQKIT_PUB,
               await mqkit_timed(partial(mqkit_publish, t, topic, count, size, args.batch)))
        record("mqkit consume", await mqkit_timed(partial(mqkit_consume, t, topic, count)))
        deleter.queue_delete(queue)
        # pika, no confirms; then its consume
        topic, queue = await fresh_topic()
        record(PIKA_PUB,
               await in_thread(partial(pika_publish, url, topic, count, size, False)))
        record("pika consume", await in_thread(partial(pika_consume, url, queue, count)))
        deleter.queue_delete(queue)
        # pika, no confirms, mqkit's properties on every message
        topic, queue = await fresh_topic()
        record(PIKA_PUB_SAME,
               await in_thread(partial(pika_publish, url, topic, count, size, False, True)))
        deleter.queue_delete(queue)
        # pika, a confirm per message
        topic, queue = await fresh_topic()
        record(PIKA_PUB_CONFIRM,
               await in_thread(partial(pika_publish, url, topic, count, size, True)))
        deleter.queue_delete(queue)
        # kombu, no confirms; then its consume
        topic, queue = await fresh_topic()
        record(KOMBU_PUB, await in_thread(partial(kombu_publish, url, topic, count, size, False)))
        record("kombu consume", await in_thread(partial(kombu_consume, url, queue, count)))
        deleter.queue_delete(queue)
        # kombu, a confirm per message
        topic, queue = await fresh_topic()
        record(KOMBU_PUB_CONFIRM,
               await in_thread(partial(kombu_publish, url, topic, count, size, True)))
        deleter.queue_delete(queue)
        # latency
        topic, _ = await fresh_topic()
        latencies["mqkit"] += await mqkit_latency(t, topic, size)
        deleter.queue_delete(f"{topic}:g")
        deleter.queue_delete(f"{topic}:lat")
        topic, queue = await fresh_topic()
        latencies["pika"] += await asyncio.to_thread(pika_latency, url, topic, queue, size)
        deleter.queue_delete(queue)
    await t.close()

    med = {name: (statistics.median(f.rate), statistics.median(f.cpu_us),
                  statistics.median(f.broker_us))
           for name, f in figures.items()}
    print(f"\n{count} messages of {size} B, {args.rounds} interleaved rounds, medians; "
          f"prefetch {PREFETCH}; mqkit publish batch {args.batch}; every publisher persistent "
          "(delivery_mode=2) into a durable classic queue; every consumer acks each message")
    print(f"{'contender':46} {'msgs/s':>9} {'CPU us/msg':>11} {'broker us/msg':>14}")
    for name, (rate, cpu, broker) in med.items():
        print(f"{name:46} {rate:9.0f} {cpu:11.1f} {broker:14.1f}")
    print(f"\nlatency, publish -> handler, {LATENCY_COUNT} msgs at {LATENCY_RATE:.0f}/s "
          "per round (confirmed publish each)")
    for name, lat in latencies.items():
        print(f"{name:38} p50 {percentile(lat, 50) * 1000:6.2f} ms   "
              f"p99 {percentile(lat, 99) * 1000:6.2f} ms")
    ratio = [
        ("mqkit publish / pika confirm each (target >= 2.0)", MQKIT_PUB, PIKA_PUB_CONFIRM),
        ("mqkit publish / pika no confirms (target >= 0.9)", MQKIT_PUB, PIKA_PUB),
        ("mqkit publish / pika no confirms, same properties", MQKIT_PUB, PIKA_PUB_SAME),
        ("mqkit consume / pika consume (target >= 0.9)", "mqkit consume", "pika consume"),
        ("mqkit publish / kombu no confirms (target > 1)", MQKIT_PUB, KOMBU_PUB),
        ("mqkit publish / kombu confirm each (like for like)", MQKIT_PUB, KOMBU_PUB_CONFIRM),
        ("mqkit consume / kombu consume (target > 1)", "mqkit consume", "kombu consume"),
    ]
    print()
    for label, a, b in ratio:
        print(f"{label:52} {med[a][0] / med[b][0]:5.2f}")


if __name__ == "__main__":
    asyncio.run(main())
