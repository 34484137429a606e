"""Settings of the NATS transports, read from the URL's query string and keyword options.

URL: ``nats://[user:password@|token@]host:port[,host2:port2][?option=value...]`` and the same
with ``jetstream://``. Credentials in the URL (user/password, or a lone token) are passed to
nats-py; ``nkey_seed`` (a seed string) and ``creds`` (a credentials file path) are options.
Secrets never appear in ``repr`` or in error messages.

Options (all optional; seconds for durations):

- ``connect_timeout`` (5): give up connecting after this long, with ``ConnectionFailed``;
- ``request_timeout`` (5): JetStream API calls and PubAcks;
- ``name``: connection name shown in the server's monitoring;
- ``ping_interval`` (120) and ``max_outstanding_pings`` (2): a PING every ``ping_interval``
  seconds; the connection is declared stale and reconnected once more than
  ``max_outstanding_pings`` go unanswered (nats-py's defaults; lower them to notice a silent
  network partition sooner);
- JetStream only: ``ack_wait`` (30), ``max_deliver`` (-1: unlimited, mqkit's retry policy
  decides), ``duplicate_window`` (120), ``storage`` (``file`` or ``memory``), ``replicas`` (1),
  ``fetch_wait`` (1: how long one pull request waits for messages; also the longest a
  closing subscription waits for its last pull), ``max_ack_pending`` (10000),
  ``msg_id`` (``idempotency-key``: send the idempotency key, else the message id, as
  ``Nats-Msg-Id``; ``message-id``: always the message id), ``heartbeat`` (ack_wait / 3:
  how often long handlers' messages are marked in progress; 0: never, so a handler that
  outlives AckWait sees its message redelivered and its late ack logged as stale);
- ``fast_publish`` (true): build the HPUB frames in mqkit and queue them in nats-py's buffer
  when the connection passes the feature check of ``mqkit_nats.wire``, and queue JetStream
  acks there too (else, or with ``false``, every message goes through nats-py's public
  ``publish`` and every ack through ``Msg.ack``; same bytes either way).

TLS (the server's certificate is always verified unless ``tls_verify=false`` says otherwise):

- ``tls`` (false): ``true`` encrypts the connection; the server's certificate is verified
  against the system trust store and its name against the URL's host. A server that does
  not offer TLS is refused with ``ConnectionFailed`` before any message is sent (nats-py
  has by then sent its CONNECT, credentials included, in plaintext to that server);
- ``tls_ca_file``: a PEM CA bundle to verify the server with instead of the system trust
  store (implies ``tls``);
- ``tls_cert_file`` and ``tls_key_file``: a PEM client certificate and its unencrypted key,
  for servers that require mutual TLS; both or neither (imply ``tls``);
- ``tls_hostname``: the name the server's certificate must carry when it differs from the
  host in the URL (implies ``tls``);
- ``tls_verify`` (true): ``false`` skips verifying the server's certificate and name (the
  traffic is still encrypted, but anyone on the path can pose as the server); a WARNING says
  so once per transport (implies ``tls``).

A missing or unreadable file raises ``ConfigurationError`` naming the option (and the path,
never the content) when the transport is built; ``tls=false`` with another ``tls_*`` option
is a ``ConfigurationError`` too.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

from mqkit.errors import ConfigurationError
from mqkit.url import BrokerURL

log = logging.getLogger("mqkit.nats")

MSG_ID_MODES = ("idempotency-key", "message-id")
STORAGE = ("file", "memory")


def _flag(options: dict[str, Any], name: str, default: bool) -> bool:
    raw = options.pop(name, default)
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"option {name} must be true or false, got {raw!r}")


def _number(options: dict[str, Any], name: str, default: float, minimum: float) -> float:
    raw = options.pop(name, default)
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"option {name} must be a number, got {raw!r}") from exc
    if value < minimum:
        raise ConfigurationError(f"option {name} must be >= {minimum:g}, got {value:g}")
    return value


@dataclass(frozen=True, repr=False)
class NatsConfig:
    """Everything the transports need, checked once when the transport is built."""

    url: BrokerURL
    servers: list[str]
    jetstream: bool
    user: str | None = field(default=None)
    password: str | None = field(default=None)
    token: str | None = field(default=None)
    nkey_seed: str | None = field(default=None)
    creds: str | None = None
    name: str | None = None
    connect_timeout: float = 5.0
    ping_interval: float = 120.0
    max_outstanding_pings: int = 2
    request_timeout: float = 5.0
    ack_wait: float = 30.0
    max_deliver: int = -1
    duplicate_window: float = 120.0
    storage: str = "file"
    replicas: int = 1
    fetch_wait: float = 1.0
    max_ack_pending: int = 10_000
    msg_id: str = "idempotency-key"
    heartbeat: float = 10.0
    fast_publish: bool = True
    tls: bool = False
    tls_hostname: str | None = None
    tls_context: ssl.SSLContext | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        return f"NatsConfig({self.url.safe()!r}, jetstream={self.jetstream}, tls={self.tls})"

    @property
    def secrets(self) -> list[str]:
        """Every secret this config holds, for ``mqkit.url.redact_text``."""
        return [s for s in (self.password, self.token, self.nkey_seed) if s]

    @classmethod
    def from_url(cls, url: BrokerURL, options: dict[str, Any]) -> NatsConfig:
        if url.scheme not in ("nats", "jetstream"):
            raise ConfigurationError(f"the NATS transports need nats:// or jetstream://, got {url}")
        merged: dict[str, Any] = {**url.options, **options}
        hosts = url.hosts or [("127.0.0.1", 4222)]
        servers = [f"nats://{host or '127.0.0.1'}:{port or 4222}" for host, port in hosts]
        user = password = token = None
        if url.username and url.password is not None:
            user, password = url.username, url.password
        elif url.username:
            token = url.username  # nats://TOKEN@host
        token = merged.pop("token", token)
        ack_wait = _number(merged, "ack_wait", 30.0, 0.5)
        storage = str(merged.pop("storage", "file"))
        if storage not in STORAGE:
            raise ConfigurationError(f"option storage must be one of {STORAGE}, got {storage!r}")
        msg_id = str(merged.pop("msg_id", "idempotency-key"))
        if msg_id not in MSG_ID_MODES:
            raise ConfigurationError(f"option msg_id must be one of {MSG_ID_MODES}, got {msg_id!r}")
        max_deliver = int(_number(merged, "max_deliver", -1, -1))
        if max_deliver == 0:
            raise ConfigurationError("option max_deliver must be -1 (unlimited) or >= 1")
        tls_context, tls_hostname = _tls(merged, url)
        config = cls(
            url=url,
            servers=servers,
            jetstream=url.scheme == "jetstream",
            user=user,
            password=password,
            token=token,
            nkey_seed=merged.pop("nkey_seed", None),
            creds=merged.pop("creds", None),
            name=merged.pop("name", None),
            connect_timeout=_number(merged, "connect_timeout", 5.0, 0.1),
            ping_interval=_number(merged, "ping_interval", 120.0, 0.1),
            max_outstanding_pings=int(_number(merged, "max_outstanding_pings", 2, 1)),
            request_timeout=_number(merged, "request_timeout", 5.0, 0.1),
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            duplicate_window=_number(merged, "duplicate_window", 120.0, 0),
            storage=storage,
            replicas=int(_number(merged, "replicas", 1, 1)),
            fetch_wait=_number(merged, "fetch_wait", 1.0, 0.05),
            max_ack_pending=int(_number(merged, "max_ack_pending", 10_000, 1)),
            msg_id=msg_id,
            heartbeat=_heartbeat(merged, ack_wait),
            fast_publish=_flag(merged, "fast_publish", True),
            tls=tls_context is not None,
            tls_hostname=tls_hostname,
            tls_context=tls_context,
        )
        if merged:
            raise ConfigurationError(
                f"unknown option(s) for {url.scheme}://: {', '.join(sorted(merged))}"
            )
        return config

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (credentials included: never log them)."""
        kwargs: dict[str, Any] = {
            "servers": self.servers,
            "connect_timeout": self.connect_timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "ping_interval": self.ping_interval,
            "max_outstanding_pings": self.max_outstanding_pings,
        }
        if self.name:
            kwargs["name"] = self.name
        if self.user is not None:
            kwargs["user"], kwargs["password"] = self.user, self.password
        if self.token:
            kwargs["token"] = self.token
        if self.nkey_seed:
            kwargs["nkeys_seed_str"] = self.nkey_seed
        if self.creds:
            kwargs["user_credentials"] = self.creds
        if self.tls_context is not None:
            kwargs["tls"] = self.tls_context
            if self.tls_hostname:
                kwargs["tls_hostname"] = self.tls_hostname
        return kwargs


