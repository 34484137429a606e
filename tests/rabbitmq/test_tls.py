"""amqps:// with a private CA, a client certificate and a checked host name, on a real broker.

One dedicated RabbitMQ for the module (tests/rabbitmq/tls_broker.py): its TLS listener uses
a throwaway CA and requires a client certificate (``verify_peer`` + ``fail_if_no_peer_cert``),
so every connection that should work gives ``tls_cert_file``/``tls_key_file``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mqkit.errors import ConfigurationError, ConnectionFailed
from mqkit.message import Message, new_id
from mqkit.transport import TopicSpec
from mqkit_rabbitmq import RabbitMQTransport
from tests.faults.instances import BrokerUnavailable
from tests.rabbitmq.conftest import delete_topology, with_options
from tests.rabbitmq.tls_broker import Pki, TlsRabbitInstance, make_pki, start_tls_rabbitmq

REFUSED_WITHIN = 5.0
"""Seconds a refused TLS connection may take (connect_timeout is 2 s): refused, not hung."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("amqps-pki"))


@pytest.fixture(scope="module")
def dedicated_rabbitmq_tls(  # "dedicated_": the xdist group of tests/conftest.py
    pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsRabbitInstance]:
    try:
        broker = start_tls_rabbitmq(tmp_path_factory.mktemp("amqps-broker"), pki)
    except BrokerUnavailable as exc:
        if os.environ.get("MQKIT_REQUIRE_BROKERS") == "1":
            pytest.fail(f"dedicated TLS rabbitmq: {exc}")
        pytest.skip(f"dedicated TLS rabbitmq: {exc}")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def client_cert(pki: Pki) -> dict[str, Any]:
    return {"tls_cert_file": pki.client_cert, "tls_key_file": pki.client_key}


@pytest.fixture
async def connected() -> AsyncIterator[list[RabbitMQTransport]]:
    """Transports the test connected, closed afterwards."""
    made: list[RabbitMQTransport] = []
    yield made
    for transport in made:
        await transport.close()


async def connect(made: list[RabbitMQTransport], url: str, **options: Any) -> RabbitMQTransport:
    transport = RabbitMQTransport(url, connect_timeout=2, **options)
    await transport.connect()
    made.append(transport)
    return transport


async def refused(url: str, **options: Any) -> ConnectionFailed:
    """Connecting fails with ConnectionFailed, quickly; returns the error."""
    transport = RabbitMQTransport(url, connect_timeout=2, **options)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as caught:
        await transport.connect()
    assert time.monotonic() - started < REFUSED_WITHIN
    await transport.close()
    return caught.value


async def round_trip(transport: RabbitMQTransport) -> None:
    """Publish one message and consume it back on the same transport."""
    body = new_id().encode()
    await transport.ensure_topic(TopicSpec("tls.check", groups=("g",)))
    await transport.publish([Message(topic="tls.check", body=body)])

    async def first() -> bytes:
        async for delivery in transport.subscribe("tls.check", "g", prefetch=1):
            await delivery.ack()
            return delivery.message.body
        raise AssertionError("the subscription ended")

    assert await asyncio.wait_for(first(), 15) == body


# --- on the broker ----------------------------------------------------------------------------
async def test_publish_and_consume_with_private_ca_and_client_cert(
    dedicated_rabbitmq_tls: TlsRabbitInstance, pki: Pki, client_cert: dict[str, Any],
    connected: list[RabbitMQTransport],
) -> None:
    url = with_options(dedicated_rabbitmq_tls.tls_url(), exchange=f"tls-{new_id()[:8]}")
    transport = await connect(connected, url, tls_ca_file=str(pki.ca), **client_cert)
    try:
        await round_trip(transport)
    finally:
        delete_topology(dedicated_rabbitmq_tls.url(), [transport])


async def test_options_from_the_query_string(
    dedicated_rabbitmq_tls: TlsRabbitInstance, pki: Pki, connected: list[RabbitMQTransport],
) -> None:
    url = with_options(dedicated_rabbitmq_tls.tls_url(), tls_ca_file=pki.ca,
                       tls_cert_file=pki.client_cert, tls_key_file=pki.client_key)
    transport = await connect(connected, url)
    assert transport.config.tls_options.ca_file == str(pki.ca)


async def test_server_not_trusted_without_the_ca(
    dedicated_rabbitmq_tls: TlsRabbitInstance, client_cert: dict[str, Any],
) -> None:
    # The system trust store does not know the throwaway CA.
    error = await refused(dedicated_rabbitmq_tls.tls_url(), **client_cert)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)


