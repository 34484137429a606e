"""The orchestrator: runs sagas step by step, compensates, persists every transition, recovers.

    orchestrator = Orchestrator(store, [order_saga], client=client)   # client: remote steps
    outcome = await orchestrator.start(order_saga, {"order_id": "o-1"})
    ...
    await orchestrator.recover()       # after a restart: finish every unfinished saga

Rules (each transition is appended to the saga log *before* the orchestrator acts on it):

- steps run in order; an action's transient failures are retried with full-jitter backoff
  up to its ``retry.max_attempts``;
- a ``StepFailed`` (or other permanent error, or transient errors past the limit) fails the
  step: its action did not happen, so the completed steps are compensated in reverse order;
- a timeout (the step's ``timeout``, or any ``TimeoutError``) may have happened, so that step
  is compensated too, first;
- a failing compensation is retried with backoff up to ``compensation_retry.max_attempts``
  (a permanent error ends at once); then the saga is ``stuck``, logged at ERROR and kept
  for an operator (``resume``), never dropped;
- each action and compensation carries the idempotency key ``saga id:step:phase``: after a
  crash an action whose outcome is unknown is run again with the same key.

Safe to use from many tasks: one process drives a given saga once at a time (a second
``start``/``recover`` of it awaits the first). Do not run ``recover`` for the same store in
two processes at once: two drivers of one saga would both act (keys keep participants safe,
but the log would interleave).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mqkit.clock import Clock, LoopClock
from mqkit.errors import ErrorKind
from mqkit.message import new_id
from mqkit.saga.definition import Saga, Step, StepContext, StepFn, check_name
from mqkit.saga.model import (
    LogEntry,
    Phase,
    SagaConflict,
    SagaOutcome,
    SagaRecord,
    SagaState,
    Status,
    UnknownSaga,
)
from mqkit.saga.progress import Progress, progress_of
from mqkit.saga.store import SagaStore
from mqkit.saga.timing import sleep, within

if TYPE_CHECKING:
    from mqkit.client import Client
    from mqkit.saga.commands import RemoteCaller

log = logging.getLogger("mqkit.saga")


@dataclass(frozen=True)
class Transition:
    """A transition that was just written to the log (what hooks and events see)."""

    saga_id: str
    saga_name: str
    state: SagaState
    entry: LogEntry


TransitionHook = Callable[[Transition], Awaitable[None]]


def describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:500]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Run:
    """One saga being driven: its definition, log-derived progress and current state."""

    def __init__(self, saga: Saga, record: SagaRecord) -> None:
        self.saga = saga
        self.id = record.id
        self.data = record.data
        self.p: Progress = progress_of(record.state, record.error, record.entries)

    def results(self) -> dict[str, Any]:
        return {self.saga.steps[i].name: r for i, r in sorted(self.p.results.items())}

    def outcome(self) -> SagaOutcome:
        return SagaOutcome(self.id, self.saga.name, self.p.state, self.results(), self.p.error)


class Orchestrator:
    """Runs and recovers sagas against one saga log. See the module docstring."""

    def __init__(
        self,
        store: SagaStore,
        sagas: Iterable[Saga] = (),
        *,
        client: Client | None = None,
        clock: Clock | None = None,
        hooks: Sequence[TransitionHook] = (),
        reply_topic: str | None = None,
        recover_concurrency: int = 16,
    ) -> None:
        self.store = store
        self.clock: Clock = clock or LoopClock()
        self.hooks = list(hooks)
        self.recover_concurrency = max(1, recover_concurrency)
        self._sagas: dict[str, Saga] = {}
        for saga in sagas:
            self.register(saga)
        self._active: dict[str, asyncio.Task[SagaOutcome]] = {}
        self._caller: RemoteCaller | None = None
        if client is not None:
            from mqkit.saga.commands import RemoteCaller

            self._caller = RemoteCaller(client, reply_topic=reply_topic)

    def register(self, saga: Saga) -> None:
        """Make ``saga`` known by name (``recover`` finds definitions here)."""
        known = self._sagas.get(saga.name)
        if known is not None and known is not saga:
            raise SagaConflict(f"another saga is already registered as {saga.name!r}")
        self._sagas[saga.name] = saga

    def add_hook(self, hook: TransitionHook) -> None:
        self.hooks.append(hook)

    # --- public API -------------------------------------------------------------------
    async def start(
        self, saga: Saga | str, data: Any = None, *, saga_id: str | None = None
    ) -> SagaOutcome:
        """Run a new saga to its end and return how it ended.

        With ``saga_id`` the call is idempotent: starting an id that exists (same saga, same
        data) drives or reports that saga instead of starting another; different data
        raises ``SagaConflict``.
        """
        definition = self._definition(saga)
        saga_id = check_name(saga_id, "saga id") if saga_id is not None else new_id()
        now = time.time()
        first = LogEntry(Phase.SAGA, SagaState.RUNNING.value, at=now)
        record = SagaRecord(saga_id, definition.name, SagaState.RUNNING, data, now, now,
                            entries=[first])
        if await self.store.create(record):
            await self._notify(Transition(saga_id, definition.name, SagaState.RUNNING, first))
            return await self._drive_once(definition, record, current=True)
        existing = await self._load(saga_id)
        if existing.name != definition.name or existing.data != data:
            raise SagaConflict(
                f"saga id {saga_id!r} already names a {existing.name!r} saga with other data"
            )
        return await self._drive_once(definition, existing)

    async def recover(self) -> list[SagaOutcome]:
        """Drive every ``running`` or ``compensating`` saga in the log to its end.

        Sagas whose definition is not registered are left as they are and logged at ERROR
        (their outcome is not in the list). Stuck sagas wait for ``resume``.
        """
        pending = await self.store.list(
            states=[SagaState.RUNNING, SagaState.COMPENSATING], limit=None
        )
        gate = asyncio.Semaphore(self.recover_concurrency)

        async def one(saga_id: str, name: str) -> SagaOutcome | None:
            definition = self._sagas.get(name)
            if definition is None:
                log.error("cannot recover saga %s: no definition registered as %r", saga_id, name)
                return None
            async with gate:
                return await self._drive_once(definition, await self._load(saga_id))

        found = await asyncio.gather(*(one(s.id, s.name) for s in pending))
        return [o for o in found if o is not None]

    async def resume(self, saga_id: str) -> SagaOutcome:
        """Retry the compensations of a ``stuck`` saga (after an operator fixed the cause)."""
        record = await self._load(saga_id)
        if record.state is not SagaState.STUCK:
            raise SagaConflict(f"saga {saga_id} is {record.state.value}, not stuck")
        definition = self._definition(record.name)
        entry = LogEntry(Phase.SAGA, SagaState.COMPENSATING.value, detail={"resumed": True})
        stored = await self.store.append(saga_id, entry, SagaState.COMPENSATING, record.error)
        await self._notify(Transition(saga_id, record.name, SagaState.COMPENSATING, stored))
        return await self._drive_once(definition, await self._load(saga_id))

    async def get(self, saga_id: str) -> SagaRecord:
        """The saga's record and log; ``UnknownSaga`` if there is none."""
        return await self._load(saga_id)

    async def close(self) -> None:
        """Stop listening for replies. Sagas in flight are left to ``recover``."""
        if self._caller is not None:
            await self._caller.close()

    # --- driving ----------------------------------------------------------------------
    async def _drive_once(
        self, saga: Saga, record: SagaRecord, *, current: bool = False
    ) -> SagaOutcome:
        task = self._active.get(record.id)
        if task is None:
            # Unless it was just created, ``record`` may have been read before another drive
            # of this saga ended: driving from it would redo logged steps. Read the log again
            # once this drive is registered, so no other drive can be running.
            work = (self._drive(_Run(saga, record)) if current
                    else self._drive_latest(saga, record.id))
            task = asyncio.ensure_future(work)
            self._active[record.id] = task
            task.add_done_callback(lambda _: self._active.pop(record.id, None))
        return await asyncio.shield(task)

    async def _drive_latest(self, saga: Saga, saga_id: str) -> SagaOutcome:
        return await self._drive(_Run(saga, await self._load(saga_id)))

    async def _drive(self, run: _Run) -> SagaOutcome:
        p = run.p
        if p.state is SagaState.RUNNING:
            failure = await self._forward(run)
            if failure is None:
                await self._saga_state(run, SagaState.COMPLETED)
                return run.outcome()
            await self._saga_state(run, SagaState.COMPENSATING, error=failure)
        if p.state is SagaState.COMPENSATING:
            if await self._backward(run):
                await self._saga_state(run, SagaState.COMPENSATED, error=p.error)
        return run.outcome()

    async def _forward(self, run: _Run) -> str | None:
        """Run the actions not done yet; the failure that stops them, or None."""
        for i, step in enumerate(run.saga.steps):
            status = run.p.actions.get(i)
            if status is Status.DONE:
                continue
            if status in (Status.FAILED, Status.TIMED_OUT):  # crashed before "compensating"
                return run.p.error or f"step {step.name} {status.value}"
            failure = await self._act(run, i, step)
            if failure is not None:
                return failure
        return None

    async def _act(self, run: _Run, i: int, step: Step) -> str | None:
        attempt = run.p.action_attempts.get(i, 0)
        policy, classify = step.retry, step.retry.classifier.classify
        while True:
            attempt += 1
            await self._step_entry(run, i, Phase.ACTION, Status.STARTED, attempt)
            try:
                result = await self._call(run, i, step.action, Phase.ACTION, attempt)
            except Exception as exc:
                error = f"step {step.name}: {describe(exc)}"
                if isinstance(exc, TimeoutError):
                    await self._step_entry(run, i, Phase.ACTION, Status.TIMED_OUT, attempt,
                                           {"error": error})
                    return error
                if classify(exc) is ErrorKind.PERMANENT or attempt >= policy.max_attempts:
                    await self._step_entry(run, i, Phase.ACTION, Status.FAILED, attempt,
                                           {"error": error})
                    return error
                delay = policy.delay(attempt)
                await self._step_entry(run, i, Phase.ACTION, Status.RETRYING, attempt,
                                       {"error": error, "delay": round(delay, 6)})
                await sleep(self.clock, delay)
                continue
            await self._step_entry(run, i, Phase.ACTION, Status.DONE, attempt, result)
            run.p.results[i] = result
            return None

    async def _backward(self, run: _Run) -> bool:
        """Compensate owed steps, last first; False if the saga got stuck."""
        for i in reversed(range(len(run.saga.steps))):
            step = run.saga.steps[i]
            if not run.p.owes_compensation(i) or step.compensation is None:
                continue
            if not await self._compensate(run, i, step, step.compensation):
                return False
        return True

    async def _compensate(self, run: _Run, i: int, step: Step, fn: StepFn) -> bool:
        policy, classify = step.compensation_retry, step.compensation_retry.classifier.classify
        while True:
            failures = run.p.compensation_failures.get(i, 0)
            attempt = failures + 1
            await self._step_entry(run, i, Phase.COMPENSATION, Status.STARTED, attempt)
            try:
                result = await self._call(run, i, fn, Phase.COMPENSATION, attempt)
            except Exception as exc:
                error = f"compensation of {step.name}: {describe(exc)}"
                run.p.compensation_failures[i] = failures + 1
                permanent = classify(exc) is ErrorKind.PERMANENT and not isinstance(
                    exc, TimeoutError
                )
                if permanent or attempt >= policy.max_attempts:
                    await self._step_entry(run, i, Phase.COMPENSATION, Status.FAILED, attempt,
                                           {"error": error}, state=SagaState.STUCK, error=error)
                    run.p.state, run.p.error = SagaState.STUCK, error
                    log.error("saga %s (%s) is STUCK after %d attempt(s): %s; an operator must "
                              "fix the cause, then Orchestrator.resume(%r)",
                              run.id, run.saga.name, attempt, error, run.id)
                    return False
                delay = policy.delay(attempt)
                await self._step_entry(run, i, Phase.COMPENSATION, Status.RETRYING, attempt,
                                       {"error": error, "delay": round(delay, 6)})
                await sleep(self.clock, delay)
                continue
            await self._step_entry(run, i, Phase.COMPENSATION, Status.DONE, attempt, result)
            run.p.compensated.add(i)
            return True

    async def _call(self, run: _Run, i: int, fn: StepFn, phase: Phase, attempt: int) -> Any:
        step = run.saga.steps[i]
        ctx = StepContext(
            saga_id=run.id,
            saga_name=run.saga.name,
            step=step.name,
            phase=phase,
            attempt=attempt,
            data=run.data,
            results=run.results(),
            result=run.p.results.get(i),
            requester=self._caller,
        )
        return await within(self.clock, step.timeout, fn(ctx))

    # --- the log ----------------------------------------------------------------------
    async def _step_entry(
        self,
        run: _Run,
        i: int,
        phase: Phase,
        status: Status,
        attempt: int,
        detail: Any = None,
        *,
        state: SagaState | None = None,
        error: str | None = None,
    ) -> None:
        entry = LogEntry(phase, status.value, i, run.saga.steps[i].name, attempt, detail,
                         time.time())
        new_state = state or run.p.state
        stored = await self.store.append(run.id, entry, new_state, error or run.p.error)
        if phase is Phase.ACTION:
            run.p.actions[i] = status
        await self._notify(Transition(run.id, run.saga.name, new_state, stored))

    async def _saga_state(self, run: _Run, state: SagaState, error: str | None = None) -> None:
        entry = LogEntry(Phase.SAGA, state.value, detail={"error": error} if error else None,
                         at=time.time())
        stored = await self.store.append(run.id, entry, state, error)
        run.p.state, run.p.error = state, error
        run.p.compensation_failures.clear()
        await self._notify(Transition(run.id, run.saga.name, state, stored))

    async def _notify(self, transition: Transition) -> None:
        for hook in self.hooks:
            try:
                await hook(transition)
            except Exception as exc:  # an observer must never break a saga
                log.warning("saga transition hook %r failed: %s", hook, describe(exc))

    def _definition(self, saga: Saga | str) -> Saga:
        if isinstance(saga, Saga):
            self.register(saga)
            return saga
        found = self._sagas.get(saga)
        if found is None:
            raise UnknownSaga(f"no saga registered as {saga!r} (known: {sorted(self._sagas)})")
        return found

    async def _load(self, saga_id: str) -> SagaRecord:
        record = await self.store.get(saga_id)
        if record is None:
            raise UnknownSaga(f"no saga {saga_id!r} in the log")
        return record
