"""A handler that hangs three times its lease, with lease extension on and off.

The lease is how long a broker lets a delivery stay unsettled before it gives it to another
consumer: SQS's visibility timeout, JetStream's AckWait, the memory broker's ``ack_timeout``.

- Extension on (the default): the adapter renews the lease while the handler runs (SQS: the
  subscription's heartbeat calls ``ChangeMessageVisibilityBatch`` every visibility / 3;
  JetStream: ``+WPI`` "in progress" every ``heartbeat`` seconds, ack_wait / 3 by default).
  No hanging message is redelivered: each is delivered exactly once. (Other messages may
  still repeat, at least once, e.g. when a loaded moto answers a delete after the visibility
  ran out; the figures count them and the side-effect table absorbs them.)
- Extension off: the lease runs out under the hanging handler and the broker redelivers the
  message meanwhile. The side-effect table absorbs the duplicate (side effects exactly once),
  the first handler's late ack does not crash anything and the consumer keeps consuming.
  JetStream switches it off with an option (``heartbeat`` longer than the test). SQS has no
  option for it: the test replaces the subscription's heartbeat task with one that never
  renews, as a consumer without it would behave. The memory broker never renews a lease:
  it only has the "off" case.

Where mqkit logs the late ack as stale (``STALE_ACK_LOGGED``), the record is asserted. The
memory transport does (``DeliveryExpired``, logged by the consumer); the SQS and JetStream
adapters log a "stale ack" warning when the ack comes after the lease ran out unrenewed
(the broker itself would accept or ignore it silently).

Left out: Kafka (no per-message lease: the adapter's consumer thread keeps polling while
handlers run, so ``max.poll.interval.ms`` never expires under a hanging handler; and it
cannot be set below ``session.timeout.ms``, 10 s, which would make a 30 s test). RabbitMQ
(no lease: an unacked delivery stays with its channel as long as the connection lives; the
server-wide ``consumer_timeout`` is minutes long and checked about once a minute).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mqkit.client import Client
from mqkit.message import Delivery, new_id
from mqkit.testing.waiting import wait_until
from tests.faults.ledger import DeliveryLog, Ledger, SideEffects, report

MESSAGES = 20
SLOW = 2  # the first SLOW messages hang on their first delivery
FOLLOW_UP = 10  # published after the stale acks: the consumer must still take them
HANG_LEASES = 3
STALE_ACK_LOGGED = {"memory": True, "sqs": True, "jetstream": True}

# (broker, extension on?, lease seconds): longer leases where a late renewal would fail
CASES = [
    pytest.param("memory", False, 1.0, id="memory-off"),
    pytest.param("sqs", True, 2.0, id="sqs-on", marks=pytest.mark.slow),
    pytest.param("sqs", False, 1.0, id="sqs-off"),
    pytest.param("jetstream", True, 2.0, id="jetstream-on"),
    pytest.param("jetstream", False, 1.0, id="jetstream-off"),
]


def lease_url(broker: str, extension: bool, lease: float, request: pytest.FixtureRequest) -> str:
    if broker == "memory":
        return f"memory://lease-{new_id()[:8]}?ack_timeout={lease:g}"
    if broker == "sqs":
        base = request.getfixturevalue("sqs_url")
        return f"{base}&visibility_timeout={int(lease)}&wait_time=1"
    base = request.getfixturevalue("jetstream_url")
    options = f"ack_wait={lease:g}&fetch_wait=0.5"
    if not extension:
        options += "&heartbeat=3600"  # never marks a message in progress during the test
    return f"{base}?{options}"


@pytest.fixture
def no_sqs_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQS subscriptions that never extend visibility (there is no option for it)."""
    from mqkit_sqs.subscriber import Subscription

    async def never_renew(self: Subscription) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(Subscription, "_heartbeat", never_renew)


class HangingConsumer:
    """Records every delivery, hangs the first delivery of the slow ids, applies effects."""

    def __init__(self, tmp: Path, slow: set[str], hang: float) -> None:
        self.log = DeliveryLog(tmp / "deliveries.log")
        self.effects = SideEffects(tmp / "effects.db")
        self.slow = slow
        self.hang = hang
        self.hung: dict[str, tuple[float, float]] = {}  # id -> (start, end) of the hang
        self.redelivered_at: dict[str, float] = {}
        self.absorbed = 0
        self.attempts: dict[str, list[int]] = {}

    async def handle(self, payload: Any, delivery: Delivery) -> None:
        mid = delivery.message.id
        self.log.record(mid)
        self.attempts.setdefault(mid, []).append(delivery.attempt)
        if mid in self.slow and mid not in self.hung:
            start = time.monotonic()
            self.hung[mid] = (start, float("inf"))
            await asyncio.sleep(self.hang)  # the hanging handler under test
            self.hung[mid] = (start, time.monotonic())
        elif mid in self.hung:
            self.redelivered_at.setdefault(mid, time.monotonic())
        if not self.effects.apply(mid):
            self.absorbed += 1

    def close(self) -> None:
        self.log.close()
        self.effects.close()


