"""TLS on the NATS transports against a dedicated nats-server with a throwaway PKI.

Two servers for the module: one with TLS (server certificate only) and one that also
requires client certificates (mutual TLS). Both use certificates of a CA made here, which no
system trust store holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from mqkit.errors import ConfigurationError, ConnectionFailed
from mqkit.message import Message
from mqkit.transport import TopicSpec
from mqkit_nats import JetStreamTransport, NatsTransport
from mqkit_nats.config import encrypted
from tests.faults.instances import BrokerUnavailable
from tests.nats.conftest import fresh_topic
from tests.nats.tls_server import Pki, TlsNatsInstance, make_pki, start_tls_nats

# Failing verification retries until connect_timeout: keep it short, and bound the wait.
FAST = {"connect_timeout": 1}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _server(
    factory: pytest.TempPathFactory, pki: Pki, verify_clients: bool
) -> Iterator[TlsNatsInstance]:
    try:
        server = start_tls_nats(factory.mktemp("tls-nats"), pki, verify_clients=verify_clients)
    except BrokerUnavailable as exc:
        if os.environ.get("MQKIT_REQUIRE_BROKERS") == "1":
            pytest.fail(f"TLS nats-server: {exc}", pytrace=False)
        pytest.skip(f"TLS nats-server: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsNatsInstance]:
    yield from _server(tmp_path_factory, pki, verify_clients=False)


@pytest.fixture(scope="module")
def mtls_server(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[TlsNatsInstance]:
    yield from _server(tmp_path_factory, pki, verify_clients=True)


async def _round_trip(transport: NatsTransport | JetStreamTransport) -> None:
    """Publish one message and consume it through ``transport`` (connected)."""
    topic = fresh_topic()
    if isinstance(transport, JetStreamTransport):
        await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    sub = transport.subscribe(topic, "g")
    pending = asyncio.ensure_future(anext(sub))
    await transport.publish([Message(topic=topic, body=b"over tls")])
    try:
        delivery = await asyncio.wait_for(pending, 5)
        assert delivery.message.body == b"over tls"
        await delivery.ack()
    finally:
        pending.cancel()  # the stream dies with the dedicated server


async def _refused(transport: NatsTransport | JetStreamTransport) -> ConnectionFailed:
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as caught:
        await transport.connect()
    assert time.monotonic() - started < 4  # connect_timeout (1 s), never a hang
    assert transport._nc is None
    return caught.value


@pytest.mark.parametrize("scheme", ["nats", "jetstream"])
async def test_publish_and_consume_over_tls_with_a_ca_file(
    tls_server: TlsNatsInstance, pki: Pki, scheme: str
) -> None:
    # Options in the query string, as a deployment would write them.
    url = f"{tls_server.url(scheme)}?tls_ca_file={pki.ca}"
    transport = (NatsTransport if scheme == "nats" else JetStreamTransport)(url)
    assert transport.config.tls
    await transport.connect()
    try:
        assert encrypted(transport.nc)
        await _round_trip(transport)
    finally:
        await transport.close()


async def test_tls_hostname_names_the_certificate_to_expect(
    tls_server: TlsNatsInstance, pki: Pki
) -> None:
    # Connecting to 127.0.0.1 while verifying the certificate's DNS name works ...
    transport = JetStreamTransport(
        tls_server.url("jetstream"), tls_ca_file=pki.ca, tls_hostname="localhost"
    )
    await transport.connect()
    try:
        await _round_trip(transport)
    finally:
        await transport.close()
    # ... and a name the certificate does not carry is refused.
    wrong = NatsTransport(
        tls_server.url(), tls_ca_file=str(pki.ca), tls_hostname="wrong.example", **FAST
    )
    error = await _refused(wrong)
    assert "hostname mismatch" in str(error).lower() and "wrong.example" in str(error)


async def test_a_server_not_in_the_system_trust_store_is_refused(
    tls_server: TlsNatsInstance,
) -> None:
    error = await _refused(NatsTransport(tls_server.url(), tls=True, **FAST))
    assert "certificate verify failed" in str(error).lower()


async def test_a_refused_certificate_ends_the_connect_at_once_without_retries(
    tls_server: TlsNatsInstance, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a connect that could retry for 30 s, to a server whose certificate is not trusted
    transport = NatsTransport(tls_server.url(), tls=True, connect_timeout=30)
    caplog.set_level(logging.WARNING, logger="mqkit.nats")
    # When it connects
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as caught:
        await transport.connect()
    # Then the verification error ended it, not the 30 s budget (a certificate does not fix
    # itself: retrying only hid the error behind a timeout), and the error names it
    assert time.monotonic() - started < 10
    assert "certificate verify failed" in str(caught.value).lower()
    assert any("SSLCertVerificationError" in r.getMessage() for r in caplog.records)
    assert transport._nc is None


async def test_tls_verify_false_connects_and_warns_once(
    tls_server: TlsNatsInstance, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mqkit.nats")
    transport = NatsTransport(f"{tls_server.url()}?tls_verify=false")
    await transport.connect()
    try:
        assert transport.config.tls and encrypted(transport.nc)
        await _round_trip(transport)
    finally:
        await transport.close()
    warnings = [r for r in caplog.records if "NOT verified" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


async def test_mutual_tls_needs_the_client_certificate(
    mtls_server: TlsNatsInstance, pki: Pki
) -> None:
    error = await _refused(
        JetStreamTransport(mtls_server.url("jetstream"), tls_ca_file=pki.ca, **FAST)
    )
    # TLS 1.3 checks the client certificate after the handshake: the client sees the server's
    # alert (which ends the connect at once) or, when its CONNECT went out after the server
    # closed, a reset or a broken pipe.
    signs = ("certificate required", "reset by peer", "connection lost", "broken pipe")
    assert any(sign in str(error).lower() for sign in signs), error
    transport = JetStreamTransport(
        mtls_server.url("jetstream"),
        tls_ca_file=pki.ca,
        tls_cert_file=pki.client_cert,
        tls_key_file=pki.client_key,
    )
    await transport.connect()
    try:
        assert encrypted(transport.nc)
        await _round_trip(transport)
    finally:
        await transport.close()


async def test_a_server_without_tls_is_refused_not_used_in_plaintext(
    nats_url: str, pki: Pki
) -> None:
    # The shared broker of scripts/brokers speaks plaintext only.
    error = await _refused(NatsTransport(nats_url, tls_ca_file=pki.ca, **FAST))
    assert "does not require TLS" in str(error)


async def test_credentials_never_reach_a_server_that_drops_tls(pki: Pki) -> None:
    # Given a "server" whose INFO does not ask for TLS (misconfigured, or rewritten on the
    # way) and that records every byte a client sends it
    received = bytearray()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'INFO {"server_id":"fake","version":"2.10.0","max_payload":1048576,'
                     b'"auth_required":true}\r\n')
        await writer.drain()
        with contextlib.suppress(TimeoutError, ConnectionError):
            while data := await asyncio.wait_for(reader.read(4096), 2):
                received.extend(data)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        # When a TLS transport with a password connects to it
        error = await _refused(NatsTransport(
            f"nats://app:canary-pw-51@127.0.0.1:{port}", tls_ca_file=pki.ca, **FAST))
    finally:
        server.close()
    # Then it is refused, and neither CONNECT nor the password ever went out
    assert "does not require TLS" in str(error)
    assert b"CONNECT" not in received
    assert b"canary-pw-51" not in received


def test_tls_option_errors_name_the_option_and_never_the_key(
    pki: Pki, tmp_path: Path
) -> None:
    url = "nats://127.0.0.1:4222"
    with pytest.raises(ConfigurationError, match="tls_cert_file and tls_key_file"):
        NatsTransport(url, tls_cert_file=pki.client_cert)
    with pytest.raises(ConfigurationError, match="tls_cert_file and tls_key_file"):
        NatsTransport(url, tls_key_file=pki.client_key)
    missing = tmp_path / "nowhere" / "ca.pem"
    with pytest.raises(ConfigurationError, match="option tls_ca_file") as caught:
        NatsTransport(f"{url}?tls_ca_file={missing}")
    assert str(missing) in str(caught.value)
    with pytest.raises(ConfigurationError, match="option tls_key_file"):
        NatsTransport(url, tls_cert_file=pki.client_cert, tls_key_file=tmp_path / "no-key.pem")
    with pytest.raises(ConfigurationError, match="tls=false contradicts"):
        NatsTransport(url, tls=False, tls_ca_file=pki.ca)
    # A key file that holds no usable key: the error does not show its content.
    secret = (
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n"
    )
    bad_key = tmp_path / "bad-key.pem"
    bad_key.write_text(secret)
    with pytest.raises(ConfigurationError, match="tls_cert_file/tls_key_file") as caught:
        NatsTransport(url, tls_cert_file=pki.client_cert, tls_key_file=bad_key)
    assert "c2VjcmV0" not in str(caught.value)
    # The CA file given as the key: a certificate and key that do not match.
    with pytest.raises(ConfigurationError, match="not a usable PEM file"):
        NatsTransport(url, tls_cert_file=pki.client_cert, tls_key_file=pki.ca)


def test_an_encrypted_key_is_a_clear_error_not_a_passphrase_prompt(
    pki: Pki, tmp_path: Path
) -> None:
    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), password=None)
    encrypted_key = tmp_path / "encrypted-key.pem"
    encrypted_key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ))
    with pytest.raises(ConfigurationError, match="encrypted with a passphrase"):
        NatsTransport("nats://127.0.0.1:4222", tls_cert_file=pki.client_cert,
                      tls_key_file=encrypted_key)


def test_config_and_repr_hold_paths_not_key_material(pki: Pki) -> None:
    transport = NatsTransport(
        "nats://127.0.0.1:4222",
        tls_ca_file=pki.ca, tls_cert_file=pki.client_cert, tls_key_file=pki.client_key,
    )
    key_body = pki.client_key.read_text().splitlines()[1]
    assert transport.config.tls and transport.config.tls_context is not None
    for text in (repr(transport), repr(transport.config), str(transport.config.connect_kwargs())):
        assert key_body not in text
    assert transport.config.connect_kwargs()["tls"] is transport.config.tls_context
    plain = NatsTransport("nats://127.0.0.1:4222")
    assert not plain.config.tls and "tls" not in plain.config.connect_kwargs()
