"""mqkit: write a producer, a consumer or a saga once; run it on any broker by URL.

The public API is what ``__all__`` lists; everything else may change.
"""

from mqkit.client import Client, connect
from mqkit.codec import as_cloudevent, decode, encode, from_cloudevent_headers
from mqkit.errors import (
    AlreadySettledError,
    Classifier,
    ConfigurationError,
    ConnectionFailed,
    DecodeError,
    ErrorKind,
    HandlerTimeout,
    MessageTooLarge,
    MqkitError,
    PermanentError,
    PublishError,
    PublishTimeout,
    RequestTimeout,
    TransientError,
    UnknownTransportError,
    classify,
)
from mqkit.message import Delivery, Message
from mqkit.middleware import (
    DeadLetter,
    Idempotency,
    Logging,
    Retry,
    RetryPolicy,
    Timeout,
    current_transaction,
)
from mqkit.settings import Settings
from mqkit.sync import SyncPublisher
from mqkit.transport import Capabilities, Requirements, TopicSpec, Transport

__all__ = [
    "AlreadySettledError",
    "Capabilities",
    "Classifier",
    "Client",
    "ConfigurationError",
    "ConnectionFailed",
    "DeadLetter",
    "DecodeError",
    "Delivery",
    "ErrorKind",
    "HandlerTimeout",
    "Idempotency",
    "Logging",
    "Message",
    "MessageTooLarge",
    "MqkitError",
    "PermanentError",
    "PublishError",
    "PublishTimeout",
    "RequestTimeout",
    "Requirements",
    "Retry",
    "RetryPolicy",
    "Settings",
    "SyncPublisher",
    "Timeout",
    "TopicSpec",
    "TransientError",
    "Transport",
    "UnknownTransportError",
    "as_cloudevent",
    "classify",
    "connect",
    "current_transaction",
    "decode",
    "encode",
    "from_cloudevent_headers",
]
