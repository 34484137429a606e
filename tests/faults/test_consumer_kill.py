"""A consumer SIGKILLed five times during a run, at each hook: nothing lost, effects exact.

The test process publishes N messages (5,000; on an emulator the transport's
``capabilities.bulk_test_size``) through a ``Ledger`` while a child process
(``kill_consumer_child``) consumes them with ``mqkit.Client``: its handler records each
delivery, applies the side effect once per message id, and returns (ack). The child kills
itself with SIGKILL at one hook after a random number of deliveries: ``before`` the side
effect, ``between`` the side effect and the ack, or ``after`` ``ack()`` returned. The test
restarts it after each kill, five times, then lets a last child run until every message has
its side effect. Passes only with lost = 0, unexpected = 0 and exactly N side effects.

``after`` means the client's ``ack()`` returned, which is not the same promise everywhere:
SQS's delete was confirmed; RabbitMQ's and JetStream's acks were handed to the client library
without waiting for the broker; Kafka's offset was only stored, and is committed within
500 ms (``auto.commit.interval.ms``), so there a kill redelivers what was acked since the
last commit (the duplicates say how many).

Brokers: kafka, rabbitmq, jetstream, sqs (moto). Restarts are made fast by settings a
deployment would use, not by skipping work: Kafka members are static
(``group.instance.id``), so a restarted child takes over its predecessor's partitions at
once instead of after the session timeout; JetStream's ``ack_wait`` and SQS's
``visibility_timeout`` are 2 s, so what a dead child held comes back within 2 s. Each
child starts as a warm standby (interpreter and code loaded, nothing connected) while its
predecessor runs, so a restart costs the connection and the group join, not Python's start.

Not memory in the SIGKILL test: the memory broker lives inside the consuming process, so a
SIGKILL of the consumer kills the broker and every message with it; there is nothing to
recover from. Memory gets its own, labelled, in-process crash instead
(``test_memory_consumer_crashed_five_times_loses_nothing``): the same consumer and hooks, the
crash made by cancelling every worker task and abandoning the client unclosed.

Side effects commit with ``synchronous=NORMAL`` (``CrashSafeSideEffects``): durable across a
SIGKILL in WAL mode, without an fsync per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mqkit import Client
from mqkit.errors import ConfigurationError, MessageTooLarge
from mqkit.memory import MemoryBroker
from mqkit.message import new_id
from tests.brokers import ROOT
from tests.faults.kill_consumer_child import CrashSafeSideEffects, KillingConsumer
from tests.faults.ledger import DeliveryLog, Ledger, SideEffects, report

N = 5_000
KILLS = 5
BATCH = 100
PUBLISH_TIMEOUT = 60.0
KILLED_CHILD_TIMEOUT = 60.0
FINAL_CHILD_TIMEOUT = 120.0
SCENARIO = "consumer SIGKILL x5"

log = logging.getLogger(__name__)


def options(broker: str, group: str) -> dict[str, Any]:
    """Transport options of both sides (the durable consumer / queue is created with them)."""
    if broker == "kafka":
        # One static member identity for the successive children: the broker hands the
        # restarted one the dead one's partitions without waiting out its session.
        return {"consumer.group.instance.id": f"{group}-member"}
    if broker == "jetstream":
        return {"ack_wait": 2}
    if broker == "sqs":
        return {"visibility_timeout": 2}
    return {}


async def publish_all(client: Client, topic: str, ids: list[str], ledger: Ledger) -> None:
    """Publish every id in batches; the ledger says what the broker confirmed."""
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        messages = [client.message(topic, {"n": start + i}, message_id=m)
                    for i, m in enumerate(chunk)]
        for m in chunk:
            ledger.attempt(m)
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await client.publish_messages(messages)
        except (MessageTooLarge, ConfigurationError):
            raise  # refused: these stay merely attempted, and the run is void
        except Exception:
            for m in chunk:
                ledger.unknown(m)
            raise
        for m in chunk:
            ledger.ack(m)


class Child:
    """One consumer process, started as a standby and released by ``go``."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.released = float("nan")

    @classmethod
    async def spawn(cls, args: list[str], env: dict[str, str]) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.faults.kill_consumer_child", *args,
            cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def go(self, kill_after: int, total: int) -> None:
        """Connect and consume; die at the hook on delivery ``kill_after`` (0: never, run
        until all ``total`` messages have their side effect)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{kill_after} {total}\n".encode())
        await self.proc.stdin.drain()
        self.released = time.monotonic()

    async def finish(self, timeout: float) -> tuple[int, str]:
        out, _ = await asyncio.wait_for(self.proc.communicate(), timeout)
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode()

    def running(self) -> bool:
        return self.proc.returncode is None

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


def pick_kill_after(rng: random.Random, n: int, effects: SideEffects) -> int:
    """A random delivery count to die at, reachable whatever happened before: every message
    still without its side effect will be delivered at least once more."""
    left = max(1, n - effects.count())
    return rng.randint(min(max(1, n // 25), left), min(max(1, n // 10), left))


def log_size(log: Path) -> int:
    return log.stat().st_size  # a stat: too cheap to hand to a thread


async def first_new_delivery(
    log: Path, size: int, since: float, timeout: float, running: Callable[[], bool]
) -> float:
    """Seconds from ``since`` until the delivery log grew past ``size`` (NaN if the
    consumer ended or ``timeout`` passed first)."""
    deadline = time.monotonic() + timeout
    while log_size(log) <= size:
        if not running() or time.monotonic() > deadline:
            return float("nan")
        await asyncio.sleep(0.005)
    return time.monotonic() - since


@pytest.mark.slow
@pytest.mark.parametrize("hook", ["before", "between", "after"])
@pytest.mark.parametrize("broker", ["kafka", "rabbitmq", "jetstream", "sqs"])
async def test_consumer_killed_five_times_loses_nothing(
    broker: str, hook: str, fault_url: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    topic = f"faults.kill.{hook}.{new_id()[:12]}"
    group = f"kill-{topic.rsplit('.', 1)[-1]}"
    opts = options(broker, group)
    env = {**os.environ, "MQKIT_KILL_OPTIONS": json.dumps(opts)}
    ledger = Ledger()
    deliveries = DeliveryLog(tmp_path / "deliveries")
    effects = CrashSafeSideEffects(tmp_path / "effects.db")
    args = [fault_url, topic, group, hook, str(tmp_path)]
    children: list[Child] = [await Child.spawn(args, env)]  # warming up meanwhile
    resumes: list[float] = []
    final: tuple[int | None, str] = (None, "not started")
    publishing: asyncio.Task[None] | None = None
    try:
        async with Client(fault_url, **opts) as client:
            n = min(N, client.capabilities.bulk_test_size)
            ids = [f"{topic}-{i}" for i in range(n)]
            await client.ensure_topic(topic, groups=(group,), max_deliveries=5)
            # Given messages being published while a consumer runs
            publishing = asyncio.create_task(publish_all(client, topic, ids, ledger))
            # When the consumer is SIGKILLed at the hook five times, restarted each time,
            # and a last one runs until every message has its side effect
            for kill in range(KILLS + 1):
                child, last = children[-1], kill == KILLS
                size = log_size(deliveries.path)
                await child.go(0 if last else pick_kill_after(rng, n, effects), n)
                if not last:
                    children.append(await Child.spawn(args, env))  # the next, warming up
                resumes.append(await first_new_delivery(
                    deliveries.path, size, child.released, KILLED_CHILD_TIMEOUT, child.running
                ))
                if last:
                    try:
                        final = await child.finish(FINAL_CHILD_TIMEOUT)
                    except TimeoutError:  # some message never got its side effect
                        child.kill()
                        final = (None, f"still running after {FINAL_CHILD_TIMEOUT:g}s")
                else:
                    code, out = await child.finish(KILLED_CHILD_TIMEOUT)
                    assert code == -signal.SIGKILL, f"child ended with {code}, not killed: {out}"
            await publishing
    finally:
        if publishing is not None and not publishing.done():
            publishing.cancel()
        for child in children:
            child.kill()
        for child in children:
            await child.proc.wait()
        if broker == "kafka":
            await drop_kafka_topics(fault_url, topic)
    # Then nothing is lost or unexpected, and every message has exactly one side effect
    judge(broker, hook, n, seed, started, resumes, ledger, deliveries, effects)
    assert final[0] == 0, f"the last consumer failed ({final[0]}): {final[1]}"


async def drop_kafka_topics(url: str, prefix: str) -> None:
    """Delete the run's topics (its own, retry and dead-letter ones): Kafka keeps files open
    for every partition, and thousands of leftover test topics exhaust a shared broker."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": urlsplit(url).netloc})

    def drop() -> None:
        names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        for future in admin.delete_topics(names, operation_timeout=30).values() if names else ():
            future.result(30)

    try:
        await asyncio.to_thread(drop)
    except Exception as exc:  # cleanup only: the verdict stands either way
        log.warning("could not delete the topics of %s: %s", prefix, exc)


