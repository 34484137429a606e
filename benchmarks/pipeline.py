"""The order pipeline as a load test: orders at a fixed rate fanned out to three groups.

    python benchmarks/pipeline.py --url URL [--rate 10000] [--seconds 60] [--all]
                                  [--handler batch|message] [--payments batch|store]
                                  [--profile DIR] [--json FILE] [--doc FILE]
    python benchmarks/pipeline.py --report FILE.json [FILE.json ...] --doc FILE

One producer process publishes orders open-loop (due by the wall clock, confirmations
awaited concurrently) to one topic; three consumer processes, one per group, handle every
order: payments charges it once (keys under a UNIQUE constraint in PostgreSQL, one
transaction per batch), inventory reserves stock, shipping prepares a notification. 0.1 %
of orders are poison (they fail validation) and are dead-lettered by mqkit; this process
reads the dead-letter topic with an audit group, samples each group's backlog on the broker
every second and, at the end, accounts for every order: lost (acked by the broker, never
handled nor dead-lettered), duplicates, double charges (counted in the charges table, which
has no unique constraint of its own). ``--all`` runs Kafka, RabbitMQ and JetStream from the
``MQKIT_*_URL`` variables. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline_orders import ROLES, RunNames, is_poison, ranges_to_counts, unpack
from pipeline_probes import Backlog, CpuMeter, broker_of, broker_pids, cleanup, setup
from pipeline_report import render, summary_table

from mqkit import Client, Message

HERE = Path(__file__).resolve()
ALL_BROKERS = ("MQKIT_KAFKA_URL", "MQKIT_RABBITMQ_URL", "MQKIT_JETSTREAM_URL")


class Child:
    """A role process; its JSON lines on stdout are collected as they come."""

    def __init__(self, role: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.role = role
        self.proc = proc
        self.log = log
        self.ready = asyncio.Event()
        self.done: dict[str, Any] | None = None
        self.ticks: list[dict[str, Any]] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            event = json.loads(line)
            kind = event["event"]
            if kind == "ready":
                self.ready.set()
            elif kind == "tick":
                self.ticks.append(event)
            elif kind == "done":
                self.done = event

    def latest(self, field: str) -> int:
        return int(self.ticks[-1][field]) if self.ticks else 0

    async def finish(self, timeout: float = 60.0) -> dict[str, Any]:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.proc.wait(), timeout)
        await self.reader
        if self.done is None:
            raise RuntimeError(f"{self.role} ended without results; see {self.log}")
        return self.done


async def spawn(role: str, args: argparse.Namespace, url: str, run: str, logs: Path) -> Child:
    # URLs travel in the environment, not on command lines other users can read.
    env = {**os.environ, "MQKIT_PIPELINE_URL": url, "MQKIT_POSTGRES_URL": args.postgres}
    command = [
        sys.executable, str(HERE), "--role", role, "--run", run,
        "--rate", str(args.rate), "--seconds", str(args.seconds), "--tick", str(args.tick),
        "--handler", args.handler, "--payments", args.payments,
        "--batch-size", str(args.batch_size), "--batch-timeout", str(args.batch_timeout),
        "--prefetch", str(args.prefetch), "--concurrency", str(args.concurrency),
        "--max-inflight", str(args.max_inflight),
    ]
    if args.profile:
        command += ["--profile", args.profile]
    log = logs / f"{role}.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=err, env=env,
            limit=64 * 1024 * 1024,
        )
    return Child(role, proc, log)


async def until(predicate: Any, timeout: float, what: str, children: list[Child]) -> float:
    """Wait until ``predicate()``; seconds waited. Fails early if a child died."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        for child in children:
            if child.proc.returncode is not None and child.done is None:
                raise RuntimeError(f"{child.role} exited ({child.proc.returncode}); "
                                   f"see {child.log}")
        if loop.time() - start > timeout:
            raise TimeoutError(f"{what} not within {timeout:.0f}s")
        await asyncio.sleep(0.1)
    return loop.time() - start


