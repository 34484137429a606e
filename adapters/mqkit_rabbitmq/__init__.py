"""RabbitMQ for mqkit, on pika's asyncio adapter: ``amqp://`` and ``amqps://``.

URL::

    amqp://user:password@host:5672/vhost?option=value&...     (amqps:// for TLS, port 5671)

The vhost is the percent-encoded path (``/%2F`` or nothing is ``/``). The password appears
in no log, repr or error (``str(url)`` is redacted).

Options (URL query or keyword arguments to the transport; keyword wins):

- amqps:// only: ``tls_ca_file``, ``tls_cert_file`` + ``tls_key_file`` (mutual TLS),
  ``tls_hostname``, ``tls_verify`` (true; ``false`` only explicitly, with a WARNING); see
  ``mqkit_rabbitmq.config``;
- ``exchange`` (``mqkit``): the shared exchange, or the prefix of per-topic exchanges;
- ``exchange_type`` (``topic``): ``topic`` (routing key = topic, wildcards ``*``/``#``),
  ``direct`` (exact keys), ``fanout`` or ``headers`` (an exchange per topic; extra header
  bindings through ``RabbitMQTransport.bind``);
- ``queue_type`` (``classic``) or ``quorum``; ``max_priority`` (1-10, classic only);
  ``message_ttl`` (seconds) and ``max_length`` (messages) for group queues, all overridable
  per topic through ``TopicSpec.options`` (``retention_seconds`` and ``retention_messages``
  map to TTL and max length);
- ``heartbeat`` (30 s), ``connect_timeout`` (5 s), ``publish_timeout`` (30 s: how long a
  publish may wait for a reconnect and its confirms), ``reconnect_max_delay`` (5 s),
  ``request_timeout`` (5 s), ``mandatory`` (true), ``max_message_bytes`` (16 MiB).

Features:

- topic -> routing key on one durable topic exchange; group -> durable queue
  ``<topic>:<group>`` bound to it; wildcard subscriptions; direct/fanout/headers exchanges;
  quorum queues (their ``x-delivery-count`` gives attempts);
- publisher confirms, pipelined per batch; persistent messages; mandatory publishing (an
  unroutable message raises ``PublishError``);
- prefetch through ``basic_qos``; manual acks; ``nack(delay)`` through per-delay TTL retry
  queues that dead-letter back to the original queue (no plugin; the delay is rounded up
  to the next of a fixed ladder of steps, at most 2x apart, never shortened);
- dead letters on ``<topic>.dlq`` (exchange ``<exchange>.dlx``): mqkit's dead-lettering with
  error headers, plus RabbitMQ's own DLX for expired TTL and max-length overflow (those
  carry ``x-dlq-reason`` from ``x-death``: ``expired``, ``maxlen``...);
- message priority (header ``priority``) and per-message TTL (header ``expiration``, ms);
- attempts from ``x-mqkit-attempt`` (set on retried copies), ``x-delivery-count`` or
  ``x-death``;
- request/reply with direct reply-to (``amq.rabbitmq.reply-to``);
- reconnect with backoff after a lost connection: topology declared again, consumers
  resumed; a publish during the outage succeeds after the reconnect or raises.

Limits:

- pika objects live on the event loop of ``connect``: heartbeats are loop timers, so a
  handler that blocks the loop longer than two heartbeats loses the connection (use
  ``asyncio.to_thread`` for blocking work); awaiting handlers are fine however long;
- order per key is not promised (competing consumers and retries reorder; the runner still
  serialises one key within a process);
- no replay (a consumed message is gone), no transactions, no compacted topics;
- a wildcard group's queue has no native dead-letter routing (mqkit's dead-lettering still
  sends failures to each concrete topic's ``.dlq``);
- a message retried (nacked) is a new copy at the back of its queue; after a connection
  loss a message may be delivered or published twice (at-least-once).
"""

from mqkit_rabbitmq.config import RabbitConfig
from mqkit_rabbitmq.subscriber import RabbitDelivery
from mqkit_rabbitmq.transport import RabbitMQTransport

__all__ = ["RabbitConfig", "RabbitDelivery", "RabbitMQTransport"]
