"""Testing helpers for mqkit users and adapter authors.

- ``VirtualClock``: time for the memory transport that moves only when a test says so;
- ``join``: wait until a memory:// client's groups are drained, re-raising handler errors;
- ``assert_idempotent``: a hypothesis property that duplicates do not change effects;
- ``wait_until``: poll a condition with a deadline instead of sleeping a guessed time;
- ``mqkit.testing.conformance``: the suite every transport must pass;
- ``mqkit.testing.plugin``: pytest fixtures (registered through the ``pytest11`` entry point).

Chaos for the memory transport lives in ``mqkit.memory.Chaos``.
"""

from mqkit.memory import Chaos, SimulatedCrash
from mqkit.testing.clock import VirtualClock
from mqkit.testing.join import HandlerFailed, join
from mqkit.testing.waiting import wait_until

__all__ = [
    "Chaos",
    "HandlerFailed",
    "SimulatedCrash",
    "VirtualClock",
    "assert_idempotent",
    "join",
    "wait_until",
]


def __getattr__(name: str) -> object:
    # hypothesis is a test dependency: import the property helper only when asked for.
    if name == "assert_idempotent":
        from mqkit.testing.properties import assert_idempotent

        return assert_idempotent
    raise AttributeError(name)
