"""Consume-transform-produce in Kafka transactions: exactly once inside Kafka.

``TransactionalProcessor`` reads a batch from its input topic (read_committed, in a consumer
group), calls ``transform`` for each message, produces the outputs and commits the input
offsets in the same transaction (``send_offsets_to_transaction``). Either the outputs and
the new input position both become visible, or neither does: a processor killed between
producing and committing leaves only aborted outputs, which read_committed consumers never
see, and its successor (same ``transactional_id``) fences it and processes the batch again.

Blocking librdkafka calls run on one worker thread; ``transform`` runs on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from mqkit.errors import ConfigurationError
from mqkit.message import Message
from mqkit.url import BrokerURL
from mqkit_kafka.config import KafkaConfig
from mqkit_kafka.errors import TransactionError, convert
from mqkit_kafka.headers import (
    decode,
    decode_headers,
    encode_headers,
    encode_key,
    encode_value,
)

Transform = Callable[[Message], Awaitable[Sequence[Message]]]
T = TypeVar("T")


class TransactionalProcessor:
    """Runs ``transform`` over ``input_topic`` for ``group``, one transaction per batch.

    ``transactional_id`` must be stable for one logical processor (a restart reuses it, which
    fences the previous instance and aborts its open transaction) and distinct between
    processors running at once. ``before_commit`` (optional, synchronous) runs after a
    batch's outputs reached the broker and before the commit: for metrics and fault tests.
    """

    def __init__(
        self,
        url: str | BrokerURL,
        *,
        input_topic: str,
        group: str,
        transactional_id: str,
        transform: Transform,
        batch_size: int = 500,
        batch_timeout: float = 0.1,
        transaction_timeout: float = 60.0,
        before_commit: Callable[[], None] | None = None,
        **options: Any,
    ) -> None:
        if batch_size < 1 or batch_timeout <= 0:
            raise ConfigurationError("batch_size must be >= 1 and batch_timeout > 0")
        parsed = url if isinstance(url, BrokerURL) else BrokerURL.parse(url)
        self.config = KafkaConfig.from_url(parsed, **options)
        self.input_topic = input_topic
        self.group = group
        self.transactional_id = transactional_id
        self.transform = transform
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.before_commit = before_commit
        self._timeout = max(self.config.connect_timeout * 6, 30.0)
        self._txn_ms = int(transaction_timeout * 1000)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "mqkit-kafka-txn")
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self.processed = 0
        """Input messages whose transaction committed."""

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        """Join the group and register the transactional id (fencing older instances)."""
        if self._producer is not None:
            return
        secrets = self.config.secrets
        try:
            self._consumer = Consumer(
                self.config.consumer_conf(
                    self.group, **{"enable.auto.commit": False,
                                   "isolation.level": "read_committed",
                                   # transform() runs between two consume() calls here:
                                   # librdkafka's default bound, not the subscriber's.
                                   "max.poll.interval.ms": 300_000}
                )
            )
            self._producer = Producer(
                self.config.producer_conf(
                    **{"transactional.id": self.transactional_id,
                       "transaction.timeout.ms": self._txn_ms}
                )
            )
            self._consumer.subscribe([self.input_topic])
            await self._call(self._producer.init_transactions, self._timeout)
        except KafkaException as exc:
            raise convert(exc, "starting the transactional processor", secrets=secrets) from exc

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Process batches until ``stop`` is set. A failing batch is aborted, its inputs
        rewound, and ``TransactionError`` raised (the processor can ``run`` again)."""
        await self.start()
        while stop is None or not stop.is_set():
            await self.process_batch()

    async def process_batch(self) -> int:
        """Fetch and process at most one batch in one transaction; returns its size."""
        await self.start()
        consumer, producer = self._consumer, self._producer
        assert consumer is not None and producer is not None
        fetched: list[Any] = await self._call(
            consumer.consume, self.batch_size, self.batch_timeout
        )
        records = [r for r in fetched if r.error() is None]
        if not records:
            return 0
        first: dict[tuple[str, int], int] = {}
        last: dict[tuple[str, int], int] = {}
        for r in records:
            tp = (r.topic(), r.partition())
            first.setdefault(tp, r.offset())
            last[tp] = r.offset()
        try:
            await self._call(producer.begin_transaction)
            for r in records:
                _, ts = r.timestamp()
                message, _ = decode(
                    r.topic(), r.partition(), r.offset(), r.key(), r.value(),
                    decode_headers(r.headers()), ts,
                )
                for out in await self.transform(message):
                    producer.produce(
                        out.topic, value=encode_value(out), key=encode_key(out),
                        headers=encode_headers(out), timestamp=int(out.timestamp * 1000),
                    )
            left = await self._call(producer.flush, self._timeout)
            if left:
                raise TransactionError(f"{left} output(s) not delivered in time")
            if self.before_commit is not None:
                self.before_commit()
            positions = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
            metadata = consumer.consumer_group_metadata()
            await self._call(
                producer.send_offsets_to_transaction, positions, metadata, self._timeout
            )
            await self._call(producer.commit_transaction, self._timeout)
        except Exception as exc:
            await self._abort(consumer, producer, first)
            if isinstance(exc, TransactionError):
                raise
            raise TransactionError(
                f"transaction on {self.input_topic!r} aborted: {type(exc).__name__}: {exc}"
            ) from exc
        self.processed += len(records)
        return len(records)

    async def _abort(
        self, consumer: Consumer, producer: Producer, first: dict[tuple[str, int], int]
    ) -> None:
        try:
            await self._call(producer.abort_transaction, self._timeout)
        except KafkaException:
            pass  # fenced or already aborted: the broker aborts it on timeout or fencing
        for (topic, partition), offset in first.items():
            try:
                await self._call(consumer.seek, TopicPartition(topic, partition, offset))
            except KafkaException:
                pass  # partition revoked meanwhile: its new owner starts from the commit

    async def close(self) -> None:
        """Leave the group; an open transaction is aborted by the broker."""
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            await self._call(consumer.close)
        if producer is not None:
            await self._call(producer.flush, 5.0)
        self._executor.shutdown(wait=False)
