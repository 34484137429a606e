"""Benchmark: mqkit's NATS transports (bare, no middleware) against raw nats-py, one run.

    eval "$(scripts/brokers env)"; .venv/bin/python benchmarks/bench_nats.py [--rounds 3]

Same message count and size for both sides, rounds interleaved (raw, mqkit, raw, mqkit...),
medians reported with the mqkit/raw ratio and client CPU microseconds per message (steadier
than msgs/s on a shared machine). Not a test: nothing is asserted.

Core publish is compared twice: with raw nats-py sending no headers, and sending the same
two headers mqkit sends for a message without headers of its own (``Mqkit-Id``, ``Mqkit-Ts``).
nats-py's public header path costs about 2 µs per header; mqkit builds the same HPUB bytes
itself when the connection passes ``mqkit_nats.wire``'s feature check (the first line says
whether it did). Delivery guarantees are the same on both sides: a core publish ends with a
PING round trip (``flush``); JetStream publishes await every PubAck and both sides send a
unique ``Nats-Msg-Id`` per message (the server de-duplicates on it, which costs it work);
consumers ack every message explicitly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import nats
from nats.js import api

from mqkit.message import Message, new_id
from mqkit.transport import TopicSpec
from mqkit_nats import JetStreamTransport, NatsTransport
from mqkit_nats.headers import MSG_ID

NATS_URL = os.environ.get("MQKIT_NATS_URL", "nats://127.0.0.1:4222")
JS_URL = os.environ.get("MQKIT_JETSTREAM_URL", "jetstream://127.0.0.1:4222")
SERVER = "nats://" + NATS_URL.split("://", 1)[1].rsplit("@", 1)[-1].split("?")[0]
BODY = b"x" * 100
BATCH = 500

Result = tuple[float, float]  # (value, cpu seconds)


def _name() -> str:
    return f"bench.{uuid.uuid4().hex[:10]}"


async def timed(run: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    await run()
    return time.perf_counter() - wall, time.process_time() - cpu


# --- core ---------------------------------------------------------------------------------
async def raw_core_publish(n: int) -> Result:
    nc = await nats.connect(SERVER)
    subject = _name()

    async def run() -> None:
        for _ in range(n):
            await nc.publish(subject, BODY)
        await nc.flush()

    wall, cpu = await timed(run)
    await nc.close()
    return n / wall, cpu


async def raw_core_publish_headers(n: int) -> Result:
    """Raw nats-py sending the headers mqkit sends for a message without any of its own."""
    nc = await nats.connect(SERVER)
    subject = _name()
    messages = [Message(topic=subject, body=BODY) for _ in range(n)]

    async def run() -> None:
        for m in messages:
            await nc.publish(
                subject, BODY, headers={"Mqkit-Id": m.id, "Mqkit-Ts": repr(m.timestamp)}
            )
        await nc.flush()

    wall, cpu = await timed(run)
    await nc.close()
    return n / wall, cpu


async def mqkit_core_publish(n: int) -> Result:
    t = NatsTransport(NATS_URL)
    await t.connect()
    topic = _name()
    batches = [[Message(topic=topic, body=BODY) for _ in range(min(BATCH, n - i))]
               for i in range(0, n, BATCH)]

    async def run() -> None:
        for batch in batches:
            await t.publish(batch)

    wall, cpu = await timed(run)
    await t.close()
    return n / wall, cpu


async def _core_feed(subject: str, n: int) -> None:
    pub = await nats.connect(SERVER)
    for _ in range(n):
        await pub.publish(subject, BODY)
    await pub.flush()
    await pub.close()


async def raw_core_consume(n: int) -> Result:
    nc = await nats.connect(SERVER, pending_size=64 * 1024 * 1024)
    subject = _name()
    done = asyncio.Event()
    count = 0

    async def cb(msg: nats.aio.msg.Msg) -> None:
        nonlocal count
        count += 1
        if count >= n:
            done.set()

    await nc.subscribe(subject, queue="g", cb=cb, pending_msgs_limit=n * 2)
    await nc.flush()

    async def run() -> None:
        await asyncio.gather(_core_feed(subject, n), done.wait())

    wall, cpu = await timed(run)
    await nc.close()
    return n / wall, cpu


async def mqkit_core_consume(n: int) -> Result:
    t = NatsTransport(NATS_URL)
    await t.connect()
    topic = _name()
    sub = t.subscribe(topic, "g", prefetch=1000)
    await t.publish([])  # the subscription is live

    async def consume() -> None:
        count = 0
        async for d in sub:
            await d.ack()
            count += 1
            if count >= n:
                return

    async def run() -> None:
        await asyncio.gather(_core_feed(topic, n), consume())

    wall, cpu = await timed(run)
    await t.close()
    return n / wall, cpu


async def _responder(subject: str) -> nats.aio.client.Client:
    nc = await nats.connect(SERVER)

    async def answer(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(subject, cb=answer)
    await nc.flush()
    return nc


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    return samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99)] * 1e6


async def raw_request(n: int) -> tuple[tuple[float, float], float]:
    subject = _name()
    responder = await _responder(subject)
    nc = await nats.connect(SERVER)
    lat = []
    cpu = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        await nc.request(subject, BODY, timeout=5)
        lat.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu
    await nc.close()
    await responder.close()
    return _percentiles(lat), cpu


async def mqkit_request(n: int) -> tuple[tuple[float, float], float]:
    subject = _name()
    responder = await _responder(subject)
    t = NatsTransport(NATS_URL)
    await t.connect()
    lat = []
    cpu = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        await t.request(Message(topic=subject, body=BODY), timeout=5)
        lat.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu
    await t.close()
    await responder.close()
    return _percentiles(lat), cpu


# --- JetStream ----------------------------------------------------------------------------
async def _stream(js: nats.js.JetStreamContext, subject: str) -> str:
    name = "bench_" + subject.replace(".", "_")
    await js.add_stream(api.StreamConfig(name=name, subjects=[subject],
                                         storage=api.StorageType.FILE))
    return name


async def raw_js_publish_sync(n: int) -> Result:
    nc = await nats.connect(SERVER)
    js = nc.jetstream()
    subject = _name()
    stream = await _stream(js, subject)

    ids = [new_id() for _ in range(n)]

    async def run() -> None:
        for i in range(n):
            await js.publish(subject, BODY, headers={MSG_ID: ids[i]})

    wall, cpu = await timed(run)
    await js.delete_stream(stream)
    await nc.close()
    return n / wall, cpu


async def raw_js_publish_async(n: int) -> Result:
    """Raw ``publish_async`` with a ``Nats-Msg-Id`` per message, as mqkit sends (the server
    de-duplicates on it, which costs it work: both sides pay it)."""
    nc = await nats.connect(SERVER)
    js = nc.jetstream()
    subject = _name()
    stream = await _stream(js, subject)
    ids = [new_id() for _ in range(n)]

    async def run() -> None:
        for i in range(0, n, BATCH):
            futures = [
                await js.publish_async(subject, BODY, headers={MSG_ID: ids[j]})
                for j in range(i, min(i + BATCH, n))
            ]
            await asyncio.gather(*futures)

    wall, cpu = await timed(run)
    await js.delete_stream(stream)
    await nc.close()
    return n / wall, cpu


async def mqkit_js_publish(n: int) -> Result:
    t = JetStreamTransport(JS_URL)
    await t.connect()
    topic = _name()
    await t.ensure_topic(TopicSpec(topic))
    batches = [[Message(topic=topic, body=BODY) for _ in range(min(BATCH, n - i))]
               for i in range(0, n, BATCH)]

    async def run() -> None:
        for batch in batches:
            await t.publish(batch)

    wall, cpu = await timed(run)
    await t.js.delete_stream(t._streams[topic])
    await t.close()
    return n / wall, cpu


async def _filled(n: int) -> tuple[str, str]:
    nc = await nats.connect(SERVER)
    js = nc.jetstream()
    subject = _name()
    stream = await _stream(js, subject)
    for i in range(0, n, BATCH):
        futures = [await js.publish_async(subject, BODY) for _ in range(min(BATCH, n - i))]
        await asyncio.gather(*futures)
    await js.add_consumer(stream, api.ConsumerConfig(
        durable_name="g", ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=10_000))
    await nc.close()
    return subject, stream


async def raw_js_consume(n: int) -> Result:
    _, stream = await _filled(n)
    nc = await nats.connect(SERVER)
    js = nc.jetstream()
    psub = await js.pull_subscribe_bind(durable="g", stream=stream)

    async def run() -> None:
        count = 0
        while count < n:
            for msg in await psub.fetch(100, timeout=5):
                await msg.ack()
                count += 1

    wall, cpu = await timed(run)
    await js.delete_stream(stream)
    await nc.close()
    return n / wall, cpu


async def mqkit_js_consume(n: int) -> Result:
    subject, stream = await _filled(n)
    t = JetStreamTransport(JS_URL)
    await t.connect()
    sub = t.subscribe(subject, "g", prefetch=100)

    async def run() -> None:
        count = 0
        async for d in sub:
            await d.ack()
            count += 1
            if count >= n:
                return

    wall, cpu = await timed(run)
    await sub.aclose()  # type: ignore[attr-defined]
    await t.js.delete_stream(stream)
    await t.close()
    return n / wall, cpu


# --- the table ----------------------------------------------------------------------------
async def main(rounds: int, core_n: int, js_n: int, req_n: int) -> None:
    rows: list[tuple[str, str, int, Callable[[int], Awaitable[Result]],
                     Callable[[int], Awaitable[Result]]]] = [
        ("core publish (raw: no headers)", "msgs/s", core_n, raw_core_publish,
         mqkit_core_publish),
        ("core publish (raw: same 2 headers)", "msgs/s", core_n, raw_core_publish_headers,
         mqkit_core_publish),
        ("core consume", "msgs/s", core_n, raw_core_consume, mqkit_core_consume),
        ("JS publish (raw: publish_async)", "msgs/s", js_n, raw_js_publish_async,
         mqkit_js_publish),
        ("JS publish (raw: await each ack)", "msgs/s", js_n // 5, raw_js_publish_sync,
         mqkit_js_publish),
        ("JS consume (pull, explicit ack)", "msgs/s", js_n, raw_js_consume, mqkit_js_consume),
    ]
    probe = NatsTransport(NATS_URL)
    await probe.connect()
    fast = getattr(probe, "fast_publish", False)  # False on adapters without the fast path
    await probe.close()
    print(f"nats-server at {SERVER}; body {len(BODY)} B; mqkit batches of {BATCH}; "
          f"{rounds} interleaved rounds; medians; mqkit fast_publish={fast}")
    print("JS publish: both sides send a unique Nats-Msg-Id per message (the server "
          "de-duplicates); mqkit also sends Mqkit-Id and Mqkit-Ts. Both await every PubAck.\n")
    header = (f"{'case':34} {'n':>6} {'raw':>10} {'mqkit':>10} {'ratio':>6} "
              f"{'raw µs/msg':>10} {'mqkit µs/msg':>12}")
    print(header)
    print("-" * len(header))
    for name, unit, n, raw, ours in rows:
        raw_r, our_r = [], []
        for _ in range(rounds):
            raw_r.append(await raw(n))
            our_r.append(await ours(n))
        rv = statistics.median(r[0] for r in raw_r)
        ov = statistics.median(r[0] for r in our_r)
        rc = statistics.median(r[1] for r in raw_r) / n * 1e6
        oc = statistics.median(r[1] for r in our_r) / n * 1e6
        print(f"{name:34} {n:>6} {rv:>10,.0f} {ov:>10,.0f} {ov / rv:>6.0%} {rc:>10.1f} {oc:>12.1f}"
              f"  ({unit})")
    raw_lat, our_lat = [], []
    for _ in range(rounds):
        raw_lat.append(await raw_request(req_n))
        our_lat.append(await mqkit_request(req_n))
    for label, idx in (("p50", 0), ("p99", 1)):
        rv = statistics.median(r[0][idx] for r in raw_lat)
        ov = statistics.median(r[0][idx] for r in our_lat)
        print(f"{'request/reply latency ' + label:34} {req_n:>6} {rv:>10.0f} {ov:>10.0f} "
              f"{ov / rv:>6.0%} {'':>10} {'':>12}  (µs, lower is better)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--core", type=int, default=50_000)
    parser.add_argument("--js", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1_000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.core, args.js, args.requests))
