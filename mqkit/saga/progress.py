"""Replay a saga's log into where it stands: a pure function, the heart of recovery.

The log is the truth: the orchestrator keeps nothing else. After a crash, ``progress_of``
tells ``Orchestrator`` what is done, what is unknown (started, no outcome) and which
compensations are still owed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mqkit.saga.model import LogEntry, Phase, SagaState, Status


@dataclass
class Progress:
    """Where a saga stands. Keys of the dicts are step indexes."""

    state: SagaState
    error: str | None
    actions: dict[int, Status] = field(default_factory=dict)
    """The last status of each step's action that has begun."""
    action_attempts: dict[int, int] = field(default_factory=dict)
    results: dict[int, Any] = field(default_factory=dict)
    compensated: set[int] = field(default_factory=set)
    compensation_failures: dict[int, int] = field(default_factory=dict)
    """Failed attempts since the saga last entered ``compensating`` (or was resumed)."""

    def owes_compensation(self, step: int) -> bool:
        """True if the step's action happened or may have happened, and is not undone."""
        status = self.actions.get(step)
        if status is None or status is Status.FAILED or step in self.compensated:
            return False
        return status in (Status.DONE, Status.TIMED_OUT, Status.STARTED)


def progress_of(state: SagaState, error: str | None, entries: list[LogEntry]) -> Progress:
    """Fold ``entries`` (oldest first) into a ``Progress``."""
    p = Progress(state, error)
    for e in entries:
        if e.phase is Phase.SAGA:
            p.compensation_failures.clear()
            continue
        if e.step is None:
            continue
        status = Status(e.status)
        if e.phase is Phase.ACTION:
            p.actions[e.step] = status
            if status is Status.STARTED:
                p.action_attempts[e.step] = max(e.attempt, p.action_attempts.get(e.step, 0))
            elif status is Status.DONE:
                p.results[e.step] = e.detail
        elif status is Status.DONE:
            p.compensated.add(e.step)
        elif status in (Status.RETRYING, Status.FAILED, Status.TIMED_OUT):
            p.compensation_failures[e.step] = p.compensation_failures.get(e.step, 0) + 1
    return p
