"""NATS for mqkit (nats-py): core subjects (``nats://``) and JetStream (``jetstream://``).

URL format::

    nats://[user:password@ | token@]host:port[,host2:port2][?option=value&...]
    jetstream://[user:password@ | token@]host:port[,...][?option=value&...]

Credentials: user/password or a lone token in the URL, ``token=``, ``nkey_seed=`` (an nkey
seed string) or ``creds=`` (a credentials file) as options; all are passed to nats-py and
redacted from reprs, logs and errors. Other options are listed in ``mqkit_nats.config``.

TLS: ``tls=true`` (or any of ``tls_ca_file``, ``tls_cert_file`` + ``tls_key_file`` for mutual
TLS, ``tls_hostname``) encrypts the connection and verifies the server's certificate (system
trust store or ``tls_ca_file``) and name; a server that does not offer TLS is refused with
``ConnectionFailed``. ``tls_verify=false`` turns verification off, with a WARNING. Without
any TLS option, a server that requires TLS is still verified against the system trust store.
The ``nats+tls://`` / ``jetstream+tls://`` schemes are not registered: use ``?tls=true``.

Core NATS (``NatsTransport``) features: publish (confirmed by a server round trip),
subscribe with queue groups (a group's members compete; every group sees every message),
request/reply on inboxes with a timeout (``RequestTimeout`` at once when no responder is
subscribed), wildcards (``*`` is one token; a trailing ``#`` becomes ``>`` plus the prefix
itself; ``#`` elsewhere is a ``ConfigurationError``). Limits: at most once and nothing is
stored: a message published while no member of a group is subscribed is gone, as are
messages a slow consumer falls behind on; ``nack`` redelivers only inside the subscribing
process; order per key is not promised; no replay; the server's ``max_payload`` (1 MiB by
default) bounds a message with its headers.

JetStream (``JetStreamTransport``) features: ``ensure_topic`` creates a stream (file storage,
MaxAge from ``retention_seconds``, MaxMsgs from ``retention_messages``, duplicate window) and
one durable pull consumer per group (explicit ack, AckWait, MaxDeliver, deliver all);
``publish`` awaits every PubAck (pipelined); ``Nats-Msg-Id`` carries the idempotency key
(else the message id) so the server drops duplicates inside the window; ``nack(delay)`` is a
nak with that delay; dead-lettering publishes to ``<topic>.dlq`` then terminates the original;
long handlers send in-progress every ``heartbeat`` seconds; ``attempt`` is the server's
``num_delivered``; ``seek`` replays a group from a sequence or a time; request/reply through
the stream. Limits: no key compaction, no transactions, no order per key across competing
consumers or after a nak; a wildcard subscription needs one stream covering the pattern
(``ensure_topic("orders.#")``), so portable wildcards are not claimed; the durable consumer is
re-created by ``seek``.

Publishing speed: when the connection passes a feature check of nats-py's internals
(``mqkit_nats.wire``), mqkit builds the HPUB frames itself and queues a batch at once, and
writes a burst of JetStream acks at once; else it uses nats-py's public ``publish`` and
``Msg.ack`` (``fast_publish=false`` forces that); the bytes are the same. JetStream consumers
pull on their own inbox rather than through nats-py's ``fetch`` (whose per-message wait costs
more than the rest of consuming).

Reconnects: nats-py reconnects forever and re-subscribes; JetStream consumers resume pulling,
and a publish is either acknowledged or raises ``PublishError`` after ``request_timeout``.
"""

from mqkit_nats.config import NatsConfig
from mqkit_nats.subscriber import CoreDelivery, JetStreamDelivery
from mqkit_nats.transport import JetStreamTransport, NatsTransport

__all__ = [
    "CoreDelivery",
    "JetStreamDelivery",
    "JetStreamTransport",
    "NatsConfig",
    "NatsTransport",
]
