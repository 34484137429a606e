"""pytest fixtures for code that uses mqkit (registered by the ``pytest11`` entry point).

- ``mqkit_memory_client``: a connected client on a fresh, private ``memory://`` broker;
- ``mqkit_env_client``: a connected client on ``$MQKIT_TEST_URL`` (else ``memory://``),
  so one test runs against a real broker by setting one variable.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from mqkit.client import Client
from mqkit.memory import MemoryBroker
from mqkit.message import new_id


@pytest.fixture
async def mqkit_memory_client() -> AsyncIterator[Client]:
    name = f"test-{new_id()}"
    client = Client(f"memory://{name}")
    await client.connect()
    try:
        yield client
    finally:
        await client.close()
        MemoryBroker.forget(name)


@pytest.fixture
async def mqkit_env_client() -> AsyncIterator[Client]:
    client = Client(os.environ.get("MQKIT_TEST_URL") or f"memory://test-{new_id()}")
    await client.connect()
    try:
        yield client
    finally:
        await client.close()
