"""Fixtures for the NATS adapter's own tests: connected transports on the real nats-server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from mqkit_nats import JetStreamTransport, NatsTransport

Factory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def core(nats_url: str) -> AsyncIterator[Factory]:
    """Makes connected ``NatsTransport``s (keyword options pass through); closes them all."""
    made: list[NatsTransport] = []

    async def make(**options: Any) -> NatsTransport:
        transport = NatsTransport(nats_url, **options)
        await transport.connect()
        made.append(transport)
        return transport

    yield make
    for transport in reversed(made):
        await transport.close()


@pytest.fixture
async def jetstream(jetstream_url: str) -> AsyncIterator[Factory]:
    """Makes connected ``JetStreamTransport``s; deletes the streams the test created."""
    made: list[JetStreamTransport] = []

    async def make(**options: Any) -> JetStreamTransport:
        transport = JetStreamTransport(jetstream_url, **options)
        await transport.connect()
        made.append(transport)
        return transport

    yield make
    streams = {s for t in made for s in t._streams.values()}
    if made and made[0]._nc is not None:
        for stream in streams:
            try:
                await made[0].js.delete_stream(stream)
            except Exception:
                pass
    for transport in reversed(made):
        await transport.close()


def fresh_topic() -> str:
    """A topic no other test uses, in this process or another.

    Random on its own rather than a slice of a message id: ids once began with a per-process
    prefix, and every test of a run then got the same topic (and the stream left by the last).
    """
    return f"nt.{os.urandom(6).hex()}"


@pytest.fixture
def topic() -> str:
    return fresh_topic()
