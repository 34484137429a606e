"""Turn a user's async function into a delivery handler, by its type annotations.

``async def handle(order: Order, delivery: Delivery)``: the parameter annotated ``Delivery``
gets the delivery, one annotated ``Message`` the raw message, and the one other parameter the
payload decoded to its annotation (a pydantic model, ``dict``, ``bytes``, ``str``...;
unannotated means "JSON or bytes by content type"). A body that does not decode or validate
raises ``DecodeError``, which is permanent, so it is dead-lettered rather than retried.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, get_type_hints

from mqkit.codec import decode
from mqkit.errors import ConfigurationError
from mqkit.message import Delivery, Message
from mqkit.middleware.base import Handler

UserHandler = Callable[..., Awaitable[Any]]


def payload_type(func: UserHandler) -> Any:
    """The annotation of ``func``'s payload parameter (``Any`` if none)."""
    return _plan(func)[1]


def _plan(func: UserHandler) -> tuple[list[str], Any]:
    if not inspect.iscoroutinefunction(func) and not inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - callable objects with async __call__
    ):
        raise ConfigurationError(f"handler {func!r} must be an async function")
    try:
        hints = get_type_hints(func)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = {}
    roles: list[str] = []
    target: Any = Any
    for name, param in inspect.signature(func).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(name, param.annotation)
        if isinstance(annotation, type) and issubclass(annotation, Delivery):
            roles.append("delivery")
        elif annotation is Message:
            roles.append("message")
        elif param.default is not param.empty or param.kind is param.KEYWORD_ONLY:
            break  # parameters with defaults are the function's own (closures, options)
        elif "payload" in roles:
            raise ConfigurationError(
                f"handler {func.__qualname__} has two payload parameters; annotate extra "
                "ones as Delivery or Message"
            )
        else:
            if isinstance(annotation, str):
                raise ConfigurationError(
                    f"handler {func.__qualname__}: cannot resolve the annotation "
                    f"{annotation!r} of {name!r}; define the type at module level"
                )
            roles.append("payload")
            target = Any if annotation is inspect.Parameter.empty else annotation
    return roles, target


def body_decoder(target: Any) -> Callable[[Message], Any]:
    """``message -> payload`` for a payload annotated ``target`` (raises ``DecodeError``).
    Bodies wanted as ``bytes`` are passed through without a ``decode`` call."""
    if target is bytes:
        return _body
    return lambda message: decode(message.body, message.content_type, target)


def _body(message: Message) -> bytes:
    return message.body


def adapt(func: UserHandler) -> Handler:
    """A delivery handler calling ``func`` with the arguments its signature asks for.

    The handler is a plain function returning ``func``'s coroutine (no coroutine of its own
    per message); a body that does not decode raises ``DecodeError`` from the call itself,
    which every caller awaits in the same expression.
    """
    roles, target = _plan(func)
    to_payload = body_decoder(target)
    call: Callable[[Delivery], Awaitable[Any]]
    if roles == ["payload"]:

        def call(delivery: Delivery) -> Awaitable[Any]:
            return func(to_payload(delivery.message))

    else:

        def call(delivery: Delivery) -> Awaitable[Any]:
            message = delivery.message
            args: list[Any] = []
            for role in roles:
                if role == "payload":
                    args.append(to_payload(message))
                elif role == "delivery":
                    args.append(delivery)
                else:
                    args.append(message)
            return func(*args)

    call.__qualname__ = getattr(func, "__qualname__", "handler")
    return call
