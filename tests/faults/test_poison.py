"""Poison input: 990 valid and 10 poison messages to a handler typed with a pydantic model.

The poison kinds: bad JSON, the wrong schema, an empty body, invalid UTF-8, a deeply nested
JSON bomb, pickle bytes whose loading would create a marker file, a JSON array, a JSON
string, a field of the wrong type, and invalid UTF-8 inside a JSON string. Each is published
as ``application/json`` with headers of its own. Expected: exactly the 10 land in
``<topic>.dlq`` with the reason headers and their original headers, the 990 are processed,
the consumer keeps running (valid messages sent after the poison are processed too), and
nothing ever unpickled the pickle (no marker file; ``pickle.loads`` never called).
Every broker applies; SQS on moto sends ``capabilities.bulk_test_size`` messages
halved (240 valid + 10 poison, published in steps of 50), as moto costs O(queue depth) per
message.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from mqkit import headers as h
from mqkit.client import DLQ_GROUP, Client
from mqkit.message import Delivery, Message, new_id
from mqkit.middleware import DeadLetter, Logging, Retry, RetryPolicy
from mqkit.middleware.base import Handler
from mqkit.testing.waiting import wait_until
from tests.brokers import broker_url
from tests.faults.ledger import DeliveryLog, Ledger, SideEffects, report

VALID = 990
LATE = 10  # valid messages sent once the poison is dead-lettered
TIMEOUT = 90.0
SLOW_CHUNK = 50  # on an emulator that costs O(queue depth) per message, publish in steps
BROKERS = ["memory", "kafka", "rabbitmq", "jetstream", "sqs"]


class Order(BaseModel):
    order_id: str
    amount: float


class _Trap:
    """Unpickling this would create ``path``: proof that something loaded the pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.path),))


def poison_bodies(marker: Path) -> dict[str, bytes]:
    depth = 100_000
    return {
        "bad-json": b'{"order_id": "p1", "amount": ',
        "wrong-schema": b'{"order_id": 5}',
        "empty": b"",
        "invalid-utf8": b"\xff\xfe\xfa\x80 not text",
        "json-bomb": b"[" * depth + b"]" * depth,
        "pickle": pickle.dumps(_Trap(str(marker))),  # dumped here, never loaded
        "json-array": b"[1, 2, 3]",
        "json-string": b'"an order, honest"',
        "wrong-type": b'{"order_id": "p9", "amount": "lots"}',
        "utf8-in-json": b'{"order_id": "\xe2\x82", "amount": 1}',
    }


def url_for(name: str) -> str:
    return f"memory://poison-{new_id()[:8]}" if name == "memory" else broker_url(name)


def json_message(topic: str, body: bytes, message_id: str, **headers: str) -> Message:
    return Message(
        topic=topic,
        body=body,
        headers={h.CONTENT_TYPE: "application/json", **headers},
        id=message_id,
    )


