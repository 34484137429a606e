"""A saga definition: a name and an ordered list of steps, each an action and its compensation.

    order_saga = Saga("order", [
        Step("create-order", create_order, compensation=cancel_order),
        Step("reserve-inventory", remote("inventory.reserve"), remote("inventory.release")),
        ...
    ])

A step function is ``async def fn(ctx: StepContext) -> result``; the result (JSON-able) is
logged and handed to later steps as ``ctx.results[name]`` and to the step's own compensation
as ``ctx.result``. ``remote(topic)`` builds a step function that sends a command over the
orchestrator's client and waits for the participant's reply (see ``mqkit.saga.commands``).

A definition is immutable and holds no state: one may run any number of sagas at once.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mqkit.errors import ConfigurationError
from mqkit.middleware.retry import RetryPolicy
from mqkit.saga.model import Phase

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")

DEFAULT_ACTION_RETRY = RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=5.0)
DEFAULT_COMPENSATION_RETRY = RetryPolicy(max_attempts=5, base_delay=0.2, max_delay=30.0)


class Requester(Protocol):
    """Sends a command and waits for its reply (the orchestrator's ``RemoteCaller``)."""

    async def request(
        self, topic: str, payload: Any, *, idempotency_key: str, saga_id: str
    ) -> Any: ...


@dataclass(frozen=True)
class StepContext:
    """What a step function gets. ``idempotency_key`` is ``saga id:step:phase``.

    The same key is used for every attempt and after a restart, so a participant that
    records it (the ``Idempotency`` middleware, or a store transaction) applies the effect
    once however often the orchestrator has to ask.
    """

    saga_id: str
    saga_name: str
    step: str
    phase: Phase
    attempt: int
    data: Any
    results: Mapping[str, Any]
    result: Any = None
    """For a compensation: the action's logged result (None if it timed out or was lost)."""
    requester: Requester | None = field(default=None, repr=False)

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.saga_id, self.step, self.phase)

    async def request(self, topic: str, payload: Any) -> Any:
        """Send ``payload`` to ``topic`` as this step's command; the participant's answer."""
        if self.requester is None:
            raise ConfigurationError(
                f"step {self.step!r} sends a remote command but the orchestrator has no "
                "client: use Orchestrator(store, client=...)"
            )
        return await self.requester.request(
            topic, payload, idempotency_key=self.idempotency_key, saga_id=self.saga_id
        )


StepFn = Callable[[StepContext], Awaitable[Any]]


def idempotency_key(saga_id: str, step: str, phase: Phase) -> str:
    """The key every attempt of one step's action (or compensation) carries."""
    return f"{saga_id}:{step}:{phase.value}"


def default_payload(ctx: StepContext) -> Any:
    """A remote step's command: the saga's input and the results so far."""
    return {"saga_id": ctx.saga_id, "data": ctx.data, "results": dict(ctx.results),
            "result": ctx.result}


def remote(topic: str, payload: Callable[[StepContext], Any] = default_payload) -> StepFn:
    """A step function sending ``payload(ctx)`` as a command to ``topic``; returns the reply."""

    async def call(ctx: StepContext) -> Any:
        return await ctx.request(topic, payload(ctx))

    call.__qualname__ = f"remote({topic!r})"
    return call


@dataclass(frozen=True)
class Step:
    """One step. ``timeout`` (seconds) bounds each attempt of its action and compensation.

    ``retry`` retries the action's transient failures (a ``StepFailed`` or other permanent
    error, or a timeout, ends the step at once); ``compensation_retry`` retries a failing
    compensation, past which the saga is ``stuck``. Delays use full jitter.
    """

    name: str
    action: StepFn
    compensation: StepFn | None = None
    timeout: float = 30.0
    retry: RetryPolicy = DEFAULT_ACTION_RETRY
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY

    def __post_init__(self) -> None:
        check_name(self.name, "step")
        if not self.timeout > 0:
            raise ConfigurationError(f"step {self.name!r}: timeout must be > 0 seconds")
        if not callable(self.action) or (
            self.compensation is not None and not callable(self.compensation)
        ):
            raise ConfigurationError(f"step {self.name!r}: action and compensation must be "
                                     "async functions of a StepContext")


class Saga:
    """A named, ordered list of steps. Names are unique; at least one step."""

    def __init__(self, name: str, steps: Sequence[Step]) -> None:
        self.name = check_name(name, "saga")
        self.steps: tuple[Step, ...] = tuple(steps)
        if not self.steps:
            raise ConfigurationError(f"saga {name!r} has no steps")
        seen: set[str] = set()
        for step in self.steps:
            if not isinstance(step, Step):
                raise ConfigurationError(f"saga {name!r}: {step!r} is not a Step")
            if step.name in seen:
                raise ConfigurationError(f"saga {name!r}: two steps named {step.name!r}")
            seen.add(step.name)

    def __repr__(self) -> str:
        return f"<Saga {self.name} steps={[s.name for s in self.steps]}>"


def check_name(name: str, what: str) -> str:
    """``name`` if it is 1-100 letters, digits, ``_ . -`` (starting with a letter or digit)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"bad {what} name {name!r}: use 1-100 letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    return name