async def test_tls_hostname_is_the_name_verified(
    dedicated_rabbitmq_tls: TlsRabbitInstance, pki: Pki, client_cert: dict[str, Any],
    connected: list[RabbitMQTransport],
) -> None:
    url = dedicated_rabbitmq_tls.tls_url()  # host 127.0.0.1
    # Given a name the certificate has (localhost), the connection is accepted ...
    await connect(connected, url, tls_ca_file=pki.ca, tls_hostname="localhost", **client_cert)
    # ... and one it does not have is refused, though the URL host alone would pass.
    error = await refused(url, tls_ca_file=pki.ca, tls_hostname="rabbit.internal.example",
                          **client_cert)
    assert "Hostname mismatch" in str(error) and "rabbit.internal.example" in str(error)


async def test_client_certificate_required_by_the_broker(
    dedicated_rabbitmq_tls: TlsRabbitInstance, pki: Pki, client_cert: dict[str, Any],
    connected: list[RabbitMQTransport],
) -> None:
    url = dedicated_rabbitmq_tls.tls_url()
    error = await refused(url, tls_ca_file=pki.ca)
    assert "CERTIFICATE_REQUIRED" in str(error)  # the broker's alert, not a client-side failure
    await connect(connected, url, tls_ca_file=pki.ca, **client_cert)


async def test_verify_off_connects_to_an_untrusted_server_and_warns_once(
    dedicated_rabbitmq_tls: TlsRabbitInstance, client_cert: dict[str, Any],
    connected: list[RabbitMQTransport], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mqkit.rabbitmq")
    # No CA and a name not in the certificate: only verification off lets this through.
    transport = await connect(connected, dedicated_rabbitmq_tls.tls_url(), tls_verify="false",
                              tls_hostname="not-the-broker.example", **client_cert)
    await transport.close()
    await transport.connect()  # a second connection of the same transport: no second warning
    warnings = [r for r in caplog.records
                if r.levelno == logging.WARNING and "verification is OFF" in r.getMessage()]
    assert len(warnings) == 1
    assert "guest:guest" not in warnings[0].getMessage()


# --- configuration errors (no broker) -------------------------------------------------------
TLS_URL = "amqps://guest:guest@127.0.0.1:1/%2F"


def test_defaults_verify_the_certificate_and_the_host() -> None:
    config = RabbitMQTransport(TLS_URL).config
    context = config.ssl_context
    assert context is not None
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert config.parameters().ssl_options.server_hostname == "127.0.0.1"


def test_client_cert_without_key_is_an_error(pki: Pki) -> None:
    with pytest.raises(ConfigurationError, match="tls_cert_file and tls_key_file"):
        RabbitMQTransport(TLS_URL, tls_cert_file=pki.client_cert)
    with pytest.raises(ConfigurationError, match="tls_cert_file and tls_key_file"):
        RabbitMQTransport(with_options(TLS_URL, tls_key_file=pki.client_key))


def test_missing_ca_file_names_the_option(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    with pytest.raises(ConfigurationError, match="tls_ca_file") as caught:
        RabbitMQTransport(TLS_URL, tls_ca_file=missing)
    assert str(missing) in str(caught.value)


def test_unreadable_files_never_show_their_contents(tmp_path: Path, pki: Pki) -> None:
    secret = "s3cr3t-not-a-certificate"
    junk = tmp_path / "junk.pem"
    junk.write_text(f"{secret}\n")
    with pytest.raises(ConfigurationError, match="tls_ca_file") as bad_ca:
        RabbitMQTransport(TLS_URL, tls_ca_file=junk)
    with pytest.raises(ConfigurationError, match="tls_cert_file") as bad_key:
        RabbitMQTransport(TLS_URL, tls_cert_file=pki.client_cert, tls_key_file=junk)
    with pytest.raises(ConfigurationError, match="tls_cert_file") as mismatch:
        RabbitMQTransport(TLS_URL, tls_cert_file=pki.client_cert, tls_key_file=pki.server_key)
    for error in (bad_ca.value, bad_key.value, mismatch.value):
        assert secret not in str(error) and "PRIVATE KEY" not in str(error)


@pytest.mark.parametrize(
    "option", [{"tls_ca_file": "ca.pem"}, {"tls_verify": "false"}, {"tls_hostname": "x"}]
)
def test_tls_options_on_plain_amqp_say_use_amqps(option: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="amqps://"):
        RabbitMQTransport("amqp://guest:guest@127.0.0.1:1/%2F", **option)
    with pytest.raises(ConfigurationError, match="amqps://"):
        RabbitMQTransport(with_options("amqp://guest:guest@127.0.0.1:1/%2F", **option))


def test_tls_verify_must_be_a_flag() -> None:
    with pytest.raises(ConfigurationError, match="tls_verify"):
        RabbitMQTransport(TLS_URL, tls_verify="maybe")
