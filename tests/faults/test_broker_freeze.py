"""The broker frozen (SIGSTOP) for 10 s while publishing, then thawed (SIGCONT).

A frozen broker keeps its TCP connections open and answers nothing: no RST, no confirm.
Four publisher tasks send small batches through one ``mqkit.Client`` (publish timeout 3 s:
``publish_timeout`` on Kafka and RabbitMQ, ``request_timeout`` on JetStream) while a
consumer runs on a second client. Passes only when:

- every publish call returned or raised within its timeout + 1 s (each call is timed);
- each call that ran out of time raised ``PublishTimeout``: the outcome is indeterminate
  (the ledger's ``unknown``), not a refusal; at least one did;
- after the thaw every acked message is delivered, indeterminate ones being re-sent with
  their ids (lost = 0, unexpected = 0, side effects = every attempted id);
- the process holds as many TCP connections to the broker as before the freeze, and none
  once the clients are closed.

Not memory: nothing outside the test process to freeze. Not SQS yet: moto would keep its
state through a freeze, but the SQS adapter has no publish timeout to bound a call by (boto3's
``read_timeout`` is fixed at 30 s, with 3 attempts), so a frozen endpoint holds a publish for
up to 90 s and "timeout + 1 s" cannot be configured; that needs a ``publish_timeout`` option in
``mqkit_sqs`` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from asyncio import FIRST_EXCEPTION
from collections.abc import Callable
from pathlib import Path

import pytest

from mqkit import Client
from mqkit.errors import PublishTimeout
from mqkit.message import new_id
from mqkit.testing import wait_until
from tests.faults.broker_traffic import (
    BROKERS,
    Traffic,
    instance_for,
    publish_options,
    url_of,
)
from tests.faults.instances import (  # noqa: F401 - session fixtures used by instance_for
    dedicated_kafka,
    dedicated_nats,
    dedicated_rabbitmq,
)
from tests.faults.ledger import report

PUBLISH_TIMEOUT = 3.0
SLACK = 1.0
FREEZE = 10.0
PUBLISHERS = 4
BATCH = 10
CATCH_UP = 60.0
"""Seconds the consumer may take to deliver every acked message after the thaw."""
KAFKA_CONSUMER_SESSION = "consumer.session.timeout.ms=30000"
"""The Kafka consumer's group session outlasts the 10 s freeze, so the freeze tests what it
is about (publish calls bounded, nothing lost) without also expiring the group session.
KNOWN DEFECT, not covered here: with the default 10 s session, a consumer whose session
expired across the freeze sometimes stopped delivering for good after librdkafka's
"revoking assignment and rejoining group" (no further log line; 80 of 730 acked ids
undelivered, the last delivery 130 s before the end). Seen only with other tests running on
the second worker (`pytest -n 2 --dist loadgroup tests/faults tests/kafka tests/conformance
tests/integration`), never alone. Not seen again in 26 later sessions expired the same way
(20 freezes of 14 s beside a loop of the Kafka tests, then that command with the 10 s
session, six freezes). librdkafka's lines reach Python only through the consumer's own
poll calls, so the silence fits a consumer thread blocked outside librdkafka as well as a
group that never re-assigned. It needs its own test once the cause is found."""


def tcp_connections(port: int) -> int:
    """This process's TCP sockets connected to 127.0.0.1:``port`` (any state but LISTEN)."""
    mine: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] != "0A" and fields[9] in mine:
                count += 1
    return count


async def settled_count(count: Callable[[], int], expected: int, timeout: float) -> int:
    """``count()`` once it equals ``expected``, or its last value after ``timeout`` s."""
    with contextlib.suppress(AssertionError):
        await wait_until(lambda: count() == expected, timeout, interval=0.2)
    return count()


