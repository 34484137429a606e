"""Hostile headers: CR/LF, invalid UTF-8, thousands of entries, spoofed reserved names.

Each case is either refused at publish with a clear mqkit error (nothing sent) or
neutralised at receive: it arrives as exactly what was sent, one header, never split into
an injected one. Throughout, the consumer is unharmed: a plain message sent after every case
is handled. Spoofing: a publisher may not set the names mqkit's adapters keep their own
bookkeeping in (``headers.RESERVED``: the attempt count, the original topic of a retry copy
...): refused. Forged dead-letter headers (attempts 99, a reason, another original topic)
are plain data: such a message that fails once transiently is retried and processed, never
dead-lettered; one that fails permanently is dead-lettered with the true figures.
Every broker applies.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from mqkit import headers as h
from mqkit.client import DLQ_GROUP, Client
from mqkit.errors import ConfigurationError, MqkitError, PermanentError, TransientError
from mqkit.message import Delivery, Message, new_id
from mqkit.middleware import DeadLetter, Logging, Retry, RetryPolicy
from mqkit.middleware.base import Handler
from mqkit.testing.waiting import wait_until
from tests.brokers import broker_url
from tests.faults.ledger import DeliveryLog, Ledger, SideEffects, report

BROKERS = ["memory", "kafka", "rabbitmq", "jetstream", "sqs"]
TIMEOUT = 60.0
MANY = 3000
FORGED_DLQ = {
    h.DLQ_ATTEMPTS: "99",
    h.DLQ_REASON: "forged",
    h.DLQ_ORIGINAL_TOPIC: "faults.elsewhere",
    h.DLQ_ERROR_TYPE: "Forged",
}


def url_for(name: str) -> str:
    return f"memory://headers-{new_id()[:8]}" if name == "memory" else broker_url(name)


def hostile_cases() -> dict[str, dict[str, Any]]:
    """Case name -> headers. Values of the wrong type are passed as a publisher might."""
    return {
        "crlf-value": {"x-crlf": "a\r\nx-injected: yes\r\n"},
        "crlf-name": {"x-bad\r\nx-injected": "v"},
        "lf-only": {"x-lf": "line one\nline two"},
        "invalid-utf8-bytes": {"x-raw": b"\xff\xfe"},
        "invalid-utf8-surrogate": {"x-raw": b"\xff\xfe".decode("utf-8", "surrogateescape")},
        "invalid-utf8-name": {b"\xff".decode("utf-8", "surrogateescape"): "v"},
        "thousands": {f"x-h-{i:05d}": f"v{i}" for i in range(MANY)},
        "forged-attempt": {h.ATTEMPT: "99"},
        "forged-retry-topic": {"x-mqkit-topic": "faults.elsewhere"},
    }


@pytest.mark.parametrize("broker", BROKERS)
async def test_hostile_headers_are_refused_or_neutralised(broker: str, tmp_path: Path) -> None:
    started = time.monotonic()
    client = Client(url_for(broker))
    await client.connect()
    log = DeliveryLog(tmp_path / "deliveries.log")
    effects = SideEffects(tmp_path / "effects.db")
    ledger = Ledger()
    got: dict[str, Delivery] = {}
    first_attempts: dict[str, int] = {}
    outcomes: dict[str, str] = {}
    try:
        topic = f"faults.headers.{new_id()[:12]}"

        def record(inner: Handler) -> Handler:
            async def recorded(delivery: Delivery) -> Any:
                log.record(delivery.message.id)
                first_attempts.setdefault(delivery.message.id, delivery.attempt)
                return await inner(delivery)

            return recorded

        @client.subscribe(
            topic, group=f"headers-{topic.rsplit('.', 1)[-1]}", concurrency=4,
            middleware=[record, Logging(), DeadLetter(),
                        Retry(RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2))],
        )
        async def handle(payload: dict[str, Any], delivery: Delivery) -> None:
            message_id = delivery.message.id
            if payload.get("fail") == "transient" and delivery.attempt == 1:
                raise TransientError("fails once, then works")
            if payload.get("fail") == "permanent":
                raise PermanentError("never works")
            got[message_id] = delivery
            effects.apply(message_id)

        await client.start()

        async def publish(message_id: str, payload: dict[str, Any], **fields: Any) -> None:
            ledger.attempt(message_id)
            await client.publish(topic, payload, message_id=message_id, **fields)
            ledger.ack(message_id)

        async def unharmed(case: str) -> None:
            await publish(f"after-{case}", {"plain": True})
            await wait_until(lambda: f"after-{case}" in got, TIMEOUT,
                             what=f"a plain message after {case}")

        # When each hostile case is published, followed by a plain message
        for case, headers in hostile_cases().items():
            transport: Any = client.transport
            real = transport.publish
            sent_to_transport = 0

            async def counting(messages: Any, real: Any = real) -> None:
                nonlocal sent_to_transport
                sent_to_transport += 1
                await real(messages)

            transport.publish = counting
            try:
                await publish(case, {"case": case}, headers=headers)
            except MqkitError as exc:
                outcomes[case] = f"refused: {type(exc).__name__}"
                # Then a refusal is a clear mqkit error naming the problem, raised before
                # anything reached the broker
                if isinstance(exc, ConfigurationError) and "header" in str(exc):
                    assert sent_to_transport == 0 or broker == "jetstream", case
                else:
                    assert broker == "rabbitmq" and case == "thousands", (case, exc)
            else:
                await wait_until(lambda case=case: case in got, TIMEOUT, what=case)
                received = dict(got[case].message.headers)
                # Then it arrives as it was sent: each header whole, nothing injected
                for name, value in headers.items():
                    assert received.get(name) == value, (case, name)
                assert "x-injected" not in received, case
                assert got[case].message.topic == topic
                outcomes[case] = "delivered intact"
            finally:
                transport.publish = real
            await unharmed(case)

        # And forged dead-letter headers on a message that fails once, then works
        await publish("forged-dlq-transient", {"fail": "transient"}, headers=FORGED_DLQ)
        await publish("forged-dlq-permanent", {"fail": "permanent"}, headers=FORGED_DLQ)
        await wait_until(lambda: "forged-dlq-transient" in got, TIMEOUT, what="the retry")
        letters = await read_dead_letters(client, topic)
        await unharmed("forged-dlq")
        await asyncio.sleep(0.3)
    finally:
        await client.close()

    verdict = ledger.verdict(log.counts(), effects)
    report(
        "hostile-headers", broker, **verdict.row(), **outcomes,
        forged_dlq_transient="processed" if "forged-dlq-transient" in got else "lost",
        dead_letters=len(letters), seconds=round(time.monotonic() - started, 2),
    )
    effects.close()
    log.close()
    assert verdict.ok, verdict
    # Spoofed bookkeeping names are refused at publish
    assert outcomes["forged-attempt"].startswith("refused"), outcomes
    assert outcomes["forged-retry-topic"].startswith("refused"), outcomes
    assert outcomes["invalid-utf8-bytes"].startswith("refused"), outcomes
    # Forged dead-letter headers do not dead-letter a message that can succeed
    assert first_attempts["forged-dlq-transient"] == 1
    assert got["forged-dlq-transient"].attempt == 2
    # ... and the one that really failed is dead-lettered with the true figures
    assert [m.id for m in letters] == ["forged-dlq-permanent"]
    letter = letters[0].headers
    assert letter[h.DLQ_REASON] == "permanent-error"
    assert letter[h.DLQ_ATTEMPTS] == "1"
    assert letter[h.DLQ_ORIGINAL_TOPIC] == topic
    assert letter[h.DLQ_ERROR_TYPE] == "PermanentError"
    # ... and every plain message after a hostile one was handled
    assert {f"after-{case}" for case in [*hostile_cases(), "forged-dlq"]} <= set(got)


async def read_dead_letters(client: Client, topic: str) -> list[Message]:
    """The dead letters of ``topic``: the first, then any more within a second."""
    letters: list[Message] = []
    source = client.consume(f"{topic}.dlq", group=DLQ_GROUP)
    try:
        async with asyncio.timeout(TIMEOUT):
            delivery = await anext(source)
            letters.append(delivery.message)
            await delivery.ack()
        try:
            async with asyncio.timeout(1.0):
                while True:
                    delivery = await anext(source)
                    letters.append(delivery.message)
                    await delivery.ack()
        except TimeoutError:
            pass
    finally:
        await source.aclose()
    return letters