@pytest.mark.slow
@pytest.mark.parametrize("broker", BROKERS)
async def test_poison_is_dead_lettered_and_the_consumer_keeps_going(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    marker = tmp_path / "unpickled.marker"
    unpickles: list[bytes] = []
    real_loads = pickle.loads

    def spying_loads(data: bytes, /, **kw: Any) -> Any:
        unpickles.append(data)
        return real_loads(data, **kw)

    monkeypatch.setattr(pickle, "loads", spying_loads)
    client = Client(url_for(broker))
    await client.connect()
    log = DeliveryLog(tmp_path / "deliveries.log")
    effects = SideEffects(tmp_path / "effects.db")
    ledger = Ledger()
    try:
        valid = min(VALID, client.capabilities.bulk_test_size // 2 - 10)
        topic = f"faults.poison.{new_id()[:12]}"
        group = f"poison-{topic.rsplit('.', 1)[-1]}"

        def record(inner: Handler) -> Handler:
            async def recorded(delivery: Delivery) -> Any:
                log.record(delivery.message.id)
                return await inner(delivery)

            return recorded

        @client.subscribe(
            topic, group=group, concurrency=8,
            middleware=[record, Logging(), DeadLetter(), Retry(RetryPolicy(max_attempts=3))],
        )
        async def handle(order: Order) -> None:
            effects.apply(order.order_id)

        await client.start()
        poison = poison_bodies(marker)
        messages: list[Message] = [
            json_message(topic, Order(order_id=f"ok-{n}", amount=n).model_dump_json().encode(),
                         f"ok-{n}")
            for n in range(valid)
        ]
        spacing = valid // len(poison)
        for i, (kind, body) in enumerate(poison.items()):
            letter = json_message(topic, body, f"poison-{kind}", **{"x-poison": kind,
                                                                     "x-origin": "fault-suite"})
            messages.insert((i + 1) * spacing + i, letter)
        # When valid and poison messages are published, interleaved
        chunk_size = 200 if valid >= VALID else SLOW_CHUNK
        for start in range(0, len(messages), chunk_size):
            chunk = messages[start : start + chunk_size]
            for m in chunk:
                ledger.attempt(m.id)
            await client.publish_messages(chunk)
            for m in chunk:
                ledger.ack(m.id)
            if chunk_size == SLOW_CHUNK:  # keep moto's queue short: it costs O(depth)
                await wait_until(lambda start=start: log.path.stat().st_size > 0
                                 and sum(log.counts().values()) >= start, TIMEOUT)
        await wait_until(lambda: effects.count() >= valid, TIMEOUT, interval=0.05,
                         what=f"{valid} valid orders")
        letters = await read_dead_letters(client, topic, len(poison))
        # And valid messages keep coming after the poison
        late = [
            json_message(topic, Order(order_id=f"late-{n}", amount=n).model_dump_json().encode(),
                         f"late-{n}")
            for n in range(LATE)
        ]
        for m in late:
            ledger.attempt(m.id)
        await client.publish_messages(late)
        for m in late:
            ledger.ack(m.id)
        await wait_until(lambda: effects.count() >= valid + LATE, TIMEOUT, interval=0.05,
                         what="the orders sent after the poison")
        await asyncio.sleep(0.3)
        failures = list(client.failures)
    finally:
        await client.close()

    verdict = ledger.verdict(log.counts(), effects)
    by_kind = {m.headers.get("x-poison"): m for m in letters}
    report(
        "poison", broker, **verdict.row(), valid=valid, poison=len(poison),
        dead_lettered=len(letters), processed=effects.count() - LATE, late_processed=LATE,
        handler_failures=len(failures), unpickled=len(unpickles) + marker.exists(),
        seconds=round(time.monotonic() - started, 2),
    )
    applied = effects.applied()
    effects.close()
    log.close()
    # Then nothing is lost, the valid ones (and only they) had their effect
    assert verdict.ok, verdict
    assert applied == {f"ok-{n}" for n in range(valid)} | {f"late-{n}" for n in range(LATE)}
    # ... every poison message is in the DLQ once, with why and its original headers
    assert sorted(by_kind) == sorted(poison), sorted(map(str, by_kind))
    assert len(letters) == len(poison)
    for kind, letter in by_kind.items():
        assert letter.id == f"poison-{kind}"
        assert letter.body == poison[str(kind)], kind
        assert letter.headers[h.DLQ_REASON] == "permanent-error", kind
        assert letter.headers[h.DLQ_ERROR_TYPE] == "DecodeError", kind
        assert letter.headers[h.DLQ_ORIGINAL_TOPIC] == topic
        assert letter.headers[h.DLQ_ATTEMPTS] == "1"  # permanent: never retried
        assert letter.headers["x-origin"] == "fault-suite"
        assert letter.headers[h.CONTENT_TYPE] == "application/json"
    assert {type(exc).__name__ for _, exc in failures} == {"DecodeError"}
    assert len(failures) == len(poison)
    # ... and the pickle was never loaded
    assert not unpickles
    assert not marker.exists()


async def read_dead_letters(client: Client, topic: str, count: int) -> list[Message]:
    """Every dead letter of ``topic`` (acked), waiting a little for any beyond ``count``."""
    letters: list[Message] = []
    source = client.consume(f"{topic}.dlq", group=DLQ_GROUP)
    try:
        async with asyncio.timeout(TIMEOUT):
            while len(letters) < count:
                delivery = await anext(source)
                letters.append(delivery.message)
                await delivery.ack()
        try:  # one more would be one too many
            async with asyncio.timeout(1.0):
                delivery = await anext(source)
                letters.append(delivery.message)
                await delivery.ack()
        except TimeoutError:
            pass
    finally:
        await source.aclose()
    return letters