@pytest.mark.slow
@pytest.mark.parametrize("broker", BROKERS)
async def test_broker_frozen_publishes_end_in_time_and_nothing_is_lost(
    broker: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    began = time.monotonic()
    instance = instance_for(request, broker)
    url = url_of(instance, broker)
    topic = f"faults.freeze.{new_id()[:12]}"
    group = f"freeze-{topic.rsplit('.', 1)[-1]}"
    traffic = Traffic(tmp_path, topic)
    calls: list[tuple[float, float, str]] = []  # (start, seconds, outcome)
    stop = asyncio.Event()
    frozen = False
    options = publish_options(broker, PUBLISH_TIMEOUT)
    try:
        consumer_url = f"{url}?{KAFKA_CONSUMER_SESSION}" if broker == "kafka" else url
        async with (
            Client(consumer_url, **options) as consumer,
            Client(url, **options) as producer,
        ):
            await producer.ensure_topic(topic, groups=[group])
            consumer.subscribe(topic, group=group, concurrency=8)(traffic.handler)
            await consumer.start()
            warm = traffic.ids(BATCH)
            assert await traffic.publish(producer, warm)
            await wait_until(lambda: set(warm) <= traffic.delivered, 30, what="warm-up")
            await asyncio.sleep(0.5)  # let the clients finish opening what they open lazily
            sockets_before = tcp_connections(instance.port)
            ready_s = time.monotonic() - began

            async def publisher() -> None:
                while not stop.is_set():
                    ids = traffic.ids(BATCH)
                    started = time.monotonic()
                    outcome = "raised"
                    try:
                        confirmed = await traffic.publish(producer, ids)
                        # No await since publish() appended its error: it is this call's.
                        outcome = "acked" if confirmed else traffic.errors[-1][0]
                    finally:
                        calls.append((started, time.monotonic() - started, outcome))
                    await asyncio.sleep(0.05)

            publishers = [asyncio.create_task(publisher()) for _ in range(PUBLISHERS)]
            try:
                # A publisher that raised (a refusal) ends the test at once.
                await asyncio.wait(publishers, timeout=1, return_when=FIRST_EXCEPTION)
                instance.freeze()
                frozen = True
                frozen_at = time.monotonic()
                await asyncio.wait(publishers, timeout=FREEZE, return_when=FIRST_EXCEPTION)
                instance.thaw()
                frozen = False
                thawed_at = time.monotonic()
                # Publishing works again after the thaw.
                await wait_until(
                    lambda: any(s >= thawed_at and o == "acked" for s, _d, o in calls)
                    or any(p.done() for p in publishers),
                    30, interval=0.05, what="a publish confirmed after the thaw",
                )
            finally:
                if frozen:
                    instance.thaw()
                stop.set()
                await asyncio.gather(*publishers)
            confirmed_again = next(s + d for s, d, o in calls if s >= thawed_at and o == "acked")
            settled = await traffic.settle_indeterminate(producer, CATCH_UP)
            caught_up_s = time.monotonic() - thawed_at
            sockets_after = await settled_count(lambda: tcp_connections(instance.port),
                                                sockets_before, 20)
        gc.collect()  # a driver object in a reference cycle closes its sockets when collected
        sockets_closed = await settled_count(lambda: tcp_connections(instance.port), 0, 10)
        verdict = traffic.ledger.verdict(traffic.log.counts(), traffic.effects)
        longest = max(d for _s, d, _o in calls)
        timeouts = [o for _s, _d, o in calls if o != "acked"]
        during = [c for c in calls if frozen_at <= c[0] < thawed_at]
        report("broker_freeze", broker, **{**verdict.row(), **settled},
               calls=len(calls), calls_during_freeze=len(during),
               timed_out=len(timeouts), error_types=sorted(set(timeouts)),
               longest_call_s=round(longest, 2), limit_s=PUBLISH_TIMEOUT + SLACK,
               confirmed_after_thaw_s=round(confirmed_again - thawed_at, 2),
               caught_up_after_thaw_s=round(caught_up_s, 1),
               sockets_before=sockets_before, sockets_after=sockets_after,
               sockets_after_close=sockets_closed, ready_s=round(ready_s, 1),
               seconds=round(time.monotonic() - began, 1))
        assert verdict.ok, str(verdict)
        assert longest <= PUBLISH_TIMEOUT + SLACK, sorted(calls, key=lambda c: -c[1])[:5]
        assert timeouts, "no publish ran into the freeze"
        assert set(timeouts) == {PublishTimeout.__name__}, timeouts
        assert traffic.effects.applied() == traffic.ledger.attempted
        assert sockets_after == sockets_before, "connections leaked or lost by the freeze"
        assert sockets_closed == 0, "connections left open after the clients closed"
    finally:
        traffic.close()
