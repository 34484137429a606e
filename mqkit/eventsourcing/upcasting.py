"""Upcasters: bring old event versions up to date as they are read; never rewrite the store.

    upcasters = Upcasters()

    @upcasters.register("OrderCreated", 1)
    def price_to_subtotal(data: dict[str, Any]) -> dict[str, Any]:
        data["subtotal"] = data.pop("price")
        data["tax"] = 0
        return data                                     # now version 2

An upcaster registered for ``(type, n)`` turns version ``n`` data into version ``n + 1``.
``upcast`` runs the chain (v1 -> v2 -> v3 ...) until no upcaster matches. Each upcaster gets
a deep copy of the data, so the stored event (and any cached copy) is never changed.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

from mqkit.eventsourcing.errors import UpcastError
from mqkit.eventsourcing.events import RecordedEvent

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Upcasters:
    """Registry of upcasters per (event type, from-version). Safe to share once built."""

    def __init__(self) -> None:
        self._chain: dict[tuple[str, int], Upcaster] = {}

    def register(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: ``fn`` turns ``event_type`` data from ``from_version`` to the next."""
        if from_version < 1:
            raise ValueError("from_version must be >= 1")

        def add(fn: Upcaster) -> Upcaster:
            key = (event_type, from_version)
            if key in self._chain:
                raise ValueError(f"an upcaster for {event_type} v{from_version} already exists")
            self._chain[key] = fn
            return fn

        return add

    def __bool__(self) -> bool:
        return bool(self._chain)

    def upcast(self, event: RecordedEvent) -> RecordedEvent:
        """``event`` at its newest known version (the same object when none applies)."""
        version = event.schema_version
        step = self._chain.get((event.type, version))
        if step is None:
            return event
        data: dict[str, Any] = copy.deepcopy(dict(event.data))
        while step is not None:
            try:
                data = step(data)
            except Exception as exc:
                raise UpcastError(
                    f"upcasting {event.type} v{version} (position {event.position}) failed: "
                    f"{exc}"
                ) from exc
            if not isinstance(data, dict):
                raise UpcastError(f"upcaster for {event.type} v{version} returned no dict")
            version += 1
            step = self._chain.get((event.type, version))
        return dataclasses.replace(event, data=data, schema_version=version)