def judge(
    broker: str, hook: str, n: int, seed: int, started: float, resumes: list[float],
    ledger: Ledger, deliveries: DeliveryLog, effects: SideEffects, scenario: str = SCENARIO,
) -> None:
    """Report the run's figures, then assert what every run of this module must show."""
    verdict = ledger.verdict(deliveries.counts(), effects)
    report(
        scenario, broker, hook=hook, messages=n, kills=KILLS, seed=seed,
        seconds=round(time.monotonic() - started, 1),
        resume_s=[round(r, 2) for r in resumes], **verdict.row(),
    )
    assert verdict.ok, f"seed {seed}: {verdict}"
    assert verdict.acked == n, f"seed {seed}: not every publish was confirmed: {verdict}"
    assert effects.count() == n, f"seed {seed}: {verdict}"
    assert ledger.acked <= effects.applied(), f"seed {seed}: an acked message has no effect"
    assert all(r == r for r in resumes), f"seed {seed}: a consumer never got a delivery"


@pytest.mark.parametrize("hook", ["before", "between", "after"])
async def test_memory_consumer_crashed_five_times_loses_nothing(
    hook: str, tmp_path: Path
) -> None:
    """memory:// cannot take a SIGKILL (see the module docstring); this is the nearest
    honest crash inside one process, reported as its own scenario: at the hook every worker
    task of the consumer is cancelled at once, its client is never stopped or closed, so
    nothing is acked, nacked or handed back; the broker sees the deliveries it holds stay
    unsettled and redelivers them after its ``ack_timeout`` (1 s), as SQS does after a
    visibility timeout. A new client then takes over, five times; a last one completes."""
    started = time.monotonic()
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    name = f"kill-{new_id()[:12]}"
    url = f"memory://{name}?ack_timeout=1"
    topic = f"faults.kill.{hook}.{name}"
    group = f"kill-{name}"
    ledger = Ledger()
    deliveries = DeliveryLog(tmp_path / "deliveries")
    effects = CrashSafeSideEffects(tmp_path / "effects.db")
    n = N
    crashed = asyncio.Event()
    dead: list[Client] = []  # crashed clients: never stopped, never closed
    resumes: list[float] = []

    cancelled: list[int] = []  # the other workers each crash stopped

    def crash() -> None:
        me = asyncio.current_task()
        others = [t for t in asyncio.all_tasks()
                  if t is not me and t.get_name().startswith(f"mqkit-worker-{topic}-")]
        for task in others:
            task.cancel()
        cancelled.append(len(others))
        crashed.set()
        raise asyncio.CancelledError  # the handler goes no further, and nothing settles it

    async def start(kill_after: int) -> KillingConsumer:
        consumer = KillingConsumer(deliveries, effects, hook, kill_after, n, kill=crash)
        client = Client(url, middleware=consumer.middleware())
        client.subscribe(topic, group=group)(consumer.handle)
        await client.start()
        dead.append(client)
        return consumer

    try:
        async with Client(url) as publisher:
            await publisher.ensure_topic(topic, groups=(group,), max_deliveries=5)
            # Given messages being published while a consumer runs
            publishing = asyncio.create_task(
                publish_all(publisher, topic, [f"{topic}-{i}" for i in range(n)], ledger)
            )
            # When the consumer crashes at the hook five times, replaced each time
            for _ in range(KILLS):
                crashed.clear()
                began, size = time.monotonic(), log_size(deliveries.path)
                consumer = await start(pick_kill_after(rng, n, effects))
                resumes.append(await first_new_delivery(
                    deliveries.path, size, began, KILLED_CHILD_TIMEOUT, lambda: True
                ))
                await asyncio.wait_for(crashed.wait(), KILLED_CHILD_TIMEOUT)
                assert consumer.seen == consumer.kill_after
                assert cancelled[-1] > 0, "the crash found no other worker to stop"
            # And a last one runs until every message has its side effect
            began, size = time.monotonic(), log_size(deliveries.path)
            final = await start(0)
            resumes.append(await first_new_delivery(
                deliveries.path, size, began, FINAL_CHILD_TIMEOUT, lambda: True
            ))
            with contextlib.suppress(TimeoutError):  # judged below: lost, side effects
                await asyncio.wait_for(final.complete.wait(), FINAL_CHILD_TIMEOUT)
            await dead.pop().close()
            await publishing
    finally:
        MemoryBroker.forget(name)
    # Then nothing is lost or unexpected, and every message has exactly one side effect
    judge("memory", hook, n, seed, started, resumes, ledger, deliveries, effects,
          scenario="consumer crash x5 (in-process: tasks cancelled, client abandoned)")
