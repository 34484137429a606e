"""``kafka://``: mqkit on Apache Kafka through confluent-kafka (librdkafka).

URL: ``kafka://[user:password@]host:port[,host:port][?options]``, for example
``kafka://127.0.0.1:9092`` or
``kafka://app:s3cret@b1:9093,b2:9093?security.protocol=SASL_SSL&sasl.mechanism=SCRAM-SHA-512``.
Options with a dot are librdkafka settings (prefix ``producer.`` or ``consumer.`` for one
side); mqkit's own: ``partitions`` (4), ``replication_factor`` (broker default),
``connect_timeout`` (5 s), ``publish_timeout`` (60 s), ``revoke_timeout`` (10 s),
``max_message_bytes``, ``max_buffered`` (2000), ``client_id``. Passwords and secret options
never appear in reprs, logs or errors.

Features:
- producer: idempotent (``enable.idempotence``, ``acks=all``), batched (``linger.ms=5``); a
  published batch returns when every delivery report arrived; keys partitioned like the Java
  client (``murmur2_random``; ``partitioner.java_partition`` computes it); headers both ways;
- topics: ``ensure_topic`` creates or checks partitions (grow, never shrink), retention and
  ``cleanup.policy=compact``;
- consumer groups with cooperative-sticky assignment; offsets committed only up to the first
  unfinished message of each partition; revoked partitions finish in-flight work (bounded by
  ``revoke_timeout``) or are redelivered; a new group starts at the oldest retained message;
- ``nack(delay)`` through a per-group retry topic ``<topic>.mqkit-retry.<group>``: the copy
  carries ``x-mqkit-attempt`` and a not-before time, never blocks the original partition and
  is never redelivered early; dead letters go to ``<topic>.dlq`` (through the core);
- replay: ``KafkaTransport.seek`` (live members) and ``admin.seek_group`` (stopped group),
  ``admin.consumer_lag``;
- transactions: ``TransactionalProcessor`` (consume-transform-produce, read_committed);
- compacted topics: ``tombstone(topic, key)`` and ``table_view`` (latest value per key);
- a watchdog: a consumer thread that has not polled for a minute is logged (WARNING on
  ``mqkit.kafka.subscriber``, with the frames it is stuck in), since librdkafka's own log
  lines only come out through those polls.

Limits:
- no per-message broker delay: delayed retries wait in the consuming process's memory (the
  retry topic's committed offset waits with them, so a crash redelivers, never loses);
- a retry goes to the back of the line: order per key holds only between first deliveries;
- no wildcard subscriptions, no request/reply; ``retention_messages`` is not supported
  (Kafka retains by time or bytes);
- a group's first member starts from the oldest message (``consumer.auto.offset.reset``).

Throughput: every fetched record is a Python object the garbage collector tracks; in a
process with a large heap, full collections during a fast consume cost tens of milliseconds
each. Such a service can call ``gc.freeze()`` once it has started (measured with the
benchmark's imports loaded: batch handler +24 %, per-message +30 %; the benchmark freezes
its import-time heap before each round, ``--no-freeze`` leaves it, and its "GC %" column shows
each column's share); mqkit itself never changes the collector's settings.
"""

from mqkit_kafka.admin import Admin, PartitionLag, PartitionPosition, consumer_lag, seek_group
from mqkit_kafka.config import KafkaConfig, retry_topic
from mqkit_kafka.errors import TopicMismatchError, TransactionError, UnknownTopicError
from mqkit_kafka.headers import is_tombstone, tombstone
from mqkit_kafka.partitioner import java_partition, murmur2
from mqkit_kafka.subscriber import KafkaDelivery, Subscription
from mqkit_kafka.table import table_view
from mqkit_kafka.transactions import TransactionalProcessor
from mqkit_kafka.transport import KafkaTransport

__all__ = [
    "Admin",
    "KafkaConfig",
    "KafkaDelivery",
    "KafkaTransport",
    "PartitionLag",
    "PartitionPosition",
    "Subscription",
    "TopicMismatchError",
    "TransactionError",
    "TransactionalProcessor",
    "UnknownTopicError",
    "consumer_lag",
    "is_tombstone",
    "java_partition",
    "murmur2",
    "retry_topic",
    "seek_group",
    "table_view",
    "tombstone",
]
