"""Broker URLs: parsing into parts and redacting secrets for logs, reprs and errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from mqkit.errors import ConfigurationError

REDACTED = "***"

# Option names whose values are secrets, wherever they appear (query strings, option dicts).
_SECRET_NAME = re.compile(
    r"(pass(word)?|secret|token|credential|api[_.-]?key|private[_.-]?key|nkey|seed|auth)",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """True when an option called ``name`` holds a secret."""
    return bool(_SECRET_NAME.search(name))


@dataclass(frozen=True, repr=False)
class BrokerURL:
    """A parsed broker URL. ``str()`` and ``repr()`` never show secrets; ``raw`` does."""

    scheme: str
    host: str | None
    port: int | None
    username: str | None
    password: str | None = field(repr=False)
    path: str
    options: dict[str, str] = field(repr=False)
    raw: str = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        if "://" not in url:
            raise ConfigurationError(
                f"not a broker URL: {redact_url(url)!r} (expected scheme://..., "
                "for example memory:// or kafka://127.0.0.1:9092)"
            )
        parts = urlsplit(url)
        hostinfo = parts.netloc.rpartition("@")[2]
        host: str | None = parts.hostname
        try:
            if "," in hostinfo:  # several bootstrap hosts: host/port name the first
                first = urlsplit(f"//{hostinfo.split(',', 1)[0]}")
                host, port = first.hostname, first.port
            else:
                port = parts.port
        except ValueError as exc:
            raise ConfigurationError(f"bad port in {redact_url(url)!r}") from exc
        return cls(
            scheme=parts.scheme.lower(),
            host=host,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            path=parts.path,
            options=dict(parse_qsl(parts.query, keep_blank_values=True)),
            raw=url,
        )

    @property
    def hosts(self) -> list[tuple[str, int | None]]:
        """Every host:port in the netloc (``kafka://a:1,b:2`` has two)."""
        netloc = urlsplit(self.raw).netloc.rsplit("@", 1)[-1]
        out: list[tuple[str, int | None]] = []
        for part in filter(None, netloc.split(",")):
            host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
            out.append((host, int(port) if port.isdigit() else None))
        return out

    def safe(self) -> str:
        return redact_url(self.raw)

    def __str__(self) -> str:
        return self.safe()

    def __repr__(self) -> str:
        return f"BrokerURL({self.safe()!r})"


def redact_url(url: str) -> str:
    """``url`` with its password and secret query options replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        if ":" in userinfo:
            netloc = f"{user}:{REDACTED}@{hostinfo}"
        else:
            # A lone userinfo is often a token (nats://TOKEN@host): hide it too.
            netloc = f"{REDACTED}@{hostinfo}"
    query = "&".join(
        f"{quote(k, safe='.-_')}={REDACTED if is_secret_name(k) else quote(v, safe='.-_:/')}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    redacted = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    # urlunsplit drops "//" when there is no host ("memory://" would become "memory:").
    if not netloc and url.startswith(f"{parts.scheme}://"):
        redacted = redacted.replace(f"{parts.scheme}:", f"{parts.scheme}://", 1)
    return redacted


def redact_options(options: dict[str, object]) -> dict[str, object]:
    """A copy of ``options`` with secret values replaced by ``***``."""
    return {k: (REDACTED if is_secret_name(k) else v) for k, v in options.items()}


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_urls_in_text(text: str) -> str:
    """``text`` with the secrets of every URL in it hidden (see ``redact_url``).

    For error texts that may quote a connection URL (a handler's exception); URLs without
    a secret are left exactly as they were.
    """

    def one(match: re.Match[str]) -> str:
        url = match.group(0)
        redacted = redact_url(url)
        return redacted if REDACTED in redacted else url

    return _URL_IN_TEXT.sub(one, text) if "://" in text else text


def redact_text(text: str, secrets: list[str]) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
