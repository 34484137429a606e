"""Errors of the event-sourcing toolkit, all under ``MqkitError``.

    MqkitError
    ├── ConcurrencyError        append's expected_version did not match the stream
    ├── UnknownEventType        a stored event's type has no registered class
    └── UpcastError             an event could not be brought to its class's schema version
"""

from __future__ import annotations

from mqkit.errors import MqkitError


class ConcurrencyError(MqkitError):
    """Another writer appended to the stream first: reload the aggregate and try again.

    ``expected`` is what the caller expected (``None`` for "any"); ``actual`` is the stream's
    version when the append was refused.
    """

    def __init__(self, stream: str, expected: int | None, actual: int) -> None:
        super().__init__(
            f"stream {stream!r} is at version {actual}, not the expected {expected}: "
            "another writer appended first; reload and retry"
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual


class UnknownEventType(MqkitError):
    """A stored event names a type that no ``EventTypes`` registry knows."""


class UpcastError(MqkitError):
    """An upcaster failed, or no chain leads from a stored version to the class's version."""
