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

from pathlib import Path

from tests.faults.instances import RabbitInstance, free_port, port_open
from tests.tls_pki import Pki, make_pki

__all__ = ["Pki", "TlsRabbitInstance", "make_pki", "start_tls_rabbitmq"]

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
