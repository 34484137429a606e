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

import json
import socket
from pathlib import Path

from tests.faults.instances import NATS_SERVER, NatsInstance, free_port
from tests.tls_pki import Pki, make_pki

__all__ = ["Pki", "TlsNatsInstance", "make_pki", "start_tls_nats"]


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
