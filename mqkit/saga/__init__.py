"""Sagas: a multi-step business transaction with compensations, persisted and recoverable.

Orchestration (``Orchestrator``): one coordinator runs the steps of a ``Saga`` in order,
writes every transition to a saga log (SQLite by default, PostgreSQL for production) before
acting, compensates completed (and timed-out) steps in reverse order on failure, retries
failing compensations with backoff and marks the saga ``stuck`` past the limit. After a crash
``recover()`` drives every unfinished saga to ``completed`` or ``compensated``. Steps are
local async functions or remote commands (``remote(topic)``) answered by ``participant``
subscribers over any transport.

Choreography needs no coordinator: services react to each other's events and publish
compensating events; ``examples/saga_choreography.py`` shows the same order flow that way.
"""

from mqkit.saga.commands import RemoteCaller, Reply, participant
from mqkit.saga.definition import Saga, Step, StepContext, StepFn, idempotency_key, remote
from mqkit.saga.events import TopicEvents
from mqkit.saga.model import (
    LogEntry,
    Phase,
    SagaConflict,
    SagaError,
    SagaOutcome,
    SagaRecord,
    SagaState,
    SagaSummary,
    Status,
    StepFailed,
    UnknownSaga,
)
from mqkit.saga.orchestrator import Orchestrator, Transition, TransitionHook
from mqkit.saga.store import SagaStore, open_saga_store
from mqkit.saga.timing import StepTimeout

__all__ = [
    "LogEntry",
    "Orchestrator",
    "Phase",
    "RemoteCaller",
    "Reply",
    "Saga",
    "SagaConflict",
    "SagaError",
    "SagaOutcome",
    "SagaRecord",
    "SagaState",
    "SagaStore",
    "SagaSummary",
    "Status",
    "Step",
    "StepContext",
    "StepFailed",
    "StepFn",
    "StepTimeout",
    "TopicEvents",
    "Transition",
    "TransitionHook",
    "UnknownSaga",
    "idempotency_key",
    "open_saga_store",
    "participant",
    "remote",
]
