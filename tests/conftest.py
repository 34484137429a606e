"""Shared pytest setup: real-broker fixtures come from tests/brokers.py."""

# Dedicated broker processes (tests/faults/instances.py) for tests that kill or stop them.
pytest_plugins = ["tests.brokers", "tests.faults.instances"]


def pytest_collection_modifyitems(items: list) -> None:  # type: ignore[type-arg]
    """Under pytest-xdist (``--dist loadgroup``), tests that use a dedicated broker run on one
    worker: each worker would otherwise start its own Kafka, RabbitMQ and NATS."""
    import pytest

    for item in items:
        if any(name.startswith("dedicated_") for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("dedicated-brokers"))
