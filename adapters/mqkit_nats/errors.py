"""nats-py exceptions converted into mqkit's error tree, at the adapter's edge.

Every conversion keeps the driver's exception as ``__cause__`` and never puts credentials in
the message (the URL is shown redacted). Use ``translate`` around a driver call::

    with translate("publish to orders", PublishError):
        await nc.publish(...)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import nats.errors
import nats.js.errors

from mqkit.errors import (
    AuthorizationError,
    ConfigurationError,
    ConnectionFailed,
    MessageTooLarge,
    MqkitError,
    PublishError,
    RequestTimeout,
)

_AUTH_WORDS = ("authorization", "authentication", "permissions violation", "user authentication")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def convert(exc: BaseException, what: str, default: type[MqkitError] = PublishError) -> MqkitError:
    """The mqkit error for ``exc`` raised while doing ``what`` (the caller sets ``__cause__``).

    ``default`` is used for driver errors that have no more precise meaning.
    """
    if isinstance(exc, MqkitError):
        return exc
    detail = _describe(exc)
    lowered = detail.lower()
    if isinstance(exc, nats.errors.MaxPayloadError):
        return MessageTooLarge(f"{what}: the server refused the size: {detail}")
    if isinstance(exc, nats.js.errors.NoStreamResponseError | nats.errors.NoRespondersError):
        if default is RequestTimeout:
            return RequestTimeout(f"{what}: no responder is subscribed")
        return PublishError(
            f"{what}: no JetStream stream captures this subject "
            "(create it first with ensure_topic)"
        )
    if isinstance(exc, nats.js.errors.APIError):
        if exc.err_code == 10054 or "maximum message size" in lowered:  # message size exceeds
            return MessageTooLarge(f"{what}: {detail}")
        if exc.code == 403 or any(w in lowered for w in _AUTH_WORDS):
            return AuthorizationError(f"{what}: {detail}")
        return default(f"{what}: {detail}")
    if isinstance(
        exc, nats.errors.AuthorizationError | nats.errors.InvalidUserCredentialsError
    ) or any(w in lowered for w in _AUTH_WORDS):
        return AuthorizationError(f"{what}: the server refused the credentials: {detail}")
    if isinstance(
        exc,
        nats.errors.ConnectionClosedError
        | nats.errors.NoServersError
        | nats.errors.StaleConnectionError
        | nats.errors.ConnectionReconnectingError
        | nats.errors.OutboundBufferLimitError
        | OSError,
    ):
        if default is ConnectionFailed:
            return ConnectionFailed(f"{what}: {detail}")
        return default(f"{what}: connection lost: {detail}")
    if isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError | TimeoutError):
        if default is RequestTimeout:
            return RequestTimeout(f"{what}: no answer in time")
        return default(f"{what}: the server did not answer in time")
    if isinstance(exc, nats.errors.BadSubjectError | nats.errors.Error) and "subject" in lowered:
        return ConfigurationError(f"{what}: {detail}")
    return default(f"{what}: {type(exc).__name__}: {detail}")


@contextmanager
def translate(what: str, default: type[MqkitError] = PublishError) -> Iterator[None]:
    """Re-raise any driver exception from the block as the mqkit error ``convert`` picks."""
    try:
        yield
    except MqkitError:
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise convert(exc, what, default) from exc