@pytest.fixture
async def tracked() -> AsyncIterator[list[Client]]:
    clients: list[Client] = []
    yield clients
    for client in clients:
        await client.close()


async def publish(client: Client, topic: str, ledger: Ledger, ids: list[str]) -> None:
    """Publish one message per id in one batch, recording each outcome in the ledger."""
    batch = [client.message(topic, {"n": mid}, message_id=mid) for mid in ids]
    for mid in ids:
        ledger.attempt(mid)
    await client.publish_messages(batch)
    for mid in ids:
        ledger.ack(mid)


@pytest.mark.parametrize(("broker", "extension", "lease"), CASES)
async def test_handler_hanging_three_leases(
    broker: str,
    extension: bool,
    lease: float,
    request: pytest.FixtureRequest,
    tracked: list[Client],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a consumer whose handler hangs 3 leases on the first delivery of two messages
    if broker == "sqs" and not extension:
        request.getfixturevalue("no_sqs_heartbeat")
    caplog.set_level(logging.WARNING)
    began = time.monotonic()
    client = Client(lease_url(broker, extension, lease, request))
    tracked.append(client)
    topic = f"faults.lease.{new_id()[:12]}"
    group = f"lease-{topic.rsplit('.', 1)[-1]}"
    await client.ensure_topic(topic, groups=[group])
    ledger = Ledger()
    consumer = HangingConsumer(tmp_path, set(), HANG_LEASES * lease)
    client.subscribe(topic, group=group, concurrency=4)(consumer.handle)
    await client.start()
    try:
        # When MESSAGES are published, the first SLOW of which hang
        ids = [new_id() for _ in range(MESSAGES)]
        consumer.slow = set(ids[:SLOW])
        await publish(client, topic, ledger, ids)
        await wait_until(
            lambda: len(consumer.hung) == SLOW
            and all(end < float("inf") for _, end in consumer.hung.values())
            and consumer.effects.count() == MESSAGES,
            timeout=30 + HANG_LEASES * lease,
            what="every message handled and every hanging handler finished",
        )
        await asyncio.sleep(lease)  # room for a redelivery that should not come
        # And more messages follow the late acks
        follow_up = [new_id() for _ in range(FOLLOW_UP)]
        await publish(client, topic, ledger, follow_up)
        await wait_until(
            lambda: consumer.effects.applied() >= set(follow_up),
            timeout=30,
            what="the follow-up messages handled",
        )
        deliveries = consumer.log.counts()
        verdict = ledger.verdict(deliveries, consumer.effects)
    finally:
        consumer.close()
    late_ack_records = [
        r for r in caplog.records if "passed its ack timeout" in r.getMessage()
    ]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    report(
        "hanging-handler-lease",
        broker,
        extension="on" if extension else "off",
        lease_seconds=lease,
        hang_seconds=HANG_LEASES * lease,
        redelivered_while_hanging=len(consumer.redelivered_at),
        absorbed=consumer.absorbed,
        stale_ack_logged=bool(late_ack_records),
        handler_failures=len(client.failures),
        seconds=round(time.monotonic() - began, 2),
        **verdict.row(),
    )

    # Then nothing is lost or unexpected and every side effect happened exactly once
    assert verdict.ok, verdict
    total = MESSAGES + FOLLOW_UP
    assert verdict.side_effects == total and verdict.delivered_unique == total, verdict
    # And each hanging handler really outlived three leases
    for start, end in consumer.hung.values():
        assert end - start >= HANG_LEASES * lease
    # And nothing crashed: no handler failed, nothing logged at ERROR
    assert client.failures == []
    assert errors == [], [r.getMessage() for r in errors]
    if extension:
        # Extension on: no hanging message was redelivered, each came once
        assert consumer.redelivered_at == {}
        assert all(consumer.attempts[mid] == [1] for mid in consumer.slow), consumer.attempts
        assert late_ack_records == []
    else:
        # Extension off: each hanging message came back while its first handler still hung
        assert set(consumer.redelivered_at) == consumer.slow
        for mid, again in consumer.redelivered_at.items():
            start, end = consumer.hung[mid]
            assert start < again < end, (mid, start, again, end)
        assert verdict.duplicates >= SLOW
        assert consumer.absorbed >= SLOW  # the duplicates' effects were not applied twice
        if STALE_ACK_LOGGED[broker]:
            assert len(late_ack_records) == SLOW, [r.getMessage() for r in late_ack_records]
            assert all(r.levelno == logging.WARNING for r in late_ack_records)
