"""librdkafka's log lines reach Python logging (scrubbed), not file descriptor 2."""

from __future__ import annotations

import logging

import pytest

from mqkit import registry
from mqkit.errors import ConnectionFailed


async def test_librdkafka_logs_go_through_python_logging_without_secrets(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given a transport with a password, pointed at a port nobody listens on
    secret = "log-canary-7f3a"
    transport = registry.create(
        f"kafka://app:{secret}@127.0.0.1:1?connect_timeout=1"
    )
    caplog.set_level(logging.DEBUG, logger="mqkit.kafka.librdkafka")
    # When it tries to connect
    with pytest.raises(ConnectionFailed):
        await transport.connect()
    await transport.close()
    # Then librdkafka's complaint is a Python log record, and fd 2 stays quiet
    lines = [r for r in caplog.records if r.name == "mqkit.kafka.librdkafka"]
    assert any("Connect to" in r.getMessage() and r.levelno >= logging.ERROR for r in lines)
    assert "Connect to" not in capfd.readouterr().err
    assert all(secret not in r.getMessage() for r in caplog.records)
