"""Shared helpers of the Kafka adapter's tests."""

from __future__ import annotations

from urllib.parse import urlsplit

from mqkit.message import new_id


def topic_name(what: str) -> str:
    return f"kafka-test.{what}.{new_id()[:12]}"


def bootstrap(url: str) -> str:
    return urlsplit(url).netloc
