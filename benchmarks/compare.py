"""mqkit next to each broker's raw client, FastStream and Kombu, in one process.

    scripts/bench [--brokers kafka,rabbitmq] [--sizes 256,4096] [--count N] [--rounds N]
                  [--no-freeze] [--no-write]

For each broker and message size, every contender (column) runs once per round, in the
same order every round (a b c d, a b c d, ...), and each figure is the median over rounds.
On Kafka the peers (FastStream) run only the first two of its five rounds: their margin is
wide and each of their rounds takes as long as all the other columns' together, while the
raw client's consume phase lasts 30-50 ms, so its median needs more rounds to settle. After
Kafka's section the run pauses 70 s: the broker keeps working for about a minute after it
(deferred topic deletions), and the broker measured next paid for that.
The figures:

- publish msgs/s: ``count`` messages, from the first send (connected) until the broker
  confirmed the last;
- consume msgs/s: ``count`` messages waiting in the backlog, from "consumer started" to the
  last ack, the same event for every column: on Kafka, once the group assigned the
  partitions (confluent-kafka's ``on_assign``, mqkit's ``wait_assigned()``, also for the
  Client's subscription, FastStream's rebalance callbacks), so the group join is not timed
  but each client's prefetch of the backlog is; each phase has a group of its own (a
  Kafka group spans topics: a shared one made a joining consumer rebalance with the
  previous column's members), and its offsets are committed at the start of the backlog
  before (a restarted service), so no column waits out librdkafka's fixed ~100 ms offset
  reset of a new group; on RabbitMQ, JetStream and SQS once the
  subscribe call returned (consume-ok, the pull consumer bound; SQS has none: the first
  receive); on NATS core, which keeps nothing, from the moment a shared feeder starts
  sending ``count`` messages to the subscribed contender;
- latency p50/p99: messages sent at a fixed rate (``LATENCY_SECONDS`` long) with a consumer
  running, from the send time written in each body to the handler;
- CPU µs per message: this process's CPU time over the publish and consume phases;
- GC %: the share of the publish and consume phases' wall time this process spent in the
  garbage collector's passes (``gc.callbacks``). Each round starts with a full collection
  and ``gc.freeze()``, and each phase with a full collection, all untimed: the process
  imports every client and peer framework (~100,000-150,000 objects, where a service with
  mqkit and one client holds ~34,000), and without the freeze every full pass walks them
  all, tens of milliseconds each, landing in a 30-100 ms phase or not; without the
  collection before a phase, it would pay for what the phase before it left (publish keeps
  each message alive until confirmed). ``--no-freeze`` measures with the whole heap walked;
- peak RSS: the process's VmHWM during the contender's round (reset before it by writing 5
  to /proc/self/clear_refs) and, in brackets, how far above the RSS at its start it went.

Results go to docs/benchmarks.md and docs/benchmarks.png (unless ``--no-write``). Not a test:
targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import glob
import logging
import os
import platform
import re
import shlex
import sys
import time
import uuid
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from compare_brokers import BROKERS, Broker
from compare_core import (
    LATENCY_SECONDS,
    Clock,
    Contender,
    Feed,
    budget,
    is_peer,
    peak_rss_mib,
    percentile,
    reset_peak_rss,
    rss_mib,
)
from compare_report import Row, Samples, chart, markdown, print_table, rows_for
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
PNG = ROOT / "docs" / "benchmarks.png"
PIPELINE = ROOT / "docs" / "benchmarks-pipeline.md"
def _default_counts() -> str:
    brokers = [factory() for factory in BROKERS.values()]
    return ", ".join(
        f"{b.title} {b.count:,} x {b.rounds}"
        + (f" (the peers x {b.peer_rounds})" if b.peer_rounds else "")
        for b in brokers
    )


NOTES = (
    "Counts and rounds differ per broker (`--count`, `--rounds` override them) so that the "
    "default run takes 15-20 minutes on a quiet 2-core machine (messages x "
    f"rounds): {_default_counts()}.",
    "",
    "- **Kafka peers**: FastStream on both of its Kafka drivers, aiokafka and "
    "confluent-kafka. Kombu is not measured on Kafka: Kombu does not support its Kafka "
    "transport well (a thin virtual transport, no consumer groups of its own). The row "
    "\"confluent-kafka, mqkit's record\" is the raw client producing what mqkit produces (an "
    "id header, the message's timestamp, a delivery report per message handed to a "
    "callback): the floor under mqkit's publish, next to the plain raw column. Each Kafka "
    "consume phase starts from committed offsets at the start of the backlog: a new group "
    "first waits out librdkafka's fixed ~100 ms offset-reset backoff, which at 50,000 "
    "messages was most of the raw consumer's time and made the consume ratios compare "
    "start-ups.",
    "- **SQS is moto**, not AWS: moto serves tens of messages per second, and its cost per "
    "message grows with the queue's depth (O(depth) per message: each receive scans the "
    "queue, each delete rebuilds its list), so 200 messages per phase and a latency rate "
    "of 10 msgs/s. The SQS figures compare clients on moto; they say nothing of AWS's "
    "throughput.",
    "- **NATS core** keeps nothing: consume is timed on live messages from a shared feeder.",
)
LIBRARIES = ("mqkit", "confluent-kafka", "aiokafka", "pika", "aio-pika", "nats-py", "boto3",
             "moto", "redis", "faststream", "kombu", "amqp")


async def _phase(samples: Samples, what: str, coro: object, seconds: float) -> object:
    """Await ``coro`` within ``seconds``; a failure is recorded, not raised. It starts from a
    full collection (untimed): a phase pays for the collector's passes over what it
    allocates, not for the debt the one before it left (mqkit's publish keeps every message
    alive until confirmed; its consume would pay for those)."""
    gc.collect()
    try:
        return await asyncio.wait_for(coro, seconds)  # type: ignore[arg-type]
    except Exception as exc:
        samples.errors.append(f"{what}: {type(exc).__name__}: {exc}"[:300])
        return None


def _timed_feed(feed: Feed, clock: Clock) -> Feed:
    """A live feed that starts the (held) consume clock as it starts sending."""
    if feed is None:
        return None

    async def send() -> None:
        clock.start(force=True)
        await feed()

    return send


async def _measure(
    broker: Broker, contender: Contender, samples: Samples, count: int, size: int, tag: str
) -> None:
    body = b"x" * size
    topic = await broker.prepare(f"{tag}.{contender.key}")
    feed = broker.feed(topic, count, size)
    pub, con = Clock(), Clock(held=feed is not None)
    await _phase(samples, "publish", contender.publish(topic, count, body, pub), budget(count))
    got = await _phase(samples, "consume", contender.consume(
        topic, count, con, _timed_feed(feed, con)), budget(count))
    await broker.drop(topic)
    samples.publish.append(count / pub.wall)
    samples.consume.append(count / con.wall if got == count else float("nan"))
    samples.consumed.append(got if isinstance(got, int) else 0)
    samples.cpu_us.append((pub.cpu + con.cpu) / count * 1e6)
    samples.gc_pct.append(100 * (pub.gc + con.gc) / (pub.wall + con.wall))
    topic = await broker.prepare(f"{tag}.{contender.key}-latency")
    n = int(broker.latency_rate * LATENCY_SECONDS)
    ages = await _phase(samples, "latency",
                        contender.latency(topic, n, size, broker.latency_rate), budget(n))
    await broker.drop(topic)
    ages = ages if isinstance(ages, list) else []
    samples.p50_ms.append(percentile(ages, 50) * 1000)
    samples.p99_ms.append(percentile(ages, 99) * 1000)


async def run_round(
    broker: Broker, contender: Contender, samples: Samples, count: int, size: int, tag: str,
    freeze: bool = True,
) -> None:
    if freeze:
        gc.collect()
        # What is alive now (modules of every contender, lazily imported ones too) is left
        # out of later passes; this round's own objects are not frozen.
        gc.freeze()
    reset_peak_rss()
    start_rss = rss_mib()
    errors = len(samples.errors)
    try:
        await _phase(samples, "open", contender.open(), 60)
        if len(samples.errors) == errors:
            await _measure(broker, contender, samples, count, size, tag)
    except Exception as exc:  # a broker restarted by someone else costs a round, not the run
        samples.errors.append(f"round: {type(exc).__name__}: {exc}"[:300])
    finally:
        # Even after a failed open: a half-opened client must not leak its producer.
        await _phase(samples, "close", contender.close(), 60)
        samples.peak_mib.append(peak_rss_mib())
        samples.growth_mib.append(peak_rss_mib() - start_rss)


async def run_broker(
    broker: Broker, sizes: Sequence[int], count: int, rounds: int, redis_url: str,
    console: Console, freeze: bool = True,
) -> list[tuple[str, list[Row]]]:
    peer_rounds = broker.rounds_of_peers(rounds)
    tables: list[tuple[str, list[Row]]] = []
    try:
        await broker.open()
    except Exception as exc:
        console.print(f"[red]{broker.title} skipped: {type(exc).__name__}: {exc}[/red]")
        await broker.close()
        return tables
    try:
        for size in sizes:
            contenders = broker.contenders(redis_url)
            samples = [Samples(c.key, c.label, c.guarantee) for c in contenders]
            tag = f"cmp.{uuid.uuid4().hex[:8]}.{size}"
            for round_no in range(1, rounds + 1):
                for contender, s in zip(contenders, samples, strict=True):
                    if round_no > peer_rounds and is_peer(contender):
                        continue
                    started = time.perf_counter()
                    await run_round(broker, contender, s, count, size, f"{tag}.r{round_no}",
                                    freeze)
                    console.print(
                        f"  {broker.name} {size} B round {round_no}/{rounds} {contender.key}: "
                        f"{time.perf_counter() - started:.1f} s", highlight=False)
            title = f"{broker.title}, {size} B, {count:,} msgs, median of {rounds} round(s)"
            if peer_rounds < rounds:
                title += f" ({peer_rounds} for the peers)"
            rows = rows_for(broker.name, size, count, samples)
            print_table(title, rows, console)
            tables.append((title, rows))
    finally:
        await broker.close()
    return tables


# --- the machine ---------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine() -> list[str]:
    cpu = re.search(r"model name\s*:\s*(.+)", _read("/proc/cpuinfo"))
    mem = re.search(r"MemTotal:\s+(\d+) kB", _read("/proc/meminfo"))
    os_name = re.search(r'PRETTY_NAME="([^"]+)"', _read("/etc/os-release"))
    load = os.getloadavg()
    return [
        f"- CPU: {cpu.group(1) if cpu else platform.processor()}, {os.cpu_count()} cores "
        f"(load average at the start {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f})",
        f"- RAM: {int(mem.group(1)) / 1024 / 1024:.1f} GiB" if mem else "- RAM: unknown",
        f"- OS: {os_name.group(1) if os_name else platform.platform()} "
        f"(kernel {platform.release()})",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
    ]


def libraries() -> str:
    found = []
    for name in LIBRARIES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    try:
        import confluent_kafka

        found.append(f"librdkafka {confluent_kafka.libversion()[0]}")
    except ImportError:
        pass
    return ", ".join(found)


def _brokers_home() -> str:
    return os.environ.get("MQKIT_BROKERS_HOME", os.path.expanduser("~/.cache/mqkit-brokers"))


async def broker_versions(names: Sequence[str]) -> str:
    found = []
    home = _brokers_home()
    if "kafka" in names:
        pid = _read(os.path.join(home, "run", "kafka.pid")).split()[:1]
        cmd = _read(f"/proc/{pid[0]}/cmdline") if pid else ""
        jar = re.search(r"kafka_[\d.]+-([\w.]+)\.jar", cmd) or re.search(
            r"kafka_[\d.]+-([\w.]+)\.jar", " ".join(glob.glob(f"{home}/kafka-*/jars/*.jar")))
        found.append(f"Kafka {jar.group(1) if jar else '?'} (KRaft)")
    if "rabbitmq" in names:
        found.append(f"RabbitMQ {await asyncio.to_thread(_rabbit_version)}")
    if {"nats", "jetstream"} & set(names):
        found.append(f"nats-server {await _nats_version()}")
    if "sqs" in names:
        try:
            found.append(f"moto server {version('moto')}")
        except PackageNotFoundError:
            found.append("moto server")
    found.append(f"Redis {await _redis_version()} (idempotency store)")
    return ", ".join(found)


def _rabbit_version() -> str:
    import pika

    try:
        url = BROKERS["rabbitmq"]().url
        conn = pika.BlockingConnection(pika.URLParameters(url))
        found = conn._impl.server_properties.get("version", b"?")
        conn.close()
        return found.decode() if isinstance(found, bytes) else str(found)
    except Exception:
        return "?"


async def _nats_version() -> str:
    import nats

    try:
        nc = await nats.connect("nats://" + BROKERS["nats"]().url.split("://", 1)[1])
        found = nc.connected_server_version
        await nc.close()
        return str(found)
    except Exception:
        return "?"


async def _redis_version() -> str:
    import redis.asyncio as aioredis

    try:
        client = aioredis.Redis.from_url(_redis_url())
        info = await client.info("server")
        await client.aclose()
        return str(info.get("redis_version", "?"))
    except Exception:
        return "?"


def _redis_url() -> str:
    return os.environ.get("MQKIT_REDIS_URL", "redis://127.0.0.1:6379/0")


# --- the run -------------------------------------------------------------------------------
def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default=",".join(BROKERS),
                        help=f"comma-separated, from {','.join(BROKERS)} (default: all)")
    parser.add_argument("--sizes", default="256,4096", help="message sizes in bytes")
    parser.add_argument("--count", type=int, default=0,
                        help="messages per phase (default: each broker's own)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="rounds per size (default: each broker's own, 2 or 3)")
    parser.add_argument("--no-freeze", action="store_true",
                        help="leave the collector's heap unfrozen (see GC %% in the method)")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave docs/benchmarks.md and .png alone")
    args = parser.parse_args(argv)
    args.brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = [b for b in args.brokers if b not in BROKERS]
    if unknown or not args.brokers:
        parser.error(f"unknown broker(s) {unknown}; choose from {', '.join(BROKERS)}")
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.rounds < 0 or args.count < 0 or any(s < 1 for s in args.sizes):
        parser.error("--rounds >= 0, --count >= 0 and --sizes >= 1 please")
    return args


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    console = Console(width=max(150, Console().width))
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("aiokafka", "faststream", "nats", "pika", "kombu", "botocore", "mqkit"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    command = "scripts/bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    started, when = time.perf_counter(), datetime.datetime.now(datetime.UTC)
    header_machine, libs = machine(), libraries()
    brokers_line = await broker_versions(args.brokers)
    tables: list[tuple[str, list[Row]]] = []
    plan = [(b, args.count or b.count, args.rounds or b.rounds)
            for b in (BROKERS[name]() for name in args.brokers)]
    estimates = [b.estimate(count, len(args.sizes), rounds) for b, count, rounds in plan]
    console.print(f"estimated wall time {sum(estimates) / 60:.1f} min on a quiet 2-core "
                  f"machine", highlight=False)
    walls: list[str] = []
    for (broker, count, rounds), estimate in zip(plan, estimates, strict=True):
        console.rule(f"{broker.title}: {count:,} msgs, sizes {args.sizes}, {rounds} rounds "
                     f"(estimated {estimate / 60:.1f} min)")
        broker_started = time.perf_counter()
        tables += await run_broker(broker, args.sizes, count, rounds, _redis_url(), console,
                                   not args.no_freeze)
        took = time.perf_counter() - broker_started
        walls.append(f"{broker.name} {took / 60:.1f} min (estimated {estimate / 60:.1f})")
        console.print(f"{broker.title}: {took / 60:.1f} min", highlight=False)
        if broker.settle_s and broker is not plan[-1][0]:
            console.print(f"letting {broker.title} settle for {broker.settle_s:.0f} s",
                          highlight=False)
            await asyncio.sleep(broker.settle_s)
    wall = time.perf_counter() - started
    console.print(f"wall time {wall / 60:.1f} min (estimated {sum(estimates) / 60:.1f} min): "
                  + ", ".join(walls), highlight=False)
    if args.no_write:
        return 0
    has_chart = chart(tables, args.sizes, PNG)
    header = [
        "# Benchmarks: mqkit next to the raw clients, FastStream and Kombu", "",
        f"Generated by `{command.strip()}` on {when:%Y-%m-%d %H:%M} UTC in "
        f"{wall / 60:.1f} min (estimated {sum(estimates) / 60:.1f}; {', '.join(walls)}). "
        "Not a test: targets are reported, never asserted.", "",
        "## Machine", "", *header_machine, f"- Libraries: {libs}", f"- Brokers: {brokers_line}",
        "", "## Method", "",
        # The docstring past its title and usage line.
        *[part.strip() + "\n" for part in (__doc__ or "").split("\n\n", 2)[2:]],
        "Ratios are over the raw client's median in the same run (`pub/raw`, `cons/raw`); on "
        "memory:// the raw column is a plain `asyncio.Queue`. A column marked ERROR or LOST "
        "failed or lost messages in a round (listed under its table). The machine is shared "
        "and small: figures are noisy; CPU µs per message is steadier than msgs/s.", "",
        *NOTES, "",
        "## Results", "",
    ]
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(markdown(header=header, tables=tables,
                            chart=PNG.name if has_chart else None, pipeline=PIPELINE))
    console.print(f"wrote {DOC.relative_to(ROOT)}" + (f" and {PNG.relative_to(ROOT)}"
                                                       if has_chart else ""))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
