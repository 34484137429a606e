"""librdkafka errors converted into mqkit's error tree, at the adapter's edge.

    KafkaError code                                  mqkit error
    MSG_SIZE_TOO_LARGE, RECORD_LIST_TOO_LARGE        MessageTooLarge
    UNKNOWN_TOPIC_OR_PART, _UNKNOWN_TOPIC/PARTITION  UnknownTopicError (PublishError, permanent)
    _MSG_TIMED_OUT while publishing                  PublishTimeout (outcome unknown)
    *_AUTHORIZATION_FAILED                           AuthorizationError
    SASL_AUTHENTICATION_FAILED, _AUTHENTICATION,     ConnectionFailed
    _TRANSPORT, _ALL_BROKERS_DOWN, _TIMED_OUT
    anything else while publishing                   PublishError
    anything else                                    ConnectionFailed (transient)

The original ``KafkaException`` is kept as ``__cause__``; secrets are scrubbed from messages.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from mqkit.errors import (
    AuthorizationError,
    ConfigurationError,
    ConnectionFailed,
    MessageTooLarge,
    MqkitError,
    PermanentError,
    PublishError,
    PublishTimeout,
)
from mqkit.url import redact_text


class UnknownTopicError(PublishError, PermanentError):
    """The topic does not exist (and the cluster does not create topics on demand)."""


class TopicMismatchError(ConfigurationError):
    """An existing topic cannot be made to match its ``TopicSpec`` (fewer partitions,
    another cleanup policy)."""


class TransactionError(MqkitError):
    """A Kafka transaction failed and was aborted; its outputs are invisible to
    read_committed consumers and its inputs will be processed again."""


_TOO_LARGE = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE}
_UNKNOWN = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
}
_AUTHZ = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}
_UNREACHABLE = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._RESOLVE,
}


def error_of(exc: BaseException) -> KafkaError | None:
    """The ``KafkaError`` inside a ``KafkaException`` (or itself), else None."""
    if isinstance(exc, KafkaError):
        return exc
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def convert(
    exc: BaseException | KafkaError, doing: str, *, publishing: bool = False,
    secrets: list[str] | None = None,
) -> MqkitError:
    """The mqkit error for a librdkafka failure while ``doing`` something (raise it ``from``
    the original)."""
    err = error_of(exc) if isinstance(exc, BaseException) else exc
    if err is None:
        text = redact_text(f"{doing}: {exc}", secrets or [])
        return PublishError(text) if publishing else ConnectionFailed(text)
    code = err.code()
    text = redact_text(f"{doing}: {err.name()}: {err.str()}", secrets or [])
    if code in _TOO_LARGE:
        return MessageTooLarge(f"{text} (the broker accepts at most its message.max.bytes)")
    if code in _UNKNOWN:
        return UnknownTopicError(f"{text} (create it with ensure_topic first)")
    if code in _AUTHZ:
        return AuthorizationError(text)
    if code in _UNREACHABLE:
        return ConnectionFailed(text)
    if publishing and code == KafkaError._MSG_TIMED_OUT:
        # No delivery report within message.timeout.ms: it may have been written.
        return PublishTimeout(f"{text} (within publish_timeout; it may have been stored)")
    if publishing:
        return PublishError(text)
    return ConnectionFailed(text)
