"""Scheme registry, the public API, import isolation and settings."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mqkit
from mqkit import registry
from mqkit.errors import UnknownTransportError
from mqkit.settings import Settings

BROKER_LIBRARIES = ("confluent_kafka", "pika", "boto3", "botocore", "nats", "redis", "psycopg")


def test_importing_mqkit_imports_no_broker_library() -> None:
    # Given a fresh interpreter, when it imports mqkit and its memory transport
    code = (
        "import sys, mqkit, mqkit.memory, mqkit.cli\n"
        f"loaded = [m for m in sys.modules if m.split('.')[0] in {BROKER_LIBRARIES!r}]\n"
        "print(','.join(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Then no broker library was loaded
    assert out.stdout.strip() == ""


def test_public_api_is_exactly_all() -> None:
    public = {name for name in dir(mqkit) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(mqkit, name)).__name__ == "module"}
    assert public - modules == set(mqkit.__all__)
    for name in mqkit.__all__:
        assert getattr(mqkit, name) is not None


def test_unknown_scheme_names_installed_schemes_and_suggests() -> None:
    with pytest.raises(UnknownTransportError) as info:
        registry.create("memroy://")
    text = str(info.value)
    assert "memroy://" in text and "installed: " in text and "memory" in text
    assert "Did you mean memory://" in text


def test_known_scheme_without_its_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a scheme registered by entry point whose broker library is not importable
    class FakeEntryPoint:
        name = "kafka"

        def load(self) -> None:
            raise ModuleNotFoundError("No module named 'confluent_kafka'", name="confluent_kafka")

    monkeypatch.setattr(registry, "entry_points", lambda group: [FakeEntryPoint()])
    with pytest.raises(UnknownTransportError) as info:
        registry.create("kafka://127.0.0.1:9092")
    assert 'pip install "mqkit[kafka]"' in str(info.value)
    assert "confluent_kafka" in str(info.value)


def test_scheme_not_installed_at_all_gives_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    with pytest.raises(UnknownTransportError, match=r'pip install "mqkit\[nats\]"'):
        registry.create("jetstream://127.0.0.1:4222")


def test_settings_come_from_the_environment_and_hide_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MQKIT_URL", "amqp://app:hunter2@127.0.0.1:5672/%2F")
    monkeypatch.setenv("MQKIT_SHUTDOWN_TIMEOUT", "3")
    settings = Settings()
    assert settings.shutdown_timeout == 3
    assert "hunter2" not in repr(settings) and "hunter2" not in settings.safe_url
    assert settings.url.get_secret_value().endswith("@127.0.0.1:5672/%2F")


def test_client_repr_hides_the_password() -> None:
    client = mqkit.Client("memory://x?max_message_bytes=10")
    assert repr(client) == "<mqkit.Client memory://x?max_message_bytes=10>"
    registry.register("fake", lambda url, **o: mqkit.memory.MemoryTransport("memory://fake"))
    client = mqkit.Client("fake://user:hunter2@host")
    assert "hunter2" not in repr(client)