class DeadLetterAudit:
    """Reads the dead-letter topic: how many letters per order, and per group if named."""

    def __init__(self, url: str, names: RunNames, total: int) -> None:
        self.client = Client(url)
        self.counts = bytearray(total)
        self.letters = 0
        self.by_group: dict[str, int] = {}

        @self.client.subscribe(names.dlq, group=names.group("audit"), concurrency=4)
        async def audit(letter: dict[str, Any], message: Message) -> None:
            n = int(letter["n"])
            self.counts[n] = min(255, self.counts[n] + 1)
            self.letters += 1
            group = message.headers.get("x-dlq-group", "(not named)")
            self.by_group[group] = self.by_group.get(group, 0) + 1


async def sample_backlog(backlog: Backlog, samples: list[dict[str, Any]],
                         stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            samples.append({"t": time.time(), **await backlog.sample()})
        except Exception as exc:  # one failed sample must not end the run
            print(f"backlog sample failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass


async def run_pipeline(args: argparse.Namespace, url: str) -> dict[str, Any]:
    broker = broker_of(url)
    run = uuid.uuid4().hex[:8]
    names = RunNames(run)
    total = int(args.rate * args.seconds)
    logs = Path(tempfile.mkdtemp(prefix=f"pipeline-{run}-"))
    print(f"\n== {broker}: {args.rate:,} orders/s for {args.seconds} s (run {run}, "
          f"logs {logs})", flush=True)
    await setup(url, args.postgres, names)
    audit = DeadLetterAudit(url, names, total)
    backlog = Backlog(url, names)
    children: list[Child] = []
    try:
        await audit.client.start()
        for role in ROLES:
            children.append(await spawn(role, args, url, run, logs))
        await until(lambda: all(c.ready.is_set() for c in children), 90,
                    "consumers ready", children)
        if broker == "Kafka":
            await asyncio.to_thread(kafka_wait_assigned, url, names)
        meter = CpuMeter(broker_pids(url))
        samples: list[dict[str, Any]] = []
        sampling = asyncio.Event()
        sampler = asyncio.create_task(sample_backlog(backlog, samples, sampling))
        producer = await spawn("producer", args, url, run, logs)
        children.append(producer)
        meter.start()
        own_cpu = time.process_time()
        await until(lambda: producer.done is not None, args.seconds * 4 + 120,
                    "the producer", children)
        done = producer.done
        assert done is not None
        at_end = await backlog.sample()
        acked = ranges_to_counts(done["acked_ranges"], total)
        poison_acked = sum(1 for n in range(total) if acked[n] and is_poison(n))
        expected = done["acked"] - poison_acked
        consumers = children[:3]
        published_at = time.time()
        drain: float | None = None
        with contextlib.suppress(TimeoutError):  # then the accounting shows what is missing
            drain = await until(
                lambda: all(c.latest("handled") >= expected for c in consumers)
                and audit.letters >= 3 * poison_acked
                and samples[-1]["t"] > published_at
                and not any(samples[-1][role] for role in ROLES),
                args.drain_timeout, "draining", children)
        drained_at = time.time()
        await asyncio.sleep(1.5)  # one more tick of each consumer, a last commit
        cpu, machine = meter.stop()
        cpu["orchestrator"] = time.process_time() - own_cpu
        load = os.getloadavg()[0]
        sampling.set()
        await sampler
        finals = {c.role: await c.finish() for c in children}
        await audit.client.close()
        charges = await charges_audit(args.postgres, names)
    finally:
        for child in children:
            if child.proc.returncode is None:
                child.proc.kill()
                await child.proc.wait()
        await audit.client.close()
        await backlog.close()
        if not args.keep:
            await cleanup(url, args.postgres, names)
    return account(args, broker, run, total, finals, samples, at_end, acked, audit, charges,
                   drain, drained_at, cpu, machine, load, children)


def kafka_wait_assigned(url: str, names: RunNames, timeout: float = 60.0) -> None:
    """Until each group's member holds every partition of the topic (joining takes seconds)."""
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    from mqkit.url import BrokerURL

    hosts = ",".join(f"{h}:{p or 9092}" for h, p in BrokerURL.parse(url).hosts)
    admin = AdminClient({"bootstrap.servers": hosts})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = admin.describe_consumer_groups(list(names.groups))
        assigned = 0
        for future in described.values():
            group = future.result()
            assigned += sum(1 for m in group.members for tp in m.assignment.topic_partitions
                            if tp.topic == names.topic)
        if assigned >= 3 * 6:
            return
        time.sleep(0.2)
    raise TimeoutError("Kafka groups did not get their partitions within 60 s")


async def charges_audit(postgres: str, names: RunNames) -> dict[str, Any]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(postgres) as conn:
        cur = await conn.execute(
            f"SELECT count(*), count(DISTINCT n) FROM {names.charges_table}")
        rows, distinct = await cur.fetchone() or (0, 0)
        cur = await conn.execute(
            f"SELECT count(*) FROM (SELECT n FROM {names.charges_table} GROUP BY n "
            "HAVING count(*) > 1) doubles")
        doubled = (await cur.fetchone() or (0,))[0]
        cur = await conn.execute(f"SELECT n FROM {names.charges_table}")
        charged = [n for (n,) in await cur.fetchall()]
    return {"rows": rows, "orders": distinct, "double_charged_orders": doubled,
            "charged": charged}


def handled_by(ticks: list[dict[str, Any]], moment: float) -> float:
    """Orders a consumer had handled at ``moment`` (interpolated between its ticks)."""
    before = [t for t in ticks if t["t"] <= moment]
    after = [t for t in ticks if t["t"] > moment]
    if not before:
        return 0.0
    if not after:
        return float(before[-1]["handled"])
    a, b = before[-1], after[0]
    return a["handled"] + (b["handled"] - a["handled"]) * (moment - a["t"]) / (b["t"] - a["t"])


def account(args: argparse.Namespace, broker: str, run: str, total: int,
            finals: dict[str, dict[str, Any]], samples: list[dict[str, Any]],
            at_end: dict[str, int], acked: bytearray, audit: DeadLetterAudit,
            charges: dict[str, Any], drain: float, drained_at: float,
            cpu: dict[str, float], machine: float, load: float,
            children: list[Child]) -> dict[str, Any]:
    producer = finals["producer"]
    started, until_t = producer["started_at"], producer["scheduled_until"]
    window = until_t - started
    poison = [n for n in range(total) if acked[n] and is_poison(n)]
    valid = [n for n in range(total) if acked[n] and not is_poison(n)]
    groups: dict[str, Any] = {}
    for child in children[:3]:
        final = finals[child.role]
        counts = unpack(final["counts"])
        groups[child.role] = {
            "rate": handled_by(child.ticks, until_t) / window,
            "handled": final["handled"],
            "lost": sum(1 for n in valid if not counts[n]),
            "duplicates": sum(max(0, c - 1) for c in counts),
            "poison_handled": sum(1 for n in poison if counts[n]),
            "backlog_max": max((s[child.role] for s in samples), default=0),
            "backlog_end_of_publishing": at_end[child.role],
            "backlog_final": samples[-1][child.role] if samples else None,
            "latency_ms": final["latency_ms"],
            "cpu_seconds": final["cpu_seconds"],
            "profile": final.get("profile"),
        }
    # Each role process reports its own CPU (process time, every thread) since it was ready.
    cpu.update({role: final["cpu_seconds"] for role, final in finals.items()})
    charged = bytearray(total)
    for n in charges.pop("charged"):
        charged[n] = min(255, charged[n] + 1)
    return {
        "broker": broker, "run": run, "rate_target": args.rate, "seconds": args.seconds,
        "handler": args.handler, "payments_mode": args.payments,
        "batch_size": args.batch_size, "prefetch": args.prefetch,
        "published": {
            "scheduled": total, "acked": producer["acked"],
            "unsent": total - producer["acked"]
            - sum(b - a for a, b in producer["failed_ranges"]),
            "failed": sum(b - a for a, b in producer["failed_ranges"]),
            "errors": producer["errors"],
            "rate": producer["acked"] / max(1e-9, producer["last_ack_at"] - started),
            "schedule_overrun_s": until_t - (started + args.seconds),
            "max_inflight_publishes": producer["max_inflight"],
            "cpu_seconds": producer["cpu_seconds"], "profile": producer.get("profile"),
        },
        "groups": groups,
        "dead_letters": {
            "poison_published": len(poison), "letters": audit.letters,
            "letters_for_poison": sum(audit.counts[n] for n in poison),
            "distinct_orders": sum(1 for c in audit.counts if c),
            "poison_missing": sum(1 for n in poison if audit.counts[n] == 0),
            "non_poison_letters": sum(c for n, c in enumerate(audit.counts)
                                      if c and not is_poison(n)),
            "by_group": audit.by_group,
        },
        "payments": {
            **charges,
            "valid_orders_not_charged": sum(1 for n in valid if not charged[n]),
            "poison_charged": sum(1 for n in poison if charged[n]),
        },
        "drain_seconds_after_publishing": drain,
        "completed_s_after_start": drained_at - started,
        "cpu_seconds": cpu, "machine_busy": machine, "load_average_1m": load,
        "wall_seconds": drained_at - started,
        "backlog_samples": samples,
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="broker URL (kafka://, amqp://, jetstream://)")
    parser.add_argument("--all", action="store_true", help="Kafka, RabbitMQ and JetStream")
    parser.add_argument("--rate", type=int, default=10_000, help="orders per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--tick", type=float, default=0.01, help="producer pacing step (s)")
    parser.add_argument("--handler", choices=("batch", "message"), default="batch")
    parser.add_argument("--payments", choices=("batch", "store"), default="batch",
                        help="batch: one transaction per batch; store: mqkit's Idempotency "
                             "middleware with the PostgreSQL store, per message")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batch-timeout", type=float, default=0.02)
    parser.add_argument("--prefetch", type=int, default=2000)
    parser.add_argument("--max-inflight", type=int, default=16,
                        help="publishes awaiting confirmation at once")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--postgres", default=os.environ.get("MQKIT_POSTGRES_URL"))
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--profile", help="directory for pyinstrument reports per process")
    parser.add_argument("--keep", action="store_true", help="keep topics and tables")
    parser.add_argument("--json", help="append results (one JSON object a line) to FILE")
    parser.add_argument("--doc", help="write the markdown results section to FILE")
    parser.add_argument("--report", nargs="+", help="render earlier --json files only")
    parser.add_argument("--profiles", help="a --json file of profiled runs for the report")
    parser.add_argument("--notes", help="markdown appended to the report (the analysis)")
    parser.add_argument("--role", choices=(*ROLES, "producer"), help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


async def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    urls = [os.environ.get(name, "") for name in ALL_BROKERS] if args.all else [args.url]
    if not all(urls):
        raise SystemExit("pass --url, or --all with MQKIT_*_URL set (scripts/brokers env)")
    results = []
    for url in urls:
        result = await run_pipeline(args, url)
        results.append(result)
        print(summary_table([result]), flush=True)
        if args.json:
            await asyncio.to_thread(append_json, args.json, result)
    return results


def append_json(path: str, result: dict[str, Any]) -> None:
    with Path(path).open("a") as out:
        out.write(json.dumps(result) + "\n")


def main() -> None:
    args = parse()
    if args.role:
        from pipeline_roles import run_consumer, run_producer

        args.url = os.environ["MQKIT_PIPELINE_URL"]
        asyncio.run(run_producer(args) if args.role == "producer" else run_consumer(args))
        return
    if args.report:
        results = [json.loads(line) for path in args.report
                   for line in Path(path).read_text().splitlines() if line.strip()]
    else:
        if not args.postgres:
            raise SystemExit("set MQKIT_POSTGRES_URL or pass --postgres")
        results = asyncio.run(run_all(args))
    print(summary_table(results))
    if args.doc:
        profiles = ([json.loads(line) for line in Path(args.profiles).read_text().splitlines()
                     if line.strip()] if args.profiles else [])
        notes = Path(args.notes).read_text() if args.notes else ""
        Path(args.doc).write_text(render(results, profiles, notes))
        print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
