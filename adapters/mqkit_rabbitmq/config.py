"""Settings of the RabbitMQ transport: parsed once from the URL and keyword options.

URL: ``amqp://user:pass@host:port/vhost?option=value&...`` (``amqps://`` for TLS). The vhost
is the URL path, percent-encoded (``/%2F`` is the default vhost ``/``). Every option may
also be given as a keyword argument to the transport (keyword wins). Unknown options are a
``ConfigurationError`` naming the known ones, never silently ignored.

TLS (``amqps://`` only; on ``amqp://`` these are a ``ConfigurationError``): the broker's
certificate is verified (``CERT_REQUIRED``) and its name checked against the URL host.

- ``tls_ca_file``: PEM bundle of the CAs to trust *instead of* the system trust store
  (an internal CA);
- ``tls_cert_file`` + ``tls_key_file`` (both or neither): PEM client certificate and its
  unencrypted key, for brokers that require one (``fail_if_no_peer_cert``);
- ``tls_hostname``: the name to verify (and send as SNI) when it differs from the URL host;
- ``tls_verify`` (true): ``false`` turns verification off (tests only: anyone in the path can
  impersonate the broker); a WARNING says so once per transport.

The files are read once, when the transport is created: a missing or unreadable file is a
``ConfigurationError`` naming the option (never the file's contents).

Secrets: the password lives only in ``credentials``; ``repr`` shows the redacted URL.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pika

from mqkit.errors import ConfigurationError
from mqkit.url import BrokerURL

log = logging.getLogger("mqkit.rabbitmq")

EXCHANGE_TYPES = ("topic", "direct", "fanout", "headers")
QUEUE_TYPES = ("classic", "quorum")
MAX_PRIORITY_LIMIT = 10
"""RabbitMQ advises a small priority range: each level costs the broker an internal queue."""
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
RETRY_BUCKETS_MS = tuple(
    round(step * scale)
    for scale in (10, 100, 1_000, 10_000, 100_000, 1_000_000)
    for step in (1, 1.5, 2, 3, 5, 7.5)
    if step * scale >= 50
) + tuple(hours * 3_600_000 for hours in (4, 8, 12, 24))
"""Delays (ms) of the TTL retry queues (steps of at most 2x, from 50 ms to 24 h); a nack
delay is rounded *up* to the next one, so a retry never comes early."""


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"option {name} must be true or false, got {value!r}")


def _number(name: str, value: Any, kind: type[int] | type[float], low: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"option {name} must be a number, got {value!r}") from exc
    if number < low:
        raise ConfigurationError(f"option {name} must be >= {low}, got {value!r}")
    return number


@dataclass(frozen=True)
class TlsOptions:
    """How an ``amqps://`` connection checks the broker and proves who the client is."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    hostname: str | None = None
    verify: bool = True

    @classmethod
    def take(cls, opts: dict[str, Any], tls: bool) -> TlsOptions:
        """Pop the ``tls_*`` options from ``opts`` (validated; files are not read yet)."""
        given = {name: opts.pop(name) for name in TLS_OPTIONS if name in opts}
        if given and not tls:
            raise ConfigurationError(
                f"options {', '.join(sorted(given))} configure TLS: use an amqps:// URL"
            )
        paths = {name: _path(name, given.get(name)) for name in TLS_OPTIONS[:3]}
        if (paths["tls_cert_file"] is None) != (paths["tls_key_file"] is None):
            raise ConfigurationError(
                "options tls_cert_file and tls_key_file go together: give both or neither"
            )
        hostname = str(given.get("tls_hostname") or "").strip()
        return cls(
            ca_file=paths["tls_ca_file"],
            cert_file=paths["tls_cert_file"],
            key_file=paths["tls_key_file"],
            hostname=hostname or None,
            verify=_flag("tls_verify", given.get("tls_verify", True)),
        )

    def context(self) -> ssl.SSLContext:
        """The SSL context of every connection: ``CERT_REQUIRED`` and ``check_hostname``
        unless ``verify`` is off. Raises ``ConfigurationError`` for an unusable file."""
        try:
            # With a cafile only that bundle is trusted, not the system store.
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise _unusable("tls_ca_file", self.ca_file, "a PEM CA bundle", exc) from exc
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file, password=_no_password)
            except (OSError, ssl.SSLError) as exc:
                raise _unusable(
                    "tls_cert_file/tls_key_file", f"{self.cert_file}, {self.key_file}",
                    "a PEM certificate and its matching unencrypted key", exc,
                ) from exc
        if not self.verify:
            context.check_hostname = False  # before verify_mode: ssl insists on this order
            context.verify_mode = ssl.CERT_NONE
        return context


TLS_OPTIONS = ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_hostname", "tls_verify")


