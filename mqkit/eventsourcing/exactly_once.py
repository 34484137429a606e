"""Exactly-once effects from a broker into PostgreSQL: the consumed position and the business
write commit in one transaction.

    async def credit(delivery: Delivery, tx: StoreTransaction) -> None:
        await tx.execute("UPDATE balances SET amount = amount + ? WHERE id = ?", (...))

    consumer = await ExactlyOnceConsumer.open(client, "postgresql://...", "payments",
                                              group="ledger", handler=credit)
    await consumer.run()                                   # until stop()

For each delivery, in one transaction: record its position, run the handler, commit; then
ack. A position already recorded means the effect is already committed: the delivery is
acked without running the handler. A crash anywhere (before the commit, between the commit
and the ack, inside the ack) therefore leaves each effect exactly once.

Positions (pluggable, ``Positioning``):

- ``PartitionOffsets``: Kafka-style ``(topic, partition, offset)``, stored per group and
  partition in ``<prefix>_consumer_offsets``; an offset at or below the stored one is a
  duplicate. Used by ``auto_position`` when the delivery exposes integer ``partition`` and
  ``offset`` (``mqkit_kafka.KafkaDelivery``). On ``open`` the stored offsets are handed to
  the transport's ``seek_partitions`` where it has one (resume at stored + 1); without it the
  broker's own committed offsets decide where reading starts and the stored offsets filter
  out what was already applied. Assumes a partition is read in order and a nacked message
  comes back under a new position (the Kafka adapter's retry topic), never out of order on
  the same partition.
- ``MessageIds``: the message id, stored per group in ``<prefix>_consumer_inbox`` (a unique
  key). For brokers without offsets (memory, SQS, RabbitMQ, NATS). The table grows by one
  row per message: prune old rows yourself once the broker can no longer redeliver them.

Handler failures roll the transaction back and nack the delivery with backoff (full
jitter); after ``max_attempts`` it is dead-lettered. Messages are handled one at a time, in
the order received.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from mqkit.backoff import full_jitter
from mqkit.client import Client
from mqkit.errors import ConfigurationError, ErrorKind, classify
from mqkit.eventsourcing.store import StoreTransaction
from mqkit.message import Delivery
from mqkit.stores._names import check_table_name
from mqkit.stores._pg import Connection, PgTransaction, Pool

log = logging.getLogger("mqkit.eventsourcing.exactly_once")

TxHandler = Callable[[Delivery, StoreTransaction], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a delivery sits: ``(topic, partition, offset)`` or a message id."""

    topic: str
    partition: int | None = None
    offset: int | None = None
    message_id: str | None = None


Positioning = Callable[[Delivery], Position]


def message_ids(delivery: Delivery) -> Position:
    """Position by message id (every broker)."""
    return Position(delivery.message.topic, message_id=delivery.message.id)


def partition_offsets(delivery: Delivery) -> Position:
    """Position by partition and offset; ``ConfigurationError`` if the delivery has none."""
    partition = getattr(delivery, "partition", None)
    offset = getattr(delivery, "offset", None)
    if not isinstance(partition, int) or not isinstance(offset, int):
        raise ConfigurationError(
            f"{type(delivery).__name__} exposes no partition/offset; use message_ids"
        )
    topic = getattr(delivery, "source_topic", None) or delivery.message.topic
    return Position(str(topic), partition, offset)


def auto_position(delivery: Delivery) -> Position:
    """Partition offsets where the delivery exposes them, else the message id."""
    if isinstance(getattr(delivery, "offset", None), int) and isinstance(
        getattr(delivery, "partition", None), int
    ):
        return partition_offsets(delivery)
    return message_ids(delivery)


@runtime_checkable
class PartitionSeek(Protocol):
    """A transport that can start a group at given offsets per partition (optional power)."""

    async def seek_partitions(self, topic: str, group: str, offsets: Mapping[int, int]) -> None:
        ...


@dataclass(frozen=True)
class _Sql:
    schema: tuple[str, ...]
    claim_offset: str
    claim_message: str
    offsets: str

    @classmethod
    def for_prefix(cls, prefix: str) -> _Sql:
        off = f'"{check_table_name(prefix + "_consumer_offsets")}"'
        inbox = f'"{check_table_name(prefix + "_consumer_inbox")}"'
        return cls(
            schema=(
                f"CREATE TABLE IF NOT EXISTS {off} (grp text NOT NULL, topic text NOT NULL, "
                'partition integer NOT NULL, "offset" bigint NOT NULL, '
                "PRIMARY KEY (grp, topic, partition))",
                f"CREATE TABLE IF NOT EXISTS {inbox} (grp text NOT NULL, "
                "message_id text NOT NULL, topic text NOT NULL, "
                "done_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (grp, message_id))",
            ),
            claim_offset=(
                f'INSERT INTO {off} AS o (grp, topic, partition, "offset") '
                "VALUES (%s, %s, %s, %s) ON CONFLICT (grp, topic, partition) "
                'DO UPDATE SET "offset" = excluded."offset" WHERE o."offset" < excluded."offset" '
                "RETURNING 1"
            ),
            claim_message=(
                f"INSERT INTO {inbox} (grp, message_id, topic) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING 1"
            ),
            offsets=f'SELECT partition, "offset" FROM {off} WHERE grp = %s AND topic = %s',
        )


