"""Settings of a ``kafka://`` transport: parsed once from the URL and keyword options.

``kafka://[user:password@]host:port[,host:port][?options]``. Options are of three kinds:

- mqkit's own, listed in ``KafkaConfig`` (``partitions``, ``connect_timeout``, ...);
- librdkafka settings, recognised by a dot in their name (``security.protocol``,
  ``sasl.mechanism``, ``ssl.ca.location``...), passed to every client it builds;
- the same prefixed ``producer.`` or ``consumer.`` (``producer.linger.ms=20``) for one side.

A user and password in the URL become ``sasl.username`` / ``sasl.password`` (mechanism PLAIN
and protocol SASL_PLAINTEXT unless the options say otherwise). ``repr`` never shows secrets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mqkit.errors import ConfigurationError
from mqkit.url import BrokerURL, redact_options
from mqkit_kafka.logs import LibrdkafkaLog

DEFAULT_PORT = 9092
# Kafka's default message.max.bytes is 1,000,000 for a record *batch*; keep room for the key,
# the record overhead and mqkit's own headers so a message at the limit is still accepted.
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000 - 8 * 1024

_INT_OPTIONS = {"partitions", "replication_factor", "max_message_bytes", "max_buffered"}
_FLOAT_OPTIONS = {"connect_timeout", "revoke_timeout", "publish_timeout"}
_STR_OPTIONS = {"client_id"}
_TOPIC_CHARS = re.compile(r"[^a-zA-Z0-9._-]")


@dataclass(frozen=True, repr=False)
class KafkaConfig:
    """Everything the Kafka transport needs to build its clients."""

    bootstrap: str
    common: dict[str, str] = field(default_factory=dict)
    """librdkafka settings for every client (security, SASL, TLS...)."""
    producer: dict[str, str] = field(default_factory=dict)
    consumer: dict[str, str] = field(default_factory=dict)
    partitions: int = 4
    """Partitions of a topic ``ensure_topic`` creates when the spec does not say."""
    replication_factor: int = -1
    """-1: the broker's ``default.replication.factor``."""
    connect_timeout: float = 5.0
    """Seconds to reach the cluster at ``connect`` and for admin round trips."""
    publish_timeout: float = 60.0
    """Seconds a message may wait for its delivery report (librdkafka message.timeout.ms)."""
    revoke_timeout: float = 10.0
    """Seconds a rebalance waits for in-flight handlers of revoked partitions to settle."""
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_buffered: int = 2000
    """Fetched records buffered per subscription before its partitions are paused (few:
    see ``subscriber._FETCH_BATCH``)."""
    client_id: str = "mqkit"

    @classmethod
    def from_url(cls, url: BrokerURL, **options: Any) -> KafkaConfig:
        if url.scheme != "kafka":
            raise ConfigurationError(f"the Kafka transport needs kafka://, got {url}")
        hosts = [f"{host}:{port or DEFAULT_PORT}" for host, port in url.hosts if host]
        if not hosts:
            raise ConfigurationError(f"no bootstrap host in {url} (kafka://host:port)")
        merged: dict[str, Any] = {**url.options, **options}
        common: dict[str, str] = {}
        producer: dict[str, str] = {}
        consumer: dict[str, str] = {}
        own: dict[str, Any] = {}
        for name, value in merged.items():
            if name.startswith("producer."):
                producer[name.removeprefix("producer.")] = str(value)
            elif name.startswith("consumer."):
                consumer[name.removeprefix("consumer.")] = str(value)
            elif "." in name:
                common[name] = str(value)
            elif name in _INT_OPTIONS:
                own[name] = _number(int, name, value)
            elif name in _FLOAT_OPTIONS:
                own[name] = _number(float, name, value)
            elif name in _STR_OPTIONS:
                own[name] = str(value)
            else:
                known = sorted(_INT_OPTIONS | _FLOAT_OPTIONS | _STR_OPTIONS)
                raise ConfigurationError(
                    f"unknown kafka:// option {name!r}: mqkit options are {known}; "
                    "librdkafka settings have a dot in their name (security.protocol, ...)"
                )
        if url.username:
            common.setdefault("sasl.username", url.username)
            common.setdefault("sasl.mechanism", "PLAIN")
            common.setdefault("security.protocol", "SASL_PLAINTEXT")
        if url.password is not None:
            common.setdefault("sasl.password", url.password)
        config = cls(",".join(hosts), common, producer, consumer, **own)
        if config.partitions < 1:
            raise ConfigurationError("kafka:// partitions must be >= 1")
        if config.connect_timeout <= 0 or config.revoke_timeout < 0:
            raise ConfigurationError("kafka:// timeouts must be positive")
        return config

    def __repr__(self) -> str:
        shown = redact_options({**self.common, **self.producer, **self.consumer})
        return f"KafkaConfig(bootstrap={self.bootstrap!r}, options={shown!r})"

    @property
    def secrets(self) -> list[str]:
        """Secret values, to scrub from driver error messages."""
        from mqkit.url import is_secret_name

        every = {**self.common, **self.producer, **self.consumer}
        return [v for k, v in every.items() if is_secret_name(k) and v]

    # --- librdkafka configurations --------------------------------------------------------
    def base(self) -> dict[str, Any]:
        ms = int(self.connect_timeout * 1000)
        return {
            "bootstrap.servers": self.bootstrap,
            "client.id": self.client_id,
            "socket.connection.setup.timeout.ms": max(ms, 1000),
            "reconnect.backoff.max.ms": 1000,
            **self.common,
        }

    def producer_conf(self, **extra: Any) -> dict[str, Any]:
        """Idempotent (acks=all), Java-compatible key partitioning, batching for throughput."""
        return {
            **self.base(),
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "batch.num.messages": 10000,
            # Keyless messages keep librdkafka's sticky partitioning (as the Java client since
            # KIP-480): one partition per linger window makes fuller produce requests; spraying
            # each message to a random partition cost ~15 % of publish throughput.
            "message.max.bytes": max(1_000_000, self.max_message_bytes + 64 * 1024),
            "message.timeout.ms": int(self.publish_timeout * 1000),
            # An unknown topic fails within seconds rather than waiting 30s for it to appear.
            "topic.metadata.propagation.max.ms": max(int(self.connect_timeout * 1000), 1000),
            "logger": LibrdkafkaLog(self.secrets),
            **self.producer,
            **extra,
        }

    def consumer_conf(self, group: str, **extra: Any) -> dict[str, Any]:
        """Commit only stored offsets (``enable.auto.offset.store`` off), cooperative-sticky."""
        return {
            **self.base(),
            "group.id": group,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "auto.commit.interval.ms": 500,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "isolation.level": "read_committed",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 300,
            # Also the rebalance timeout: how long a JoinGroup may wait for members to rejoin
            # (after a broker freeze, the returning member's join waited out librdkafka's
            # 300 s default). The consumer thread calls consume() at least every second and
            # blocks only while a revocation waits (at most revoke_timeout + 5 s).
            "max.poll.interval.ms": int((self.revoke_timeout + 35) * 1000),
            # A fetch the broker holds while none of its partitions has data: the retry topic
            # is usually empty, so at start (and at a trickle) this is added latency. 100 ms
            # cost ~90 ms before the first record; 25 ms is 40 fetches/s for an idle member.
            "fetch.wait.max.ms": 25,
            # When librdkafka's local queue is over its thresholds it stops fetching for this
            # long (1 s by default): a handler slower than the broker then drains the queue
            # and waits out the rest of the second (4 KiB records: 36k msgs/s instead of 90k).
            "fetch.queue.backoff.ms": 10,
            "enable.partition.eof": False,
            "topic.metadata.refresh.interval.ms": 10000,
            "logger": LibrdkafkaLog(self.secrets),
            **self.consumer,
            **extra,
        }

    def admin_conf(self) -> dict[str, Any]:
        return {**self.base(), "logger": LibrdkafkaLog(self.secrets)}


def retry_topic(topic: str, group: str) -> str:
    """The topic where ``group``'s delayed redeliveries of ``topic`` wait (one per group, so a
    nack in one group never shows up in another)."""
    name = f"{topic}.mqkit-retry.{_TOPIC_CHARS.sub('_', group)}"
    if len(name) > 249:
        import hashlib

        digest = hashlib.sha1(name.encode()).hexdigest()[:12]
        name = f"{name[:230]}.{digest}"
    return name


def _number(kind: type[int] | type[float], name: str, value: Any) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"kafka:// option {name} must be a number, got {value!r}") from exc
