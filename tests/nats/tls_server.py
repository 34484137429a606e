"""A throwaway PKI and a dedicated nats-server that speaks TLS, for the TLS tests.

    pki = make_pki(tmp_path)              # CA, server cert (127.0.0.1 + localhost), client cert
    server = start_tls_nats(tmp_path, pki, verify_clients=True)
    server.url("jetstream")               # jetstream://127.0.0.1:PORT
    server.stop()

The server is the nats-server binary ``scripts/brokers`` installs, started through
``tests.faults.instances`` (own session, free port, JetStream store in the work dir, stopped
at interpreter exit at the latest).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.faults.instances import NATS_SERVER, NatsInstance, free_port


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    issuer: str,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(ca_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("mqkit test CA", ca_key, ca_key, "mqkit test CA", [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        ), True),
        (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
    ])
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue("127.0.0.1", server_key, ca_key, "mqkit test CA", [
        (x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
    ])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue("mqkit test client", client_key, ca_key, "mqkit test CA", [
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
    ])
    return Pki(
        ca=_write_cert(ca, directory / "ca.pem"),
        server_cert=_write_cert(server, directory / "server.pem"),
        server_key=_write_key(server_key, directory / "server-key.pem"),
        client_cert=_write_cert(client, directory / "client.pem"),
        client_key=_write_key(client_key, directory / "client-key.pem"),
    )


class TlsNatsInstance(NatsInstance):
    """nats-server with JetStream and a ``tls`` block (``verify``: client certs required)."""

    def __init__(self, workdir: Path, port: int, pki: Pki, verify_clients: bool) -> None:
        super().__init__(workdir, port)
        self.pki = pki
        self.verify_clients = verify_clients

    def _prepare(self) -> None:
        super()._prepare()  # BrokerUnavailable when the binary is missing
        tls = {
            "cert_file": str(self.pki.server_cert),
            "key_file": str(self.pki.server_key),
            "ca_file": str(self.pki.ca),
            "verify": self.verify_clients,
            "timeout": 2,
        }
        config = {
            "listen": f"127.0.0.1:{self.port}",
            "jetstream": {"store_dir": str(self.workdir / "jetstream")},
            "tls": tls,
        }
        # nats-server's config format accepts JSON.
        (self.workdir / "nats.conf").write_text(json.dumps(config, indent=2))

    def _command(self) -> tuple[list[str], dict[str, str]]:
        return [str(NATS_SERVER), "-c", str(self.workdir / "nats.conf")], {}

    def _answers(self) -> bool:
        """The server greets with an INFO that requires TLS (a fresh store is ready then)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.settimeout(2)
                line = s.makefile("rb").readline()
        except OSError:
            return False
        return line.startswith(b"INFO") and b'"tls_required":true' in line


def start_tls_nats(workdir: Path, pki: Pki, *, verify_clients: bool) -> TlsNatsInstance:
    """Start a TLS nats-server in ``workdir``; raises ``BrokerUnavailable`` without the binary."""
    workdir.mkdir(parents=True, exist_ok=True)
    instance = TlsNatsInstance(workdir, free_port(), pki, verify_clients)
    instance.start(timeout=30)
    return instance