def _path(name: str, value: Any) -> str | None:
    """A file option's path (``str`` or ``os.PathLike``); it must name a file."""
    if value is None:
        return None
    path = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if not path:
        return None
    if not os.path.isfile(path):
        raise ConfigurationError(f"option {name}: {path!r} is not a file")
    return str(path)


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal and block the service.
    raise ConfigurationError("option tls_key_file: the key is encrypted; give an unencrypted key")


def _unusable(name: str, path: str | None, wanted: str, exc: BaseException) -> ConfigurationError:
    # The reason only (ssl's or the OS's words), never the bytes of the file.
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
    return ConfigurationError(f"option {name}: cannot load {path!r} as {wanted} ({reason})")


@dataclass(frozen=True)
class QueueOptions:
    """What a group's queue is declared with (transport defaults, overridable per topic)."""

    queue_type: str = "classic"
    max_priority: int | None = None
    message_ttl: float | None = None
    """Seconds a message may wait in the queue before it is dead-lettered (expired)."""
    max_length: int | None = None
    """Messages the queue holds; the oldest are dead-lettered beyond it."""

    def __post_init__(self) -> None:
        if self.queue_type not in QUEUE_TYPES:
            raise ConfigurationError(
                f"queue_type must be one of {', '.join(QUEUE_TYPES)}, got {self.queue_type!r}"
            )
        if self.max_priority is not None:
            if not 1 <= self.max_priority <= MAX_PRIORITY_LIMIT:
                raise ConfigurationError(
                    f"max_priority must be between 1 and {MAX_PRIORITY_LIMIT}, "
                    f"got {self.max_priority}"
                )
            if self.queue_type == "quorum":
                raise ConfigurationError("quorum queues do not support max_priority")

    def merged(self, options: dict[str, str], retention_seconds: float | None,
               retention_messages: int | None) -> QueueOptions:
        """These defaults overridden by a ``TopicSpec``'s options and retention."""
        unknown = set(options) - {"queue_type", "max_priority", "message_ttl", "max_length"}
        if unknown:
            raise ConfigurationError(
                f"unknown amqp:// topic options: {sorted(unknown)} "
                "(known: queue_type, max_priority, message_ttl, max_length)"
            )
        ttl = options.get("message_ttl")
        length = options.get("max_length")
        priority = options.get("max_priority")
        return QueueOptions(
            queue_type=options.get("queue_type", self.queue_type),
            max_priority=(
                _number("max_priority", priority, int, 1) if priority else self.max_priority
            ),
            message_ttl=(
                _number("message_ttl", ttl, float, 0) if ttl
                else retention_seconds if retention_seconds is not None else self.message_ttl
            ),
            max_length=(
                _number("max_length", length, int, 0) if length
                else retention_messages if retention_messages is not None else self.max_length
            ),
        )

    def arguments(self) -> dict[str, Any]:
        """The ``x-`` arguments of ``queue.declare`` (dead-lettering added by the topology)."""
        args: dict[str, Any] = {"x-queue-type": self.queue_type}
        if self.max_priority is not None:
            args["x-max-priority"] = self.max_priority
        if self.message_ttl is not None:
            args["x-message-ttl"] = round(self.message_ttl * 1000)
        if self.max_length is not None:
            args["x-max-length"] = self.max_length
        return args


