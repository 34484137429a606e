"""Keep AWS credentials out of botocore's DEBUG log records.

botocore logs every signed request at DEBUG: the ``X-Amz-Security-Token`` header and the
``Authorization`` header (with the access key id) in ``botocore.endpoint``, the canonical
request (with the session token) in ``botocore.auth``. A filter on those loggers rewrites
such records with the values hidden, so turning DEBUG on never writes a credential.
"""

from __future__ import annotations

import logging
import re

from mqkit.url import REDACTED

LOGGERS = ("botocore.endpoint", "botocore.auth")
_PATTERNS = (
    # 'X-Amz-Security-Token': b'...' in a headers dict
    re.compile(r"(x-amz-security-token':\s*b?')([^']+)", re.IGNORECASE),
    # x-amz-security-token:... in a canonical request, X-Amz-Security-Token=... in a query
    re.compile(r"(x-amz-security-token[:=])([^\s&']+)", re.IGNORECASE),
    # Credential=<access key id>/<date>/... (Authorization header, presigned URLs)
    re.compile(r"((?:X-Amz-)?Credential=)([^/%\s,'&]+)", re.IGNORECASE),
)


def redact_credentials(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class CredentialFilter(logging.Filter):
    """Rewrites a record's message with AWS credentials hidden (never drops the record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_credentials(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_FILTER = CredentialFilter()


def install() -> None:
    """Attach the filter to botocore's loggers that print credentials (once)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
