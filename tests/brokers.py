"""Real brokers for tests: a pytest plugin plus `broker_url(name)` for any code.

Where a broker's URL comes from, first match wins:

1. the environment variable (MQKIT_KAFKA_URL, ...), used as is;
2. a Docker engine that answers: testcontainers' DockerCompose starts the
   service that compose.yaml defines (same ports, so the same URLs);
3. nothing: the test fails when MQKIT_REQUIRE_BROKERS=1 (CI), else it is skipped.

Fixtures: kafka_url, sqs_url, rabbitmq_url, nats_url, jetstream_url, redis_url,
postgres_url (session scope). Marker: @pytest.mark.broker("kafka", ...) skips or
fails a test the same way before it runs.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOW_TO = 'start brokers with: scripts/brokers up && eval "$(scripts/brokers env)"'

# name -> (environment variable, compose.yaml service, URL of that service)
BROKERS: dict[str, tuple[str, str, str]] = {
    "kafka": ("MQKIT_KAFKA_URL", "kafka", "kafka://127.0.0.1:9092"),
    "sqs": ("MQKIT_SQS_URL", "moto", "sqs://127.0.0.1:5000?region=us-east-1"),
    "rabbitmq": ("MQKIT_RABBITMQ_URL", "rabbitmq", "amqp://guest:guest@127.0.0.1:5672/%2F"),
    "nats": ("MQKIT_NATS_URL", "nats", "nats://127.0.0.1:4222"),
    "jetstream": ("MQKIT_JETSTREAM_URL", "nats", "jetstream://127.0.0.1:4222"),
    "redis": ("MQKIT_REDIS_URL", "redis", "redis://127.0.0.1:6379/0"),
    "postgres": ("MQKIT_POSTGRES_URL", "postgres", "postgresql://mqkit:mqkit@127.0.0.1:5432/mqkit"),
}
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@functools.cache
def docker_available() -> bool:
    """True when a Docker engine answers (checked once, quickly)."""
    if shutil.which("docker") is None:
        return False
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


_started: set[str] = set()


def _compose_up(service: str) -> None:
    from testcontainers.compose import DockerCompose  # lazy: only where Docker exists

    if service in _started:
        return
    if not _started:
        atexit.register(_compose_down)
    DockerCompose(ROOT, compose_file_name="compose.yaml", services=[service], wait=True).start()
    _started.add(service)


def _compose_down() -> None:
    from testcontainers.compose import DockerCompose

    DockerCompose(ROOT, compose_file_name="compose.yaml").stop()


def broker_url(name: str) -> str:
    """URL of a running broker `name` (see BROKERS), or skip/fail the current test."""
    env_var, service, url = BROKERS[name]
    if name == "sqs":
        for key, value in AWS_TEST_ENV.items():
            os.environ.setdefault(key, value)
    if os.environ.get(env_var):
        return os.environ[env_var]
    if docker_available():
        _compose_up(service)
        return url
    message = f"no {name} broker: {env_var} is not set and no Docker engine answers; {HOW_TO}"
    if os.environ.get("MQKIT_REQUIRE_BROKERS") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "broker(*names): the test needs these real brokers (see tests/brokers.py)"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("broker"):
        for name in marker.args:
            broker_url(name)


@pytest.fixture(scope="session")
def kafka_url() -> str:
    return broker_url("kafka")


@pytest.fixture(scope="session")
def sqs_url() -> str:
    return broker_url("sqs")


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    return broker_url("rabbitmq")


@pytest.fixture(scope="session")
def nats_url() -> str:
    return broker_url("nats")


@pytest.fixture(scope="session")
def jetstream_url() -> str:
    return broker_url("jetstream")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return broker_url("redis")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return broker_url("postgres")
