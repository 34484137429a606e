"""mqkit's error tree and the classifier that decides retry versus dead-letter.

    MqkitError
    ├── ConfigurationError          bad URL, unknown scheme, missing extra, bad option
    │   └── UnknownTransportError
    ├── ConnectionFailed            broker unreachable, wrong credentials (TransportError)
    ├── PublishError                the broker refused or did not confirm a publish
    │   ├── MessageTooLarge
    │   └── PublishTimeout          no confirm in time: stored or not is unknown
    ├── RequestTimeout              request/reply got no answer in time
    ├── AlreadySettledError         ack/nack/dead_letter called twice on one delivery
    ├── DeliveryExpired             settled after the broker's ack timeout redelivered it
    ├── TransientError              raise from a handler: retry with backoff
    │   └── HandlerTimeout
    └── PermanentError              raise from a handler: dead-letter at once
        └── DecodeError             the body could not be decoded or validated

Adapters convert their driver's exceptions at their edge into this tree and keep the
original as ``__cause__``. ``classify`` maps any exception a handler raised to
``Transient`` or ``Permanent``; retrying a permanent error is a bug, so the default table is
conservative about what it calls transient.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable


class MqkitError(Exception):
    """Base of every error mqkit raises."""


class ConfigurationError(MqkitError, ValueError):
    """A URL, option or middleware setting is invalid."""


class UnknownTransportError(ConfigurationError):
    """No adapter is installed for a URL scheme."""


class TransientError(MqkitError):
    """A failure worth retrying later: the same message may succeed next time."""


class PermanentError(MqkitError):
    """A failure that retrying cannot fix: the message goes to the dead-letter topic."""


class ConnectionFailed(TransientError):
    """The broker could not be reached, or refused our credentials."""


class PublishError(MqkitError):
    """The broker did not confirm a publish; the message may not have been stored."""


class MessageTooLarge(PublishError, PermanentError):
    """The message exceeds the transport's ``max_message_bytes``."""


class PublishTimeout(PublishError, TimeoutError):
    """No confirm arrived within the publish timeout: the outcome is indeterminate.

    The broker may have stored the message (or some messages of the batch) or not. Publish
    it again with the same message id; consumers de-duplicate by id.
    """


class RequestTimeout(TransientError, TimeoutError):
    """No reply arrived within the request's timeout."""


class HandlerTimeout(TransientError, TimeoutError):
    """A handler ran past its time limit."""


class DecodeError(PermanentError):
    """A message body could not be decoded or did not validate against the payload type."""


class AlreadySettledError(MqkitError, RuntimeError):
    """A delivery was acked, nacked or dead-lettered twice."""


class DeliveryExpired(MqkitError):
    """A settlement came after the broker gave the message to another consumer.

    The broker's own timeout (SQS visibility, JetStream AckWait, memory ``ack_timeout``) ran
    out first; the message is being redelivered, so nothing is lost.
    """


class AuthorizationError(PermanentError, ConnectionFailed):
    """The broker refused an operation for lack of rights.

    Permanent for a message (retrying will not grant rights) even though it is raised by a
    connection; the classifier checks permanent first.
    """


class ErrorKind(enum.Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


Rule = Callable[[BaseException], ErrorKind | None]


def _by_type(exc: BaseException) -> ErrorKind | None:
    if isinstance(exc, PermanentError):
        return ErrorKind.PERMANENT
    if isinstance(exc, TransientError):
        return ErrorKind.TRANSIENT
    return None


def _by_pydantic(exc: BaseException) -> ErrorKind | None:
    # Imported lazily: pydantic is a dependency, but the classifier should not pay for it.
    from pydantic import ValidationError

    return ErrorKind.PERMANENT if isinstance(exc, ValidationError) else None


_DEFAULT_TRANSIENT: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    asyncio.TimeoutError,
    OSError,
)
_DEFAULT_PERMANENT: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    LookupError,
    UnicodeError,
    PermissionError,
    NotImplementedError,
    AttributeError,
)


class Classifier:
    """Decides whether an exception is transient or permanent.

    Rules run in order: user rules first (``register``), then mqkit's own error types, then
    the default table. Anything unknown is ``unknown`` (transient by default) so a bug in a
    handler is retried a bounded number of times and then dead-lettered, never lost.
    Safe to share between tasks; ``register`` is meant for start-up.
    """

    def __init__(self, unknown: ErrorKind = ErrorKind.TRANSIENT) -> None:
        self._rules: list[Rule] = []
        self._types: list[tuple[type[BaseException], ErrorKind]] = []
        self.unknown = unknown

    def register(self, exc_type: type[BaseException], kind: ErrorKind) -> None:
        """Classify ``exc_type`` (and subclasses) as ``kind``; later calls take precedence."""
        self._types.insert(0, (exc_type, kind))

    def add_rule(self, rule: Rule) -> None:
        """Add a function returning a kind, or None to let the next rule decide."""
        self._rules.insert(0, rule)

    def classify(self, exc: BaseException) -> ErrorKind:
        for exc_type, kind in self._types:
            if isinstance(exc, exc_type):
                return kind
        for rule in self._rules:
            verdict = rule(exc)
            if verdict is not None:
                return verdict
        for builtin in (_by_type, _by_pydantic):
            verdict = builtin(exc)
            if verdict is not None:
                return verdict
        # PermissionError is an OSError: check the permanent table first.
        if isinstance(exc, _DEFAULT_PERMANENT) and not isinstance(exc, ConnectionError):
            return ErrorKind.PERMANENT
        if isinstance(exc, _DEFAULT_TRANSIENT):
            return ErrorKind.TRANSIENT
        return self.unknown


default_classifier = Classifier()


def classify(exc: BaseException) -> ErrorKind:
    """Classify with the process-wide default classifier."""
    return default_classifier.classify(exc)
