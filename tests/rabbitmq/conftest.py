"""Fixtures for the RabbitMQ adapter's own tests: a private exchange per test, raw pika."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pika
import pytest

from mqkit.message import new_id
from mqkit_rabbitmq import RabbitMQTransport


def with_options(url: str, **options: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return url + ("&" if "?" in url else "?") + query


@pytest.fixture
def exchange() -> str:
    """An exchange of this test's own, so topic names can be plain (``order.created``)."""
    return f"mqkit-test-{new_id()[:10]}"


@pytest.fixture
def url(rabbitmq_url: str, exchange: str) -> str:
    return with_options(rabbitmq_url, exchange=exchange)


TransportFactory = Callable[..., Any]


@pytest.fixture
async def make_transport(url: str) -> AsyncIterator[TransportFactory]:
    """``await make_transport(**options)``: a connected transport, closed after the test."""
    made: list[RabbitMQTransport] = []

    async def make(**options: Any) -> RabbitMQTransport:
        transport = RabbitMQTransport(url, **options)
        await transport.connect()
        made.append(transport)
        return transport

    yield make
    for transport in reversed(made):
        await transport.close()
    delete_topology(url, made)


def delete_topology(url: str, transports: list[RabbitMQTransport]) -> None:
    """Delete the queues and exchanges the tests' transports declared."""
    connection = pika.BlockingConnection(pika.URLParameters(url.split("?")[0]))
    try:
        for transport in transports:
            queues, exchanges = transport.topology.declared()
            for name in queues:
                connection.channel().queue_delete(name)
            for name in exchanges:
                connection.channel().exchange_delete(name)
    finally:
        connection.close()


@pytest.fixture
def raw_channel(rabbitmq_url: str) -> Iterator[Any]:
    """A plain pika channel (blocking) on the same broker, for interop and inspection."""
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        yield connection.channel()
    finally:
        connection.close()


def queue_depth(channel: Any, queue: str) -> int:
    """Messages ready in ``queue`` (passive declare)."""
    return int(channel.queue_declare(queue, passive=True).method.message_count)
