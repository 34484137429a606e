"""The handler and middleware types, and composition."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mqkit.message import Delivery

Handler = Callable[[Delivery], Awaitable[Any]]
Middleware = Callable[[Handler], Handler]


def compose(handler: Handler, middleware: Sequence[Middleware]) -> Handler:
    """Wrap ``handler`` so that ``middleware[0]`` is the outermost layer."""
    for layer in reversed(middleware):
        handler = layer(handler)
    return handler


def group_of(delivery: Delivery) -> str:
    """The group a delivery was received for (set by the consumer that runs the chain)."""
    group: str = delivery.state.get("group", "")
    return group
