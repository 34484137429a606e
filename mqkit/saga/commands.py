"""Remote steps: a command over any transport, answered by a reply with its correlation id.

Orchestrator side, ``RemoteCaller`` publishes each command to the participant's topic with
the step's idempotency key, a fresh correlation id and the header ``x-mqkit-saga-reply-to``
naming its own reply topic, then waits for the reply (the step's timeout bounds the wait).
It works on every transport: it needs no native request/reply, only publish and subscribe.

Participant side, ``participant(client, topic, group=...)`` registers an ordinary mqkit
subscriber whose return value is sent back as the reply::

    @participant(client, "inventory.reserve", group="inventory",
                 middleware=[Idempotency(store)])
    async def reserve(command: dict[str, Any]) -> dict[str, Any]:
        ...
        return {"reservation": "r-1"}

Its middleware, outermost first: logging, dead-letter, **reply**, retry, then yours (put
``Idempotency`` there). Replies: success (a duplicate absorbed by ``Idempotency`` replies
success too, with result None unless your handler recomputes it); ``StepFailed`` replies
failure and acks (a business "no"); other errors are retried by the broker, and once retry
gives up the failure is replied and the command dead-lettered as usual.

Reply body (JSON): ``{"ok": bool, "result": ..., "error": str | None, "duplicate": bool}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from mqkit import headers as h
from mqkit.errors import DecodeError
from mqkit.message import Delivery, new_id
from mqkit.middleware import DeadLetter, Logging, Retry, RetryPolicy
from mqkit.middleware.base import Handler, Middleware
from mqkit.saga.model import StepFailed

if TYPE_CHECKING:
    from mqkit.client import Client
    from mqkit.handlers import UserHandler

log = logging.getLogger("mqkit.saga.commands")

REPLY_TO = "x-mqkit-saga-reply-to"
"""Header naming the topic a participant replies to (not ``reply-to``: the client's own
request/reply would answer it a second time)."""
SAGA_ID = "x-mqkit-saga-id"
REPLY_GROUP = "mqkit-saga-orchestrator"

F = TypeVar("F", bound="UserHandler")


class RemoteCaller:
    """Sends step commands and routes replies back to the waiting step. One per orchestrator.

    The reply topic defaults to one per caller (``mqkit-saga-replies-<random>``), so two
    orchestrator processes never take each other's replies. A reply whose step is no longer
    waiting (it timed out, or came after a restart) is acked and ignored: the step's retry
    or recovery sends the command again with the same idempotency key.
    """

    def __init__(self, client: Client, *, reply_topic: str | None = None) -> None:
        self.client = client
        self.reply_topic = reply_topic or f"mqkit-saga-replies-{new_id()[:12]}"
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def request(
        self, topic: str, payload: Any, *, idempotency_key: str, saga_id: str
    ) -> Any:
        """Send ``payload`` to ``topic``; the reply's result, or ``StepFailed`` if it says no.

        Waits until a reply arrives or the caller is cancelled (the step's timeout).
        """
        await self._listen()
        correlation = new_id()
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = waiter
        try:
            await self.client.publish(
                topic, payload, key=saga_id, idempotency_key=idempotency_key,
                correlation_id=correlation,
                # A resend must reach the participant even on a de-duplicating broker: the
                # participant's Idempotency absorbs it and replies again.
                headers={
                    REPLY_TO: self.reply_topic,
                    SAGA_ID: saga_id,
                    h.DEDUP_ID: f"{idempotency_key}:{correlation}",
                },
            )
            reply = await waiter
        finally:
            self._pending.pop(correlation, None)
        if not reply.get("ok"):
            raise StepFailed(str(reply.get("error") or f"{topic} refused the command"))
        return reply.get("result")

    async def close(self) -> None:
        """Stop listening; pending requests are cancelled. Safe to call twice."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        for waiter in self._pending.values():
            waiter.cancel()

    async def _listen(self) -> None:
        async with self._lock:
            if self._listener is not None and not self._listener.done():
                return
            # Declared with its group first, so a reply sent before the subscription is
            # running waits for it (on brokers that retain unconsumed messages).
            await self.client.ensure_topic(self.reply_topic, groups=(REPLY_GROUP,))
            self._listener = asyncio.create_task(
                self._receive(), name=f"mqkit-saga-{self.reply_topic}"
            )
            if not self.client.capabilities.retains_unconsumed:
                await asyncio.sleep(0.2)  # let the subscription reach the broker first

    async def _receive(self) -> None:
        stream = self.client.consume(self.reply_topic, group=REPLY_GROUP, prefetch=100)
        try:
            async for delivery in stream:
                self._route(delivery)
                await delivery.ack()
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()

    def _route(self, delivery: Delivery) -> None:
        message = delivery.message
        waiter = self._pending.get(message.correlation_id or "")
        if waiter is None or waiter.done():
            log.debug("reply %s has no waiting step (late or after a restart)", message.id)
            return
        try:
            reply = json.loads(message.body)
            if not isinstance(reply, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            waiter.set_exception(DecodeError(f"bad saga reply {message.id}: {exc}"))
            return
        waiter.set_result(reply)


class Reply:
    """Middleware: answer a saga command on its reply topic (see the module docstring)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __call__(self, inner: Handler) -> Handler:
        client = self.client

        async def reply(delivery: Delivery) -> Any:
            message = delivery.message
            reply_to = message.headers.get(REPLY_TO)
            if reply_to is None:
                return await inner(delivery)

            async def send(body: dict[str, Any]) -> None:
                await client.publish(
                    reply_to, body, key=message.key, correlation_id=message.correlation_id,
                    causation_id=message.id,
                )

            try:
                result = await inner(delivery)
            except Exception as exc:
                if delivery.settled is not None:
                    raise
                await send({"ok": False, "result": None, "duplicate": False,
                            "error": f"{type(exc).__name__}: {exc}"})
                if isinstance(exc, StepFailed):
                    return None
                raise
            if delivery.settled == "nacked":
                return None  # retried later by the broker: the reply comes then
            await send({"ok": True, "result": result, "error": None,
                        "duplicate": bool(delivery.state.get("duplicate"))})
            return result

        return reply


def participant(
    client: Client,
    topic: str,
    *,
    group: str,
    middleware: Sequence[Middleware] = (),
    retry: RetryPolicy | None = None,
    concurrency: int = 8,
) -> Callable[[F], F]:
    """Decorator: subscribe ``func`` to saga commands on ``topic``; its return is the reply."""
    stack: list[Middleware] = [Logging(), DeadLetter(), Reply(client), Retry(retry),
                               *middleware]
    return client.subscribe(topic, group=group, middleware=stack, concurrency=concurrency)
