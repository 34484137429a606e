"""pytest fixtures for code that uses mqkit (registered by the ``pytest11`` entry point).

- ``mqkit_memory_client``: a connected client on a fresh, private ``memory://`` broker;
- ``mqkit_clock`` and ``mqkit_virtual_client``: a ``VirtualClock`` and a memory client whose
  delays, backoff and ack timeouts follow it (``await mqkit_clock.advance(300)``);
- ``mqkit_env_client``: a connected client on ``$MQKIT_TEST_URL`` (else ``memory://``),
  so one test runs against a real broker by setting one variable.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mqkit.client import Client
from mqkit.memory import MemoryBroker
from mqkit.message import new_id
from mqkit.testing.clock import VirtualClock


async def _memory_client(**options: Any) -> AsyncIterator[Client]:
    name = f"test-{new_id()}"
    client = Client(f"memory://{name}", **options)
    await client.connect()
    try:
        yield client
    finally:
        await client.close()
        MemoryBroker.forget(name)


@pytest.fixture
async def mqkit_memory_client() -> AsyncIterator[Client]:
    async for client in _memory_client():
        yield client


@pytest.fixture
def mqkit_clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
async def mqkit_virtual_client(mqkit_clock: VirtualClock) -> AsyncIterator[Client]:
    async for client in _memory_client(clock=mqkit_clock):
        yield client


@pytest.fixture
async def mqkit_env_client() -> AsyncIterator[Client]:
    client = Client(os.environ.get("MQKIT_TEST_URL") or f"memory://test-{new_id()}")
    await client.connect()
    try:
        yield client
    finally:
        await client.close()
