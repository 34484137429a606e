"""``SqsConfig``: what an ``sqs://`` URL and its keyword options mean, checked up front.

``sqs://127.0.0.1:5000?region=us-east-1`` talks to ``http://127.0.0.1:5000`` (moto's server,
LocalStack, ElasticMQ); ``sqs://`` alone talks to AWS itself in the region of boto3's usual
chain. Credentials always come from boto3's chain (environment, profile, instance role):
never from the URL, so they never appear in a URL, a repr or a log line.

Options (URL query or keyword arguments; keyword arguments win):

==================== ========== ==========================================================
name                 default    meaning
==================== ========== ==========================================================
region               boto3's    AWS region
mode                 sns        ``sns``: topic = SNS topic, group = SQS queue subscribed
                                with raw delivery (fan-out); ``queue``: topic = one SQS
                                queue, every group competes on it (point to point)
fifo                 false      every topic is FIFO (``.fifo`` topics always are)
dedup                idempotency FIFO deduplication id: ``idempotency`` (idempotency key,
                                else a content hash), ``message-id`` or ``content``
wait_time            20         long-poll seconds (0..20)
visibility_timeout   30         seconds a received message stays hidden; extended by the
                                heartbeat while its handler runs
extend_visibility    true       the heartbeat: every visibility_timeout / 3 seconds the
                                visibility of the messages a subscription holds is
                                extended. ``false``: never; a handler that outlives the
                                visibility timeout sees its message redelivered, and its
                                late ack is logged as a "stale ack" warning
max_receive_count    5          native redrive to ``<topic>.dlq`` after this many receives
                                (0: no native redrive). Keep it >= your RetryPolicy's
                                ``max_attempts`` (default 5), so the core dead-letters first
connect_timeout      3          seconds to open a connection
secure               false      ``https`` to the endpoint given by host:port
queue_prefix         (none)     prefix of every SNS topic and SQS queue name
==================== ========== ==========================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mqkit.errors import ConfigurationError
from mqkit.url import BrokerURL

MODES = ("sns", "queue")
DEDUP_MODES = ("idempotency", "message-id", "content")
MAX_WAIT_TIME = 20
MAX_VISIBILITY_TIMEOUT = 12 * 60 * 60
MAX_MESSAGE_BYTES = 256 * 1024
"""SNS and SQS (the classic limit) both accept 256 KiB: body plus message attributes."""
BATCH_SIZE = 10
"""Entries per PublishBatch / SendMessageBatch / ReceiveMessage / DeleteMessageBatch."""
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class SqsConfig:
    """The settings of one ``SqsTransport``. Build it with ``from_url``."""

    endpoint_url: str | None = None
    region: str | None = None
    mode: str = "sns"
    fifo: bool = False
    dedup: str = "idempotency"
    wait_time: int = MAX_WAIT_TIME
    visibility_timeout: int = 30
    extend_visibility: bool = True
    max_receive_count: int = 5
    connect_timeout: float = 3.0
    queue_prefix: str = ""

    @classmethod
    def from_url(cls, url: BrokerURL, **options: Any) -> SqsConfig:
        """Parse ``url`` plus ``options``; a bad or unknown option is a ``ConfigurationError``."""
        if url.scheme != "sqs":
            raise ConfigurationError(f"SqsTransport needs sqs://, got {url}")
        if url.username or url.password:
            raise ConfigurationError(
                "sqs:// takes no credentials in the URL: boto3's chain provides them "
                "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile or a role)"
            )
        merged: dict[str, Any] = {**url.options, **options}
        secure = _flag(merged.pop("secure", False), "secure")
        endpoint = None
        if url.host:
            port = f":{url.port}" if url.port else ""
            endpoint = f"{'https' if secure else 'http'}://{url.host}{port}"
        config = cls(
            endpoint_url=endpoint,
            region=str(merged.pop("region")) if "region" in merged else None,
            mode=str(merged.pop("mode", "sns")),
            fifo=_flag(merged.pop("fifo", False), "fifo"),
            dedup=str(merged.pop("dedup", "idempotency")),
            wait_time=_int(merged.pop("wait_time", MAX_WAIT_TIME), "wait_time"),
            visibility_timeout=_int(merged.pop("visibility_timeout", 30), "visibility_timeout"),
            extend_visibility=_flag(merged.pop("extend_visibility", True), "extend_visibility"),
            max_receive_count=_int(merged.pop("max_receive_count", 5), "max_receive_count"),
            connect_timeout=_float(merged.pop("connect_timeout", 3.0), "connect_timeout"),
            queue_prefix=str(merged.pop("queue_prefix", "")),
        )
        if merged:
            raise ConfigurationError(
                f"unknown sqs:// options: {sorted(merged)} (known: region, mode, fifo, dedup, "
                "wait_time, visibility_timeout, extend_visibility, max_receive_count, "
                "connect_timeout, secure, queue_prefix)"
            )
        config.check()
        return config

    def check(self) -> None:
        if self.mode not in MODES:
            raise ConfigurationError(f"sqs:// mode must be one of {MODES}, got {self.mode!r}")
        if self.dedup not in DEDUP_MODES:
            raise ConfigurationError(
                f"sqs:// dedup must be one of {DEDUP_MODES}, got {self.dedup!r}"
            )
        if not 0 <= self.wait_time <= MAX_WAIT_TIME:
            raise ConfigurationError(f"sqs:// wait_time must be 0..{MAX_WAIT_TIME} seconds")
        if not 1 <= self.visibility_timeout <= MAX_VISIBILITY_TIMEOUT:
            raise ConfigurationError(
                f"sqs:// visibility_timeout must be 1..{MAX_VISIBILITY_TIMEOUT} seconds"
            )
        if not 0 <= self.max_receive_count <= 1000:
            raise ConfigurationError("sqs:// max_receive_count must be 0..1000 (0: off)")
        if not 0 < self.connect_timeout <= 60:
            raise ConfigurationError("sqs:// connect_timeout must be in (0, 60] seconds")

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between visibility extensions of the messages a subscription holds."""
        return max(self.visibility_timeout / 3, 0.25)

    def delay_seconds(self, delay: float | None) -> int:
        """A nack delay as SQS's whole seconds, rounded up so it is never shortened."""
        if delay is None or delay <= 0:
            return 0
        return min(math.ceil(delay), MAX_VISIBILITY_TIMEOUT)


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigurationError(f"sqs:// option {name} must be true or false, got {value!r}")


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"sqs:// option {name} must be an integer") from exc


def _float(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"sqs:// option {name} must be a number") from exc