@dataclass(frozen=True, repr=False)
class RabbitConfig:
    """Everything the transport needs to know, validated. See ``mqkit_rabbitmq`` for options."""

    url: BrokerURL
    host: str
    port: int
    vhost: str
    username: str
    credentials: pika.PlainCredentials = field(compare=False)
    tls: bool
    tls_options: TlsOptions = field(default_factory=TlsOptions)
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)
    """Built once from ``tls_options`` (amqps:// only), shared by every (re)connection."""
    exchange: str = "mqkit"
    exchange_type: str = "topic"
    queue: QueueOptions = field(default_factory=QueueOptions)
    heartbeat: int = 30
    connect_timeout: float = 5.0
    publish_timeout: float = 30.0
    """Seconds a publish may wait (for a reconnect, then for confirms) before raising."""
    reconnect_max_delay: float = 5.0
    mandatory: bool = True
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    request_timeout: float = 5.0

    def __repr__(self) -> str:
        return f"RabbitConfig({self.url.safe()!r})"

    @classmethod
    def from_url(cls, url: BrokerURL, **overrides: Any) -> RabbitConfig:
        if url.scheme not in ("amqp", "amqps"):
            raise ConfigurationError(f"the RabbitMQ transport needs amqp:// or amqps://, got {url}")
        opts: dict[str, Any] = {**url.options, **overrides}
        tls = url.scheme == "amqps"
        path = url.path[1:] if url.path.startswith("/") else url.path
        vhost = unquote(path) if path else "/"
        username = url.username or "guest"
        password = url.password if url.password is not None else "guest"

        def take(name: str, default: Any) -> Any:
            return opts.pop(name, default)

        queue = QueueOptions(
            queue_type=str(take("queue_type", "classic")),
            max_priority=_opt_int(take("max_priority", None), "max_priority", 1),
            message_ttl=_opt_float(take("message_ttl", None), "message_ttl"),
            max_length=_opt_int(take("max_length", None), "max_length", 0),
        )
        tls_options = TlsOptions.take(opts, tls)
        exchange_type = str(take("exchange_type", "topic"))
        if exchange_type not in EXCHANGE_TYPES:
            raise ConfigurationError(
                f"exchange_type must be one of {', '.join(EXCHANGE_TYPES)}, got {exchange_type!r}"
            )
        config = cls(
            url=url,
            host=url.host or "127.0.0.1",
            port=url.port or (5671 if tls else 5672),
            vhost=vhost,
            username=username,
            credentials=pika.PlainCredentials(username, password),
            tls=tls,
            tls_options=tls_options,
            ssl_context=tls_options.context() if tls else None,
            exchange=str(take("exchange", "mqkit")),
            exchange_type=exchange_type,
            queue=queue,
            heartbeat=_number("heartbeat", take("heartbeat", 30), int, 0),
            connect_timeout=_number("connect_timeout", take("connect_timeout", 5.0), float, 0.1),
            publish_timeout=_number("publish_timeout", take("publish_timeout", 30.0), float, 0.1),
            reconnect_max_delay=_number(
                "reconnect_max_delay", take("reconnect_max_delay", 5.0), float, 0.05
            ),
            mandatory=_flag("mandatory", take("mandatory", True)),
            max_message_bytes=_number(
                "max_message_bytes", take("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES), int, 1
            ),
            request_timeout=_number("request_timeout", take("request_timeout", 5.0), float, 0.01),
        )
        if not config.exchange or config.exchange.startswith("amq."):
            raise ConfigurationError("exchange must be a non-empty name not starting with amq.")
        if opts:
            raise ConfigurationError(
                f"unknown amqp:// options: {sorted(opts)} (known: exchange, exchange_type, "
                "queue_type, max_priority, message_ttl, max_length, heartbeat, connect_timeout, "
                "publish_timeout, reconnect_max_delay, mandatory, max_message_bytes, "
                "request_timeout, tls_ca_file, tls_cert_file, tls_key_file, tls_hostname, "
                "tls_verify)"
            )
        if tls and not tls_options.verify:
            log.warning(
                "TLS certificate verification is OFF (tls_verify=false) for %s: the broker's "
                "identity is not checked; never use this in production", url.safe(),
            )
        return config

    def parameters(self) -> pika.ConnectionParameters:
        """pika's connection parameters (no retries: mqkit's reconnect loop does that)."""
        ssl_options = None
        if self.ssl_context is not None:
            ssl_options = pika.SSLOptions(
                self.ssl_context, server_hostname=self.tls_options.hostname or self.host
            )
        return pika.ConnectionParameters(
            host=self.host,
            port=self.port,
            virtual_host=self.vhost,
            credentials=self.credentials,
            heartbeat=self.heartbeat,
            connection_attempts=1,
            socket_timeout=self.connect_timeout,
            stack_timeout=self.connect_timeout,
            blocked_connection_timeout=self.publish_timeout,
            ssl_options=ssl_options,
            client_properties={"connection_name": f"mqkit {self.url.safe()}"},
        )

    # --- naming -----------------------------------------------------------------------
    @property
    def dead_letter_exchange(self) -> str:
        """Where ``<topic>.dlq`` lives: apart, so ``#`` subscriptions never see dead letters."""
        return f"{self.exchange}.dlx"

    @property
    def retry_exchange(self) -> str:
        """The headers exchange routing a delayed nack to its TTL retry queue."""
        return f"{self.exchange}.retry"


def _opt_int(value: Any, name: str, low: int) -> int | None:
    return None if value in (None, "") else int(_number(name, value, int, low))


def _opt_float(value: Any, name: str) -> float | None:
    return None if value in (None, "") else float(_number(name, value, float, 0))


def retry_bucket_ms(delay: float) -> int:
    """The retry queue TTL (ms) for a nack ``delay`` in seconds: never shorter than asked."""
    wanted = max(0, int(-(-delay * 1000 // 1)))  # ceil to whole milliseconds
    for bucket in RETRY_BUCKETS_MS:
        if bucket >= wanted:
            return bucket
    raise ConfigurationError(
        f"nack delay {delay:g}s exceeds the longest retry delay "
        f"({RETRY_BUCKETS_MS[-1] / 1000:g}s)"
    )
