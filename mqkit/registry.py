"""URL scheme -> transport class, found through the entry-point group ``mqkit.transports``.

A third-party adapter registers itself in its own packaging::

    [project.entry-points."mqkit.transports"]
    mybroker = "mybroker_mqkit:MyBrokerTransport"

and ``mqkit.connect("mybroker://...")`` finds it. A transport class is constructed with the
parsed ``BrokerURL`` and keyword options.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from mqkit.errors import UnknownTransportError
from mqkit.transport import Transport
from mqkit.url import BrokerURL

GROUP = "mqkit.transports"

# Which extra brings which scheme, for the install hint.
EXTRAS = {
    "kafka": "kafka",
    "sqs": "sqs",
    "sns+sqs": "sqs",
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "rabbitmq": "rabbitmq",
    "nats": "nats",
    "jetstream": "nats",
}

TransportFactory = Callable[..., Transport]
_overrides: dict[str, TransportFactory] = {}


def register(scheme: str, factory: TransportFactory) -> None:
    """Register a transport in-process (tests, plugins loaded without packaging)."""
    _overrides[scheme.lower()] = factory


def installed_schemes() -> list[str]:
    """Every scheme whose adapter is installed, sorted."""
    return sorted({ep.name for ep in entry_points(group=GROUP)} | set(_overrides))


def transport_class(scheme: str) -> TransportFactory:
    """The transport factory for ``scheme``, or an ``UnknownTransportError`` saying what to do."""
    scheme = scheme.lower()
    if scheme in _overrides:
        return _overrides[scheme]
    for ep in entry_points(group=GROUP):
        if ep.name == scheme:
            try:
                factory: TransportFactory = ep.load()
            except ImportError as exc:
                raise UnknownTransportError(_missing_extra(scheme, exc)) from exc
            return factory
    raise UnknownTransportError(_unknown_scheme(scheme))


def create(url: str | BrokerURL, **options: Any) -> Transport:
    """A (not yet connected) transport for ``url``."""
    parsed = url if isinstance(url, BrokerURL) else BrokerURL.parse(url)
    return transport_class(parsed.scheme)(parsed, **options)


def _missing_extra(scheme: str, exc: ImportError) -> str:
    extra = EXTRAS.get(scheme, scheme)
    return (
        f"the {scheme}:// transport is registered but its broker library is missing "
        f"({exc.name or exc}); install it with: pip install \"mqkit[{extra}]\""
    )


def _unknown_scheme(scheme: str) -> str:
    schemes = installed_schemes()
    hint = ""
    close = difflib.get_close_matches(scheme, [*schemes, *EXTRAS], n=1)
    if close:
        hint = f" Did you mean {close[0]}://?"
    if scheme in EXTRAS:
        hint += f' Install it with: pip install "mqkit[{EXTRAS[scheme]}]".'
    else:
        hint += ' Brokers mqkit ships: pip install "mqkit[kafka|sqs|rabbitmq|nats]".'
    return f"no transport for {scheme}:// (installed: {', '.join(schemes) or 'none'}).{hint}"
