"""pika's exceptions converted into mqkit's error tree, at the adapter's edge.

Each function returns (does not raise) the mqkit error; callers ``raise ... from exc`` so the
pika exception stays the ``__cause__``. Messages name the broker by its redacted URL and
never contain the password (pika's own texts do not carry it either).
"""

from __future__ import annotations

from pika import exceptions as px

from mqkit.errors import (
    AuthorizationError,
    ConfigurationError,
    ConnectionFailed,
    MqkitError,
    PublishError,
)

# AMQP reply codes (0-9-1 spec, section 1.9)
NOT_FOUND = 404
ACCESS_REFUSED = 403
PRECONDITION_FAILED = 406
RESOURCE_LOCKED = 405
NO_ROUTE = 312


class ChannelLost(ConnectionFailed):
    """The channel or connection a message or delivery belonged to is gone.

    Publishing retries after a reconnect; an ack on a lost channel cannot be delivered and
    the broker redelivers the message.
    """


def connect_error(exc: BaseException, where: str) -> MqkitError:
    """Why a connection to ``where`` (a redacted URL) could not be opened."""
    if isinstance(exc, (px.ProbableAuthenticationError, px.AuthenticationError)):
        return ConnectionFailed(f"RabbitMQ at {where} refused the credentials")
    if isinstance(exc, px.ProbableAccessDeniedError):
        return ConnectionFailed(f"RabbitMQ at {where} refused access to the virtual host")
    if isinstance(exc, px.ConnectionClosedByBroker):
        return ConnectionFailed(
            f"RabbitMQ at {where} closed the connection: {exc.reply_code} {exc.reply_text}"
        )
    if isinstance(exc, TimeoutError):
        return ConnectionFailed(f"RabbitMQ at {where} did not answer in time")
    return ConnectionFailed(f"cannot connect to RabbitMQ at {where}: {_describe(exc)}")


def channel_error(exc: BaseException, doing: str) -> MqkitError:
    """Why a channel operation (``doing``: "declare queue 'x'", ...) failed."""
    if isinstance(exc, px.ChannelClosedByBroker):
        code, text = exc.reply_code, exc.reply_text
        if code == PRECONDITION_FAILED:
            return ConfigurationError(
                f"cannot {doing}: it exists with other settings ({text}); delete it or "
                "declare it with the same options"
            )
        if code == ACCESS_REFUSED:
            return AuthorizationError(f"cannot {doing}: access refused ({text})")
        if code == NOT_FOUND:
            return PublishError(f"cannot {doing}: not found ({text})")
        return PublishError(f"cannot {doing}: broker closed the channel ({code} {text})")
    if isinstance(exc, (px.AMQPConnectionError, px.ChannelClosed, px.ChannelWrongStateError,
                        ConnectionError)):
        return ChannelLost(f"cannot {doing}: connection to RabbitMQ lost ({_describe(exc)})")
    if isinstance(exc, MqkitError):
        return exc
    return PublishError(f"cannot {doing}: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
