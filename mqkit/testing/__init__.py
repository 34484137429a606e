"""Testing helpers for mqkit users and adapter authors.

- ``mqkit.testing.conformance``: the suite every transport must pass;
- ``mqkit.testing.plugin``: pytest fixtures (registered through the ``pytest11`` entry point);
- ``wait_until``: poll a condition with a deadline instead of sleeping a guessed time.
"""

from mqkit.testing.waiting import wait_until

__all__ = ["wait_until"]