def _heartbeat(options: dict[str, Any], ack_wait: float) -> float:
    value = _number(options, "heartbeat", ack_wait / 3, 0)
    if 0 < value < 0.05:
        raise ConfigurationError(f"option heartbeat must be 0 (off) or >= 0.05, got {value:g}")
    return value


_TLS_IMPLIED_BY = ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_hostname")


def _tls(options: dict[str, Any], url: BrokerURL) -> tuple[ssl.SSLContext | None, str | None]:
    """The TLS context the options ask for (None: plaintext) and the name to verify."""
    explicit = options.pop("tls", None)
    given = {name: _text(options.pop(name, None)) for name in _TLS_IMPLIED_BY}
    ca_file, cert_file, key_file, hostname = given.values()
    verify = _flag(options, "tls_verify", True)
    implied = [name for name, value in given.items() if value is not None]
    if not verify:
        implied.append("tls_verify")
    wanted = _flag({"tls": explicit}, "tls", False) if explicit is not None else bool(implied)
    if not wanted:
        if implied:
            raise ConfigurationError(f"tls=false contradicts option(s) {', '.join(implied)}")
        return None, None
    if (cert_file is None) != (key_file is None):
        raise ConfigurationError(
            "options tls_cert_file and tls_key_file go together (mutual TLS): give both"
        )
    context = _tls_context(ca_file, cert_file, key_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.warning(
            "NATS %s: tls_verify=false: the server's certificate and name are NOT verified; "
            "the traffic is encrypted but anyone on the path can pose as the server",
            url.safe(),
        )
    return context, hostname


def encrypted(nc: Any) -> bool:
    """Whether nats-py's connection ``nc`` runs over TLS right now.

    nats-py upgrades to TLS only when the server's INFO asks for it, whatever ``tls=`` says,
    so a transport that wants TLS checks this before using the connection. Reads nats-py
    internals: if they move, this says False and TLS connections are refused (fail closed)."""
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    get_extra_info = getattr(writer, "get_extra_info", None)
    return get_extra_info is not None and get_extra_info("ssl_object") is not None


def _text(value: Any) -> str | None:
    """An option's string value; None when absent or blank."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _tls_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext:
    """A verifying client context (CERT_REQUIRED, hostname checked) with the given files.

    Errors name the option and the path, never what a file holds."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except OSError as exc:
        raise _file_error("tls_ca_file", ca_file, exc) from None
    if cert_file is not None and key_file is not None:
        _check_readable("tls_cert_file", cert_file)
        _check_readable("tls_key_file", key_file)
        try:
            context.load_cert_chain(cert_file, key_file, password=_encrypted_key)
        except OSError as exc:
            pair = f"{cert_file}, {key_file}"
            raise _file_error("tls_cert_file/tls_key_file", pair, exc) from None
    return context


def _encrypted_key() -> str:
    # Called by OpenSSL only for an encrypted key; without it OpenSSL would prompt on the tty.
    raise ConfigurationError(
        "option tls_key_file: the key is encrypted with a passphrase; give an unencrypted key"
    )


def _check_readable(option: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise _file_error(option, path, exc) from None


def _file_error(option: str, path: str | None, exc: OSError) -> ConfigurationError:
    if isinstance(exc, ssl.SSLError):
        # The reason is an OpenSSL code (e.g. KEY_VALUES_MISMATCH), never the file's content.
        why = f"not a usable PEM file ({exc.reason or 'unreadable'})"
    else:
        why = exc.strerror or type(exc).__name__
    return ConfigurationError(f"option {option}: cannot use {path!r}: {why}")
