"""mqkit topics and patterns as NATS subjects; JetStream stream and consumer names.

A topic is a NATS subject as is (dot-separated tokens). In patterns, mqkit's ``*`` is NATS's
``*`` (one token) and a trailing ``#`` (zero or more words) becomes two filters: the prefix
itself and ``prefix.>``, so ``orders.#`` also matches ``orders`` exactly as in mqkit. A ``#``
anywhere but last has no NATS equivalent and is refused with ``ConfigurationError``.
"""

from __future__ import annotations

import functools
import hashlib
import re

from mqkit.errors import ConfigurationError

_BAD_TOKEN = re.compile(r"[\s>]")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _tokens(topic: str) -> list[str]:
    if not topic:
        raise ConfigurationError("a NATS subject cannot be empty")
    tokens = topic.split(".")
    for token in tokens:
        if not token or _BAD_TOKEN.search(token):
            raise ConfigurationError(
                f"{topic!r} is not a valid NATS subject: tokens are non-empty and contain "
                "no whitespace or '>'"
            )
    return tokens


def is_pattern(topic: str) -> bool:
    return any(word in ("*", "#") for word in topic.split("."))


@functools.lru_cache(maxsize=4096)
def subject(topic: str) -> str:
    """The subject a message to ``topic`` is published on."""
    for token in _tokens(topic):
        if token in ("*", "#"):
            raise ConfigurationError(f"cannot publish to a pattern: {topic!r}")
    return topic


def filters(pattern: str) -> list[str]:
    """The NATS subject filters that together match exactly what mqkit's ``pattern`` matches."""
    tokens = pattern.split(".")
    if "#" in tokens[:-1]:
        raise ConfigurationError(
            f"{pattern!r}: NATS has no wildcard for '#' in the middle of a pattern; "
            "only a trailing '#' maps (to '>')"
        )
    if tokens == ["#"]:
        return [">"]
    _tokens(".".join(t for t in tokens if t != "#"))
    if tokens[-1] == "#":
        prefix = ".".join(tokens[:-1])
        return [prefix, f"{prefix}.>"]
    return [pattern]


def safe_name(text: str) -> str:
    """A JetStream stream/consumer name for ``text``; a short hash keeps rewritten names unique."""
    name = _NAME_UNSAFE.sub("_", text)
    if name != text:
        name = f"{name}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return name[:200]


def stream_name(topic: str) -> str:
    """The stream mqkit creates for ``topic`` (or for a pattern topic such as ``orders.#``)."""
    return "mqkit_" + safe_name(topic)


def consumer_name(group: str) -> str:
    """The durable consumer of ``group``."""
    return safe_name(group)
