"""Duplicates and replays: 1,000 messages, each published three times, plus replays.

Every copy of a message carries the same message id and idempotency key (and its own
``x-mqkit-dedup-id``, so a de-duplicating broker such as JetStream hands every copy to the
consumer and the idempotency layer, not the broker, has to absorb them). On top of the
copies each broker replays in its own way:

- every broker: 10% of the messages are nacked with delay 0 right after their side effect
  (RabbitMQ requeues, SQS sets the visibility to 0, JetStream naks, Kafka re-sends through
  its retry topic, memory puts the entry back);
- where the group can be rewound (memory, Kafka, JetStream: ``capabilities.replay``), the
  group is then sought back to offset 0 and the whole topic is delivered again.

The consumer runs mqkit's ``Idempotency`` middleware on the SQLite store and a side-effect
table keyed by message id. Side effects must be exactly 1,000, and the handler must have been
reached exactly 1,000 times: the idempotency layer absorbed every repeat before the handler,
the table never saw one. SQS on moto costs O(queue depth) per message, so there the copies
add up to half ``capabilities.bulk_test_size`` (80 messages x 3, published in steps of 50;
reported as ``messages``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from mqkit import headers as h
from mqkit.client import Client
from mqkit.message import Delivery, Message, new_id
from mqkit.middleware import DeadLetter, Idempotency, Logging, Retry, RetryPolicy
from mqkit.middleware.base import Handler
from mqkit.stores.sqlite import SqliteIdempotencyStore
from mqkit.testing.waiting import wait_until
from tests.brokers import broker_url
from tests.faults.ledger import DeliveryLog, Ledger, SideEffects, report

COPIES = 3
MESSAGES = 1000
REPLAY_EVERY = 10  # every tenth message is nacked (delay 0) once after its side effect
TIMEOUT = 120.0
SLOW_CHUNK = 50  # on an emulator that costs O(queue depth) per message, publish in steps
BROKERS = ["memory", "kafka", "rabbitmq", "jetstream", "sqs"]


class Item(BaseModel):
    n: int
    round: int


def url_for(name: str) -> str:
    return f"memory://dup-{new_id()[:8]}" if name == "memory" else broker_url(name)


class Counters:
    """What the chain saw: every delivery, absorbed repeats, handler calls, busy nacks."""

    def __init__(self, log: DeliveryLog) -> None:
        self.log = log
        self.deliveries = 0
        self.absorbed = 0
        self.reached: Counter[str] = Counter()

    def outermost(self, inner: Handler) -> Handler:
        async def record(delivery: Delivery) -> Any:
            self.log.record(delivery.message.id)
            self.deliveries += 1
            return await inner(delivery)

        return record

    def around_idempotency(self, inner: Handler) -> Handler:
        async def absorbed(delivery: Delivery) -> Any:
            result = await inner(delivery)
            if delivery.state.get("duplicate"):
                self.absorbed += 1
            return result

        return absorbed


def copies_of(topic: str, count: int) -> list[list[Message]]:
    """``COPIES`` rounds of the same ``count`` messages (same id and idempotency key)."""
    rounds = []
    for copy in range(COPIES):
        rounds.append([
            Message(
                topic=topic,
                body=Item(n=n, round=copy).model_dump_json().encode(),
                headers={
                    h.CONTENT_TYPE: "application/json",
                    h.IDEMPOTENCY_KEY: f"dup-{n}",
                    h.DEDUP_ID: f"dup-{n}-copy-{copy}",
                },
                id=f"dup-{n}",
            )
            for n in range(count)
        ])
    return rounds


@pytest.mark.slow
@pytest.mark.parametrize("broker", BROKERS)
async def test_copies_and_replays_apply_each_side_effect_once(
    broker: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    client = Client(url_for(broker))
    await client.connect()
    store = await SqliteIdempotencyStore.open(str(tmp_path / "idempotency.db"))
    effects = SideEffects(tmp_path / "effects.db")
    counters = Counters(DeliveryLog(tmp_path / "deliveries.log"))
    ledger = Ledger()
    try:
        caps = client.capabilities
        count = min(MESSAGES, caps.bulk_test_size // (2 * COPIES) // 10 * 10)
        topic = f"faults.dup.{new_id()[:12]}"
        group = f"dup-{topic.rsplit('.', 1)[-1]}"
        replayed: set[str] = set()

        async def handle(item: Item, delivery: Delivery) -> None:
            counters.reached[delivery.message.id] += 1
            effects.apply(delivery.message.id)
            if item.n % REPLAY_EVERY == 0 and delivery.message.id not in replayed:
                replayed.add(delivery.message.id)
                await delivery.nack(delay=0)  # hand it back: a replay of a handled message

        stack = [
            counters.outermost,
            Logging(),
            DeadLetter(),
            Retry(RetryPolicy(max_attempts=20, base_delay=0.05, max_delay=0.5)),
            counters.around_idempotency,
            Idempotency(store, busy_retry_delay=0.2),
        ]
        client.subscribe(topic, group=group, concurrency=16, middleware=stack)(handle)
        await client.start()

        # When every message is published three times
        chunk_size = 250 if count >= MESSAGES else SLOW_CHUNK
        published = 0
        for batch in copies_of(topic, count):
            for start in range(0, count, chunk_size):
                chunk = batch[start : start + chunk_size]
                for m in chunk:
                    ledger.attempt(m.id)
                await client.publish_messages(chunk)
                for m in chunk:
                    ledger.ack(m.id)
                published += len(chunk)
                if chunk_size == SLOW_CHUNK:  # keep moto's queue short: it costs O(depth)
                    await wait_until(lambda n=published: counters.deliveries >= n - SLOW_CHUNK,
                                     TIMEOUT, interval=0.05)
        nacked = count // REPLAY_EVERY
        first_pass = COPIES * count + nacked
        await wait_until(
            lambda: counters.deliveries >= first_pass and effects.count() == count,
            TIMEOUT, interval=0.05, what=f"{first_pass} deliveries",
        )
        # And, where the group can be rewound, the whole topic is replayed
        expected = first_pass
        if caps.replay:
            await asyncio.sleep(0.5)  # let the last acks reach the broker before rewinding
            await client.transport.seek(topic, group, offset=0)  # type: ignore[attr-defined]
            expected += COPIES * count
            await wait_until(
                lambda: counters.deliveries >= expected, TIMEOUT, interval=0.05,
                what=f"{expected} deliveries after the seek",
            )
        await asyncio.sleep(0.5)  # a stray redelivery would show up here
    finally:
        await client.close()
        await store.close()

    deliveries = counters.log.counts()
    verdict = ledger.verdict(deliveries, effects)
    tries = sum(row[0] for row in effects._db.execute("SELECT tries FROM effects"))
    report(
        "duplicates-and-replays", broker, **verdict.row(), messages=count, copies=COPIES,
        nack_replays=nacked, seek_replay=caps.replay, handler_calls=sum(counters.reached.values()),
        absorbed_by_idempotency=counters.absorbed, table_repeats=tries - effects.count(),
        seconds=round(time.monotonic() - started, 2),
    )
    effects.close()
    counters.log.close()
    # Then nothing is lost or unexpected, and each side effect happened once
    assert verdict.ok, verdict
    assert verdict.side_effects == count
    assert verdict.deliveries >= expected
    # ... because the idempotency layer, not the table, absorbed every repeat
    assert sum(counters.reached.values()) == count, counters.reached.most_common(3)
    assert tries == count
    assert counters.absorbed >= expected - count
