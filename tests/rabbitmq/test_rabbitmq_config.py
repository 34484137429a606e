"""URL, options and connection errors: clear, fast, and never showing the password."""

from __future__ import annotations

import logging
import time

import pytest

from mqkit import registry
from mqkit.errors import ConfigurationError, ConnectionFailed
from mqkit.headers import ATTEMPT
from mqkit_rabbitmq import RabbitMQTransport
from mqkit_rabbitmq.config import RETRY_BUCKETS_MS, retry_bucket_ms
from mqkit_rabbitmq.headers import attempt_of

SECRET = "s3cr3t-Pa55"


def test_url_scheme_finds_the_transport() -> None:
    transport = registry.create(f"amqp://user:{SECRET}@127.0.0.1:5672/%2F")
    assert isinstance(transport, RabbitMQTransport)
    assert transport.config.vhost == "/"


def test_password_never_in_repr_or_str() -> None:
    transport = RabbitMQTransport(f"amqps://user:{SECRET}@broker.example:5671/prod?heartbeat=5")
    for text in (repr(transport), repr(transport.config), str(transport.config.url)):
        assert SECRET not in text
    assert transport.config.tls and transport.config.vhost == "prod"


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigurationError, match="hearbeat"):
        RabbitMQTransport("amqp://127.0.0.1/?hearbeat=5")


@pytest.mark.parametrize(
    "options",
    [{"exchange_type": "x-delayed"}, {"queue_type": "stream"}, {"max_priority": "50"},
     {"queue_type": "quorum", "max_priority": "5"}, {"heartbeat": "soon"}],
)
def test_bad_options_are_configuration_errors(options: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        RabbitMQTransport("amqp://127.0.0.1/", **options)


async def test_unreachable_broker_fails_fast() -> None:
    transport = RabbitMQTransport("amqp://guest:guest@127.0.0.1:1/", connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        await transport.connect()
    assert time.monotonic() - started < 5


async def test_wrong_credentials_fail_fast_without_the_password(
    rabbitmq_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    host = rabbitmq_url.split("@")[-1]
    transport = RabbitMQTransport(f"amqp://guest:{SECRET}@{host}", connect_timeout=3)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="refused the credentials") as info:
        await transport.connect()
    assert time.monotonic() - started < 5
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert SECRET not in caplog.text


def test_retry_buckets_never_shorten_a_delay() -> None:
    for delay in (0.0, 0.001, 0.05, 0.051, 0.3, 1.0, 1.2, 59.9, 3600.0, 86_400.0):
        bucket = retry_bucket_ms(delay)
        assert bucket >= delay * 1000
        assert bucket in RETRY_BUCKETS_MS
    with pytest.raises(ConfigurationError, match="exceeds"):
        retry_bucket_ms(86_400.01)


def test_attempts_come_from_header_delivery_count_or_x_death() -> None:
    assert attempt_of({}, redelivered=False) == 1
    assert attempt_of({}, redelivered=True) == 2
    assert attempt_of({ATTEMPT: "3"}, redelivered=False) == 3
    assert attempt_of({"x-delivery-count": 2}, redelivered=True) == 3
    deaths = [{"reason": "rejected", "count": 2}, {"reason": "expired", "count": 5}]
    assert attempt_of({"x-death": deaths}, redelivered=False) == 3
