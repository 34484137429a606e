"""Shared pytest setup: real-broker fixtures come from tests/brokers.py."""

# Dedicated broker processes (tests/faults/instances.py) for tests that kill or stop them.
pytest_plugins = ["tests.brokers", "tests.faults.instances"]
