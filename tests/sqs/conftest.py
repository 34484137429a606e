"""Fixtures for the SNS/SQS adapter's own tests (moto's server, or AWS by URL)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from mqkit.client import Client
from mqkit_sqs import SqsTransport

TransportFactory = Callable[..., Awaitable[SqsTransport]]
ClientMaker = Callable[..., Awaitable[Client]]


def with_options(url: str, **options: Any) -> str:
    """``url`` with query options added."""
    extra = "&".join(f"{k}={v}" for k, v in options.items())
    if not extra:
        return url
    return url + ("&" if "?" in url else "?") + extra


@pytest.fixture
def topic() -> str:
    return f"sqs-test.{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def transport_factory(sqs_url: str) -> AsyncIterator[TransportFactory]:
    made: list[SqsTransport] = []

    async def make(**options: Any) -> SqsTransport:
        transport = SqsTransport(with_options(sqs_url, **options))
        await transport.connect()
        made.append(transport)
        return transport

    yield make
    for transport in reversed(made):
        await transport.close()


@pytest.fixture
async def client_maker(sqs_url: str) -> AsyncIterator[ClientMaker]:
    made: list[Client] = []

    async def make(**options: Any) -> Client:
        client = Client(with_options(sqs_url, **options))
        await client.connect()
        made.append(client)
        return client

    yield make
    for client in reversed(made):
        await client.close()


def raw_client(sqs_url: str, service: str) -> Any:
    """A plain boto3 client on the same endpoint, for interop tests."""
    parts = urlsplit(sqs_url)
    region = parse_qs(parts.query).get("region", ["us-east-1"])[0]
    return boto3.client(service, endpoint_url=f"http://{parts.netloc}", region_name=region)
