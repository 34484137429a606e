"""A nats-py client that will not downgrade from TLS.

nats-py upgrades a connection to TLS only when the server's INFO line says ``tls_required``,
whatever ``tls=`` it was given, and then writes its CONNECT (credentials included) in
plaintext. A misconfigured server, or anyone in the path who rewrites INFO, would get the
credentials. ``TlsOnlyClient`` refuses such an INFO before CONNECT is written, on the first
connection and on every reconnect (nats-py then tries the next server or gives up).
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError


class PlaintextRefused(NatsError):
    def __str__(self) -> str:
        return ("nats: the server does not require TLS; refused before sending credentials "
                "in plaintext (tls was asked for)")


class TlsOnlyClient(NatsClient):
    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        if initial_connection and not self.options.get("tls_handshake_first"):
            if not info.get("tls_required"):
                raise PlaintextRefused()
        await super()._process_info(info, initial_connection)


def client_class(tls: bool) -> type[NatsClient]:
    """``TlsOnlyClient`` when TLS is wanted and nats-py still has the hook it overrides
    (else the caller's check after connecting is what refuses a plaintext server)."""
    if tls and callable(getattr(NatsClient, "_process_info", None)):
        return TlsOnlyClient
    return NatsClient
