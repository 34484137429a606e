"""``sqs://``: mqkit on Amazon SQS and SNS (boto3).

URL: ``sqs://host:port?region=us-east-1`` for an endpoint such as moto's server
(``http://host:port``; add ``secure=true`` for https), ``sqs://`` alone for AWS itself.
Credentials come from boto3's usual chain and never from the URL; they are never logged.
Every option is listed in ``mqkit_sqs.config``.

Features:

- fan-out (``mode=sns``, the default): a topic is an SNS topic; a group is an SQS queue
  subscribed to it with raw message delivery, so every group gets every message;
  point to point (``mode=queue``): a topic is one SQS queue and every group competes on it;
- FIFO end to end for topics ending in ``.fifo`` (or every topic with ``fifo=true``):
  ``MessageGroupId`` from the key, ``MessageDeduplicationId`` from the idempotency key (else
  a content hash; see ``dedup``); order per key kept;
- publish in batches of 10 (``PublishBatch`` / ``SendMessageBatch``); failed entries of a
  batch are resent or raised, never dropped; the 256 KiB limit is checked before sending;
- any number of headers (SQS carries at most 10 message attributes: mqkit packs its headers
  into one; see ``mqkit_sqs.headers`` for interop with raw boto3);
- long polling (20 s), receives of 10, ack = batched delete, ``nack(delay)`` = visibility
  timeout, a heartbeat extending the visibility of messages whose handler still runs,
  ``attempt`` from ``ApproximateReceiveCount``;
- dead letters: permanent errors and exhausted retries go to ``<topic>.dlq`` through the
  core; the native redrive policy (``max_receive_count``, default 5) moves a message that
  was received that many times without being settled (a consumer that keeps crashing) to
  the same ``<topic>.dlq`` queue of group ``mqkit.dlq``, so ``mqkit dlq`` sees both;
- ``ensure_topic`` creates topics, queues, subscriptions, queue policies and redrive,
  idempotently.

Limits: no replay, wildcards, transactions or request/reply. Delays are whole seconds (a
``nack`` delay is rounded up, at most 12 hours). Order per key only on FIFO topics, and only
between messages that are not redelivered. Topic names map ``.`` to ``_`` (see
``mqkit_sqs.topology``). Standard queues may deliver a message twice (at least once).

moto's server (the test broker) is slow on purpose-free grounds: every send and every
received message recomputes the queue's attributes, scanning all its messages with several
datetime conversions each, so one message costs O(queue depth); keep queues short when
testing on it (the conformance suite sends 500 messages instead of 10,000 to an endpoint).
"""

from mqkit_sqs.config import SqsConfig
from mqkit_sqs.errors import SettleError, UnknownTopicError
from mqkit_sqs.subscriber import SqsDelivery
from mqkit_sqs.transport import SqsTransport

__all__ = ["SettleError", "SqsConfig", "SqsDelivery", "SqsTransport", "UnknownTopicError"]
