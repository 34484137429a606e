"""What a saga log holds: saga states, log entries and records, and the saga errors.

A saga moves through these states; only ``completed`` and ``compensated`` are final::

    running ──> completed
       │
       └─(a step failed or timed out)─> compensating ──> compensated
                                             │
                                             └─(a compensation ran out of attempts)─> stuck

``stuck`` waits for an operator (``Orchestrator.resume``); it is never dropped. Each
transition is one ``LogEntry``, appended to the saga log before the orchestrator acts on it.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from mqkit.errors import ConfigurationError, MqkitError, PermanentError


class SagaState(enum.Enum):
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    STUCK = "stuck"

    @property
    def unfinished(self) -> bool:
        """True for the states ``recover()`` picks up (``stuck`` waits for an operator)."""
        return self in (SagaState.RUNNING, SagaState.COMPENSATING)


class Phase(enum.Enum):
    SAGA = "saga"
    """A saga-level transition (its ``status`` is a ``SagaState`` value)."""
    ACTION = "action"
    COMPENSATION = "compensation"


class Status(enum.Enum):
    """What happened to one step's action or compensation."""

    STARTED = "started"
    """Written before the call: after a crash the outcome is unknown."""
    DONE = "done"
    FAILED = "failed"
    """The action failed for good: it did not happen, so it is not compensated."""
    TIMED_OUT = "timed-out"
    """It may have happened: an action that timed out is compensated too."""
    RETRYING = "retrying"
    """A compensation attempt failed; another follows after a backoff."""


@dataclass(frozen=True)
class LogEntry:
    """One transition. ``step`` is the step's index (None for saga-level transitions)."""

    phase: Phase
    status: str
    step: int | None = None
    step_name: str | None = None
    attempt: int = 0
    detail: Any = None
    """JSON-able: an action's result, or ``{"error": ...}`` for a failure."""
    at: float = 0.0
    seq: int = 0
    """Position in the saga's log, from 1; assigned by the store."""

    def detail_json(self) -> str:
        return dumps(self.detail)


@dataclass
class SagaRecord:
    """A saga as its log tells it: identity, input, state and every transition so far."""

    id: str
    name: str
    state: SagaState
    data: Any
    created_at: float
    updated_at: float
    error: str | None = None
    entries: list[LogEntry] = field(default_factory=list)


@dataclass(frozen=True)
class SagaSummary:
    """One row of ``SagaStore.list``: no log entries."""

    id: str
    name: str
    state: SagaState
    created_at: float
    updated_at: float
    error: str | None = None


class SagaError(MqkitError):
    """Base of the saga errors."""


class StepFailed(PermanentError, SagaError):
    """Raise from a step (or a participant) to say "no" for good: the saga compensates.

    A business refusal (card declined, out of stock): not retried, and the step's own
    action is taken as not having happened.
    """


class UnknownSaga(SagaError, LookupError):
    """No saga with that id in the log, or no definition registered for its name."""


class SagaConflict(SagaError):
    """A saga id was reused for different input, or a saga is in the wrong state for a call."""


def dumps(value: Any) -> str:
    """JSON for the log; raises ``ConfigurationError`` for a value that is not JSON-able."""
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"saga data and step results must be JSON-able (no pickling): {exc}"
        ) from exc


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(frozen=True)
class SagaOutcome:
    """How a saga ended (or where it stopped): what ``start``, ``recover`` and ``resume`` return."""

    id: str
    name: str
    state: SagaState
    results: dict[str, Any]
    error: str | None = None
