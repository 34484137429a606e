"""Publish each saga transition as an event to a topic, for dashboards and alerting.

    orchestrator.add_hook(TopicEvents(client, "saga-events"))

Each event is JSON: ``saga_id, saga, state, phase, status, step, attempt, seq, at, detail``,
keyed by saga id (so one saga's events stay in order where the broker orders by key) and
with the idempotency key ``saga id:seq`` (a republished event is recognisable). A failed
publish is logged by the orchestrator and does not stop the saga: events are a view, the
log is the truth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mqkit.saga.orchestrator import Transition

if TYPE_CHECKING:
    from mqkit.client import Client


def event_of(t: Transition) -> dict[str, Any]:
    e = t.entry
    return {
        "saga_id": t.saga_id, "saga": t.saga_name, "state": t.state.value,
        "phase": e.phase.value, "status": e.status, "step": e.step_name, "attempt": e.attempt,
        "seq": e.seq, "at": e.at, "detail": e.detail,
    }


class TopicEvents:
    """A transition hook publishing every transition to ``topic`` through ``client``."""

    def __init__(self, client: Client, topic: str) -> None:
        self.client = client
        self.topic = topic

    async def __call__(self, transition: Transition) -> None:
        await self.client.publish(
            self.topic, event_of(transition), key=transition.saga_id,
            idempotency_key=f"{transition.saga_id}:{transition.entry.seq}",
        )
