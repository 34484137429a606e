"""botocore's exceptions, converted at the adapter's edge into mqkit's error tree.

``convert(exc, doing)`` returns the mqkit error to raise ``from exc`` (the original stays as
``__cause__``). ``doing`` says what was attempted ("publishing to 'orders'"). Messages name
the AWS error code and never carry credentials: botocore does not echo them, and URLs
here hold none (see ``config``).
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from mqkit.errors import (
    AuthorizationError,
    ConfigurationError,
    ConnectionFailed,
    MqkitError,
    PublishError,
)

AUTH_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "MissingAuthenticationToken",
    }
)
NOT_FOUND_CODES = frozenset(
    {
        "NotFound",
        "NotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
    }
)
RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "ThrottledException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "KMSThrottling",
    }
)


class UnknownTopicError(PublishError, ConfigurationError):
    """A topic or queue that does not exist: call ``ensure_topic`` (or subscribe) first."""


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ``ClientError``, else ``""``."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def convert(exc: BaseException, doing: str) -> MqkitError:
    """The mqkit error for ``exc``, raised while ``doing``."""
    if isinstance(exc, MqkitError):
        return exc
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ConnectionFailed(
            f"{doing}: no usable AWS credentials in boto3's chain "
            "(set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or a role)"
        )
    if isinstance(exc, NoRegionError):
        return ConfigurationError(f"{doing}: no AWS region: add ?region=... to the sqs:// URL")
    if isinstance(exc, BotoConnectionError):
        return ConnectionFailed(f"{doing}: cannot reach the endpoint: {exc}")
    if isinstance(exc, ClientError):
        code = error_code(exc)
        text = exc.response.get("Error", {}).get("Message", "") or str(exc)
        if code in AUTH_CODES:
            return AuthorizationError(f"{doing}: AWS refused the credentials or rights ({code})")
        if code in NOT_FOUND_CODES:
            return UnknownTopicError(
                f"{doing}: it does not exist ({code}); create it with ensure_topic first"
            )
        return PublishError(f"{doing}: {code or 'error'}: {text}")
    if isinstance(exc, BotoCoreError):
        return ConnectionFailed(f"{doing}: {type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        return ConnectionFailed(f"{doing}: {type(exc).__name__}: {exc}")
    return PublishError(f"{doing}: {type(exc).__name__}: {exc}")


class SettleError(MqkitError):
    """SQS did not accept an ack (delete) or nack (visibility change); it will redeliver."""
