"""A throwaway PKI and a dedicated RabbitMQ with a TLS listener, for the amqps:// tests.

    pki = make_pki(tmp_path / "pki")      # CA, server cert (127.0.0.1 + localhost), client cert
    broker = start_tls_rabbitmq(tmp_path / "broker", pki)
    broker.tls_url()                        # amqps://guest:guest@127.0.0.1:PORT/%2F
    broker.stop()

The broker is the Debian package's ``rabbitmq-server`` started through
``tests.faults.instances`` (free ports, own session, data in the work dir, stopped at
interpreter exit at the latest). It keeps its plain listener (used to probe readiness) and
adds a TLS one that requires a client certificate signed by the CA (``verify_peer`` +
``fail_if_no_peer_cert``).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.faults.instances import RabbitInstance, free_port, port_open

CA_NAME = "mqkit amqps test CA"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, ca_key: ec.EllipticCurvePrivateKey,
           extensions: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(CA_NAME))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(ca_key, hashes.SHA256())


def _write(directory: Path, stem: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return cert_path, key_path


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    issuer_id = (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)
    ca = _issue(CA_NAME, ca_key, ca_key, [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        ), True),
        (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
    ])
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue("127.0.0.1", server_key, ca_key, [
        (x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        issuer_id,
    ])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue("mqkit amqps test client", client_key, ca_key, [
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        issuer_id,
    ])
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_cert, server_key_path = _write(directory, "server", server, server_key)
    client_cert, client_key_path = _write(directory, "client", client, client_key)
    return Pki(ca_path, server_cert, server_key_path, client_cert, client_key_path)


class TlsRabbitInstance(RabbitInstance):
    """RabbitMQ with its plain listener plus a TLS listener requiring client certificates."""

    def __init__(self, workdir: Path, port: int, dist_port: int, tls_port: int,
                 pki: Pki) -> None:
        super().__init__(workdir, port, dist_port)
        self.tls_port = tls_port
        self.pki = pki

    def tls_url(self) -> str:
        return f"amqps://guest:guest@127.0.0.1:{self.tls_port}/%2F"

    def _prepare(self) -> None:
        super()._prepare()
        with (self.workdir / "rabbitmq.conf").open("a") as conf:
            conf.write(
                f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
                f"ssl_options.cacertfile = {self.pki.ca}\n"
                f"ssl_options.certfile = {self.pki.server_cert}\n"
                f"ssl_options.keyfile = {self.pki.server_key}\n"
                "ssl_options.verify = verify_peer\n"
                "ssl_options.fail_if_no_peer_cert = true\n"
            )

    def _answers(self) -> bool:
        return super()._answers() and port_open(self.tls_port)


def start_tls_rabbitmq(workdir: Path, pki: Pki) -> TlsRabbitInstance:
    """Start one (raises ``BrokerUnavailable`` when RabbitMQ is missing or does not come up)."""
    workdir.mkdir(parents=True, exist_ok=True)
    instance = TlsRabbitInstance(workdir, free_port(), free_port(), free_port(), pki)
    try:
        instance.start()
    except BaseException:
        instance.stop()
        raise
    return instance
