"""Typed events, the rows an event store keeps, and the registry between them.

An ``Event`` is a frozen pydantic model with two class-level facts: ``event_type`` (the name
stored with it; the class name unless set) and ``schema_version`` (1 unless set). Bump
``schema_version`` when the shape changes and register upcasters (``mqkit.eventsourcing
.upcasting``) from the old versions.

``NewEvent`` is what ``EventStore.append`` takes; ``RecordedEvent`` is what reading returns:
the same plus the stream version, the global position and the time it was recorded.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from mqkit.eventsourcing.errors import UnknownEventType, UpcastError
from mqkit.message import new_id


class Event(BaseModel):
    """Base of typed events. Subclasses may set ``event_type`` and ``schema_version``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("event_type"):
            cls.event_type = cls.__name__
        if cls.schema_version < 1:
            raise ValueError(f"{cls.__name__}.schema_version must be >= 1")


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended. ``event_id`` is unique and becomes the outbox message
    id and idempotency key."""

    type: str
    data: Mapping[str, Any]
    schema_version: int = 1
    metadata: Mapping[str, str] = field(default_factory=dict)
    event_id: str = field(default_factory=new_id)

    @classmethod
    def of(cls, event: Event, metadata: Mapping[str, str] | None = None) -> NewEvent:
        """The ``NewEvent`` for a typed event (its fields as JSON-compatible data)."""
        return cls(
            type=event.event_type,
            data=event.model_dump(mode="json"),
            schema_version=event.schema_version,
            metadata=dict(metadata or {}),
        )


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: ``version`` counts from 1 within its stream; ``position`` counts
    from 1 over every stream of the store, in commit order and without gaps."""

    position: int
    stream: str
    version: int
    type: str
    schema_version: int
    data: Mapping[str, Any]
    metadata: Mapping[str, str]
    event_id: str
    recorded_at: float = field(default_factory=time.time)


class EventTypes:
    """Event type name -> ``Event`` class, for decoding what the store returns."""

    def __init__(self, classes: Iterable[type[Event]] = ()) -> None:
        self._classes: dict[str, type[Event]] = {}
        for cls in classes:
            self.register(cls)

    def register(self, cls: type[Event]) -> type[Event]:
        """Add ``cls`` (usable as a class decorator). A second class for one name raises."""
        known = self._classes.get(cls.event_type)
        if known is not None and known is not cls:
            raise ValueError(f"event type {cls.event_type!r} is already {known.__qualname__}")
        self._classes[cls.event_type] = cls
        return cls

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._classes

    def decode(self, recorded: RecordedEvent) -> Event:
        """The typed event; its schema version must be the class's (upcast first)."""
        cls = self._classes.get(recorded.type)
        if cls is None:
            raise UnknownEventType(
                f"no event class registered for type {recorded.type!r} "
                f"(stream {recorded.stream!r}, version {recorded.version})"
            )
        if recorded.schema_version != cls.schema_version:
            raise UpcastError(
                f"{recorded.type} is stored at schema version {recorded.schema_version} but "
                f"{cls.__qualname__} is version {cls.schema_version}: register upcasters"
            )
        return cls.model_validate(recorded.data)
