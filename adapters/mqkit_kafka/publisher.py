"""The producing side: one idempotent librdkafka producer, delivery reports into asyncio.

``publish(batch)`` hands every message to librdkafka (which batches them into produce
requests) and returns once the last delivery report of the batch arrived: one future per
batch, not one round trip per message.

Delivery reports are served by ``poll(0)`` on the event loop's own thread, every millisecond
while deliveries are outstanding (every 100 ms when idle, for librdkafka's log lines). A
polling thread would need the GIL back for every report while the loop holds it to produce
the next batch: the two threads would hand the GIL to each other once per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from mqkit.errors import MqkitError, PublishError, PublishTimeout
from mqkit.message import Message
from mqkit_kafka.errors import convert
from mqkit_kafka.headers import ID, RawHeaders, encode_headers, encode_value

log = logging.getLogger("mqkit.kafka.publisher")

BUSY_POLL_S = 0.001
"""Between polls while deliveries are outstanding: what a delivery may wait to be noticed."""
IDLE_POLL_S = 0.1


class _Batch:
    """Counts the delivery reports of one batch; resolves its future on the last one.

    Every method runs on the event loop's thread (reports are served by its ``poll``).
    """

    __slots__ = ("error", "future", "partitions", "remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int, keep: bool) -> None:
        self.future: asyncio.Future[None] = loop.create_future()
        self.remaining = count
        self.error: KafkaError | None = None
        self.partitions: list[int] | None = [-1] * count if keep else None

    def callback(self, index: int) -> Any:
        """A report callback that also records the partition of message ``index``."""

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is None and self.partitions is not None:
                self.partitions[index] = msg.partition()
            self.on_delivery(err, msg)

        return on_delivery

    def on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        # Runs once per message: ``unsent(1)`` inlined.
        if err is not None and self.error is None:
            self.error = err
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(None)

    def unsent(self, count: int) -> None:
        """``count`` fewer reports to wait for (delivered, or never handed to librdkafka)."""
        self.remaining -= count
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(None)


class Publisher:
    """An idempotent producer shared by every publish of one transport.

    Safe to use from many tasks of one event loop. ``start`` and ``close`` are idempotent;
    publishing after ``close`` raises ``PublishError``.
    """

    def __init__(self, conf: dict[str, Any], secrets: list[str]) -> None:
        self._conf = conf
        self._secrets = secrets
        # librdkafka checks message timeouts once a second: publish keeps its own deadline.
        self._timeout = float(conf.get("message.timeout.ms", 300_000)) / 1000
        self._producer: Producer | None = None
        self._server: asyncio.Task[None] | None = None
        self._outstanding = asyncio.Event()  # set when a batch was handed to librdkafka

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            raise PublishError("the Kafka transport is not connected (call connect first)")
        return self._producer

    def start(self) -> None:
        """Create the producer; call from the event loop that will publish."""
        if self._producer is not None:
            return
        try:
            self._producer = Producer(self._conf)
        except KafkaException as exc:
            raise convert(exc, "creating the Kafka producer", secrets=self._secrets) from exc
        self._outstanding = asyncio.Event()
        self._server = asyncio.get_running_loop().create_task(
            self._serve_reports(self._producer), name="mqkit-kafka-delivery-reports"
        )

    async def _serve_reports(self, producer: Producer) -> None:
        outstanding = self._outstanding
        while True:
            producer.poll(0)
            if len(producer):
                await asyncio.sleep(BUSY_POLL_S)
                continue
            outstanding.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(outstanding.wait(), IDLE_POLL_S)

    async def publish(self, messages: Sequence[Message], *, partitions: bool = False) -> list[int]:
        """Send ``messages``; return once every one was acknowledged by the broker (acks=all).

        Raises the converted error of the first failed delivery (``MessageTooLarge``,
        ``UnknownTopicError``, ``AuthorizationError``, ``PublishError``...), or
        ``PublishTimeout`` once ``message.timeout.ms`` passed without every report. With
        ``partitions`` it returns the partition each message went to.
        """
        if not messages:
            return []
        producer = self.producer
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        batch = _Batch(loop, len(messages), partitions)
        produce = producer.produce
        # One bound callback for the whole batch unless partitions are wanted: the hot loop
        # below runs once per message, so it inlines what encode_headers/key/value do.
        on_delivery = batch.on_delivery
        sent = 0
        try:
            for message in messages:
                record_headers: RawHeaders = [(ID, message.id.encode())]
                if message.headers:
                    record_headers = encode_headers(message)
                    value = encode_value(message)
                else:
                    value = message.body
                key = message.key
                if partitions:
                    on_delivery = batch.callback(sent)
                while True:
                    try:
                        # Positional: confluent-kafka parses keywords at ~0.4 µs a call, a
                        # third of the call. Its order ("s|z#z#iOOLO"): topic, value, key,
                        # partition (-1: the partitioner), callback, on_delivery (alias),
                        # timestamp, headers. tests/kafka/test_wire.py reads each back.
                        produce(
                            message.topic,
                            value,
                            None if key is None else key.encode(),
                            -1,
                            on_delivery,
                            None,
                            int(message.timestamp * 1000),
                            record_headers,
                        )
                        break
                    except BufferError:
                        # librdkafka's queue is full: let the report server drain it.
                        self._outstanding.set()
                        await asyncio.sleep(0.005)
                sent += 1
        except KafkaException as exc:
            batch.unsent(len(messages) - sent)
            self._outstanding.set()
            await batch.future
            raise convert(
                exc, f"publishing to {messages[sent].topic!r}", publishing=True,
                secrets=self._secrets,
            ) from exc
        self._outstanding.set()
        try:
            async with asyncio.timeout_at(deadline):
                await batch.future
        except TimeoutError as exc:
            raise PublishTimeout(
                f"publishing to {messages[0].topic!r}: {batch.remaining} of {len(messages)} "
                f"message(s) not confirmed within {self._timeout:g}s; they may still be written"
            ) from exc
        if batch.error is not None:
            raise _delivery_error(batch.error, messages[0].topic, self._secrets)
        return batch.partitions or []

    async def flush(self, timeout: float) -> int:
        """Wait for queued messages (their reports served here, on the loop); returns how
        many are still undelivered after ``timeout`` seconds."""
        producer = self._producer
        if producer is None:
            return 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(producer) and loop.time() < deadline:
            producer.poll(0)
            await asyncio.sleep(BUSY_POLL_S)
        producer.poll(0)
        return len(producer)

    async def close(self, timeout: float = 10.0) -> None:
        if self._producer is None:
            return
        left = await self.flush(timeout)
        if left:
            log.warning("%d message(s) still undelivered when the producer closed", left)
        server, self._server = self._server, None
        if server is not None:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server
        self._producer = None


def _delivery_error(err: KafkaError, topic: str, secrets: list[str]) -> MqkitError:
    exc = KafkaException(err)
    converted = convert(exc, f"publishing to {topic!r}", publishing=True, secrets=secrets)
    converted.__cause__ = exc
    return converted