class ExactlyOnceConsumer:
    """See the module docstring. Create with ``await ExactlyOnceConsumer.open(...)``.

    ``run`` may be called once at a time; ``stop`` lets the message in hand finish.
    Counters: ``applied`` (handler committed) and ``duplicates`` (absorbed).
    """

    def __init__(self, client: Client, pool: Pool, sql: _Sql, topic: str, group: str,
                 handler: TxHandler, position: Positioning, prefetch: int,
                 max_attempts: int, backoff_base: float, backoff_cap: float) -> None:
        self.client = client
        self._pool = pool
        self._sql = sql
        self.topic = topic
        self.group = group
        self.handler = handler
        self.position = position
        self.prefetch = prefetch
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.applied = 0
        self.duplicates = 0
        self._stopping = False
        self._waiting: asyncio.Task[Any] | None = None

    @classmethod
    async def open(
        cls,
        client: Client,
        database_url: str,
        topic: str,
        *,
        group: str,
        handler: TxHandler,
        position: Positioning = auto_position,
        prefix: str = "mqkit",
        prefetch: int = 10,
        max_attempts: int = 5,
        backoff_base: float = 0.2,
        backoff_cap: float = 10.0,
    ) -> ExactlyOnceConsumer:
        """Create the position tables if missing and resume from the stored offsets."""
        if max_attempts < 1 or prefetch < 1:
            raise ConfigurationError("max_attempts and prefetch must be >= 1")
        sql = _Sql.for_prefix(prefix)
        pool = Pool(database_url, name="Postgres exactly-once consumer")
        async with pool.transaction() as conn:
            with pool.errors("creating the position tables"):
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (prefix + "_eo",))
                for statement in sql.schema:
                    await conn.execute(statement)
        consumer = cls(client, pool, sql, topic, group, handler, position, prefetch,
                       max_attempts, backoff_base, backoff_cap)
        await consumer._resume()
        return consumer

    async def stored_offsets(self, topic: str | None = None) -> dict[int, int]:
        """The last applied offset per partition of ``topic`` for this group."""
        async with self._pool.transaction() as conn:
            with self._pool.errors():
                cur = await conn.execute(self._sql.offsets,
                                         (self.group, topic or self.topic))
                return {int(p): int(o) for p, o in await cur.fetchall()}

    async def _resume(self) -> None:
        transport = self.client.transport
        if not isinstance(transport, PartitionSeek):
            return  # the broker's committed position; stored offsets filter what is done
        offsets = await self.stored_offsets()
        if offsets:
            await self.client.connect()
            await transport.seek_partitions(
                self.topic, self.group, {p: o + 1 for p, o in offsets.items()}
            )

    async def process(self, delivery: Delivery) -> bool:
        """Apply one delivery exactly once and settle it; True if the handler ran and
        committed, False for a duplicate or a failure (nacked or dead-lettered)."""
        position = self.position(delivery)
        try:
            async with self._pool.transaction() as conn:
                fresh = await self._claim(conn, position)
                if fresh:
                    await self.handler(delivery, PgTransaction(conn))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(delivery, exc)
            return False
        if fresh:
            self.applied += 1
        else:
            self.duplicates += 1
        await delivery.ack()
        return fresh

    async def run(self) -> None:
        """Consume and apply until ``stop()`` (or the subscription ends)."""
        self._stopping = False
        source = self.client.consume(self.topic, group=self.group, prefetch=self.prefetch)
        try:
            while not self._stopping:
                self._waiting = asyncio.ensure_future(anext(source))
                try:
                    delivery = await self._waiting
                except (StopAsyncIteration, asyncio.CancelledError):
                    if self._stopping:
                        return
                    raise
                finally:
                    self._waiting = None
                await self.process(delivery)
        finally:
            await source.aclose()

    def stop(self) -> None:
        self._stopping = True
        if self._waiting is not None:
            self._waiting.cancel()

    async def close(self) -> None:
        self.stop()
        await self._pool.close()

    async def _claim(self, conn: Connection, p: Position) -> bool:
        with self._pool.errors("recording the consumed position"):
            if p.message_id is not None:
                cur = await conn.execute(self._sql.claim_message,
                                         (self.group, p.message_id, p.topic))
            else:
                cur = await conn.execute(self._sql.claim_offset,
                                         (self.group, p.topic, p.partition, p.offset))
            return await cur.fetchone() is not None

    async def _failed(self, delivery: Delivery, exc: Exception) -> None:
        permanent = classify(exc) is ErrorKind.PERMANENT
        if permanent or delivery.attempt >= self.max_attempts:
            log.error("giving up on %s after %d attempt(s): %s", delivery.message.id,
                      delivery.attempt, exc)
            await delivery.dead_letter("permanent error" if permanent else "out of attempts", exc)
            return
        delay = full_jitter(delivery.attempt, self.backoff_base, self.backoff_cap)
        log.warning("handler failed on %s (attempt %d), retrying in %.2fs: %s",
                    delivery.message.id, delivery.attempt, delay, exc)
        await delivery.nack(delay=delay)
