"""Consuming one group's queue: long polls, batched deletes, nack by visibility, heartbeat.

A ``Subscription`` is the async iterator ``SqsTransport.subscribe`` returns. Behind it:

- one poller: ``ReceiveMessage`` of up to 10 (never more than ``prefetch`` unsettled
  messages held at once) with long polling (``wait_time``, 20 s by default), on a daemon
  thread of its own so a poll never holds a thread a publish or an ack needs. It refills
  by whole batches: while received messages still wait to be handed out it receives only
  when a full batch fits (a receive of one per ack would double the calls);
- a heartbeat (unless ``extend_visibility=false``): every ``visibility_timeout / 3`` seconds
  the visibility of every held message is extended (``ChangeMessageVisibilityBatch``), so a
  handler that runs longer than the visibility timeout does not see its message redelivered
  meanwhile;
- ``ack`` deletes, batched (``DeleteMessageBatch`` of up to 10); it returns once SQS
  confirmed the delete. Acks that come while a delete is in flight are sent together when it
  returns (group commit: handlers that finish at once then cost one call per ten acks, not
  one each). Otherwise an ack waits up to ``ACK_LINGER`` for others only while another
  handed-out delivery is unsettled: when none is (a loop that acks each delivery before
  taking the next), it is sent at once;
- ``take(max_items, timeout)`` hands out many deliveries per call and ``ack_many`` deletes
  them 10 per ``DeleteMessageBatch`` (batch handlers use both): receive 10, handle, delete
  10, as a plain boto3 consumer does;
- each delivery has a ``deadline``: when its visibility runs out, moved by every extension
  that succeeded. A settlement after it (or after an extension that came too late) is still
  sent, and logged as a "stale ack" warning: SQS may have given the message to another
  consumer meanwhile;
- ``nack(delay)`` sets the message's visibility timeout to ``delay`` (whole seconds, rounded
  up; 0 without a delay), so SQS redelivers it then without blocking other messages;
- ``attempt`` is SQS's ``ApproximateReceiveCount``.

Closing (``aclose``) stops polling and hands back at once (visibility 0) every message
received but not yet handed out, including those of a poll still in flight when it
returns; messages already handed out can still be settled. If the process dies, SQS makes
its unsettled messages visible again when their visibility timeout ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from mqkit.message import DeadLetterPublisher, Delivery
from mqkit_sqs import headers as codec
from mqkit_sqs.config import BATCH_SIZE, SqsConfig
from mqkit_sqs.connection import Connection
from mqkit_sqs.errors import SettleError, UnknownTopicError, convert
from mqkit_sqs.topology import Topology

log = logging.getLogger("mqkit.sqs")

ACK_LINGER = 0.005
"""Seconds an ack waits for others to share its ``DeleteMessageBatch``."""
POLL_ERROR_BACKOFF = 1.0
SHORT_POLL_IDLE = (0.02, 0.5)
"""With ``wait_time=0`` (short polling), the first and the longest pause after an empty
receive: the pause doubles while receives stay empty."""
SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"]


class SqsDelivery(Delivery):
    """A received SQS message; settled through its subscription."""

    __slots__ = ("_lapsed", "_subscription", "deadline", "receipt")

    def __init__(
        self,
        message: Any,
        attempt: int,
        receipt: str,
        subscription: Subscription,
        dead_letter_publisher: DeadLetterPublisher,
    ) -> None:
        super().__init__(message, attempt, dead_letter_publisher)
        self.receipt = receipt
        self.deadline = 0.0
        """When (``time.monotonic()``) the visibility runs out unless extended."""
        self._lapsed = False  # an extension came after the visibility had run out
        self._subscription = subscription

    async def _ack(self) -> None:
        self._check_lease("ack")
        await self._subscription.delete(self)

    async def _nack(self, delay: float | None) -> None:
        self._check_lease("nack")
        await self._subscription.release(self, delay)

    def _check_lease(self, how: str) -> None:
        now = time.monotonic()
        if self._lapsed or now > self.deadline:
            sub = self._subscription
            if self.settled == "dead-lettered":
                how = "dead-letter"
            log.warning(
                "stale %s: delivery %s of %s/%s passed its ack timeout (visibility timeout "
                "%ds, %.1fs ago) and may have been redelivered; sending it anyway",
                how, self.message.id, sub.topic, sub.group,
                sub.visibility_timeout, now - self.deadline,
            )


class Subscription:
    """Deliveries of one group's queue. See the module docstring."""

    def __init__(
        self,
        connection: Connection,
        topology: Topology,
        config: SqsConfig,
        topic: str,
        group: str,
        prefetch: int,
        dead_letter_publisher: DeadLetterPublisher,
    ) -> None:
        self._conn = connection
        self._topology = topology
        self._config = config
        self.topic = topic
        self.group = group
        self._prefetch = prefetch
        self._publish_dead_letter = dead_letter_publisher
        self.visibility_timeout = config.visibility_timeout
        self._url = ""
        self._ready: asyncio.Queue[SqsDelivery | BaseException | None] = asyncio.Queue()
        self._held: dict[str, SqsDelivery] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._acks: list[tuple[str, asyncio.Future[None]]] = []
        self._ack_timer: asyncio.TimerHandle | None = None
        self._visibility_lock = asyncio.Lock()
        self._deleting: set[asyncio.Task[None]] = set()  # DeleteMessageBatch calls in flight

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> SqsDelivery:
        if not self._tasks and not self._closed:
            self._start()
        if self._closed:
            raise StopAsyncIteration
        if self._ready.empty():
            self._starving()
        item = await self._ready.get()
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def take(self, max_items: int, timeout: float) -> list[SqsDelivery]:
        """Up to ``max_items`` deliveries: waits at most ``timeout`` seconds for the first,
        then returns those already received (never waits to fill). ``[]`` once closed."""
        if not self._tasks and not self._closed:
            self._start()
        ready = self._ready
        out: list[SqsDelivery] = []
        if self._closed:
            return out
        if ready.empty():
            self._starving()
            try:
                async with asyncio.timeout(timeout):
                    first = await ready.get()
            except TimeoutError:
                return out
            if not isinstance(first, SqsDelivery):
                return self._end_take(out, first)
            out.append(first)
        while len(out) < max_items and not ready.empty():
            item = ready.get_nowait()
            if not isinstance(item, SqsDelivery):
                return self._end_take(out, item)
            out.append(item)
        return out

    def _end_take(self, out: list[SqsDelivery], item: BaseException | None) -> list[SqsDelivery]:
        """The poller's last word (an error) or the close mark, met by ``take``: hand out
        what came before it; the next call gets it."""
        if out:
            self._ready.put_nowait(item)  # the poller has stopped: nothing comes after it
            return out
        if item is None:
            self._ready.put_nowait(None)  # __anext__ ends on it too
            return out
        raise item

    def _start(self) -> None:
        name = f"{self.topic}/{self.group}"
        self._tasks = [asyncio.create_task(self._poll(), name=f"mqkit-sqs-poll-{name}")]
        if self._config.extend_visibility:
            self._tasks.append(
                asyncio.create_task(self._heartbeat(), name=f"mqkit-sqs-heartbeat-{name}")
            )

    async def aclose(self) -> None:
        """Stop polling; hand back what was received but not handed out. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        unhanded: list[SqsDelivery] = []
        while not self._ready.empty():
            item = self._ready.get_nowait()
            if isinstance(item, SqsDelivery):
                unhanded.append(item)
        self._ready.put_nowait(None)
        for delivery in unhanded:
            self._held.pop(delivery.receipt, None)
            delivery.settled = "handed back"
        if unhanded:
            await self._set_visibility([d.receipt for d in unhanded], 0, "hand back")
        await self.flush()

    # --- receiving ------------------------------------------------------------------------
    async def _poll(self) -> None:
        try:
            self._url = await self._topology.queue_url(self.topic, self.group)
        except Exception as exc:
            self._ready.put_nowait(exc)
            return
        idle = 0.0
        while not self._closed:
            await self._room.wait()
            if not self._has_room():
                self._room.clear()
                continue
            wanted = min(BATCH_SIZE, self._prefetch - len(self._held))
            try:
                messages = await self._receive(wanted)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = convert(exc, f"receiving from {self.topic!r}/{self.group!r}")
                if isinstance(error, UnknownTopicError):
                    self._ready.put_nowait(error)
                    return
                log.warning("sqs:// poll failed, retrying in %.1fs: %s", POLL_ERROR_BACKOFF, error)
                await asyncio.sleep(POLL_ERROR_BACKOFF)
                continue
            if not messages and self._config.wait_time == 0:
                first, longest = SHORT_POLL_IDLE
                idle = min(idle * 2, longest) if idle else first
                await asyncio.sleep(idle)
                continue
            idle = 0.0
            now = time.monotonic()
            for raw in messages:
                delivery = self._delivery(raw)
                delivery.deadline = now + self._config.visibility_timeout
                self._held[delivery.receipt] = delivery
                self._ready.put_nowait(delivery)
            if not self._has_room():
                self._room.clear()

    def _receive(self, count: int) -> asyncio.Future[list[dict[str, Any]]]:
        client = self._conn.sqs_receive
        url = self._url
        config = self._config

        def receive() -> list[dict[str, Any]]:
            reply = client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=config.wait_time,
                VisibilityTimeout=config.visibility_timeout,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=SYSTEM_ATTRIBUTES,
            )
            return list(reply.get("Messages", []))

        def orphaned(messages: list[dict[str, Any]]) -> None:
            # The poll came back after the subscription closed: hand its messages back.
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(messages)
            ]
            with contextlib.suppress(Exception):
                client.change_message_visibility_batch(QueueUrl=url, Entries=entries)

        return _in_daemon_thread(receive, orphaned, f"mqkit-sqs-receive-{self.topic}")

    def _delivery(self, raw: dict[str, Any]) -> SqsDelivery:
        system: dict[str, str] = raw.get("Attributes", {})
        attributes = raw.get("MessageAttributes", {})
        body = str(raw.get("Body", ""))
        sqs_id = str(raw.get("MessageId", ""))
        try:
            message = codec.decode(self.topic, body, attributes, system, sqs_id)
        except Exception:  # a malformed envelope: deliver the body as a foreign message
            message = codec.decode(self.topic, body, {}, system, sqs_id)
        attempt = int(system.get("ApproximateReceiveCount", "1") or 1)
        return SqsDelivery(
            message, attempt, str(raw["ReceiptHandle"]), self, self._publish_dead_letter
        )

    def _has_room(self) -> bool:
        """Whether the poller should receive now: a full batch fits under ``prefetch``, or
        some room is left and nothing received waits to be handed out."""
        free = self._prefetch - len(self._held)
        return free >= min(BATCH_SIZE, self._prefetch) or (free > 0 and self._ready.empty())

    def _starving(self) -> None:
        """The consumer found nothing to take: let the poller fill what room is left."""
        if len(self._held) < self._prefetch:
            self._room.set()

    def _forget(self, delivery: SqsDelivery) -> None:
        self._held.pop(delivery.receipt, None)
        if self._has_room():
            self._room.set()

    def _unsettled_out(self) -> int:
        """Deliveries handed out and not yet settled (those that could still join a batch)."""
        return len(self._held) - self._ready.qsize()

    # --- settling -------------------------------------------------------------------------
    async def delete(self, delivery: SqsDelivery) -> None:
        """Ack: delete the message; returns once SQS confirmed (batched with others)."""
        self._forget(delivery)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks.append((delivery.receipt, future))
        if len(self._acks) >= BATCH_SIZE:
            self._flush_soon(0)
        elif self._deleting:
            pass  # sent together with the acks that follow when the delete in flight returns
        elif self._unsettled_out() <= 0:
            self._flush_soon(0)  # no other ack could come to share it
        elif self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_LINGER, self._flush_soon, 0)
        await future

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Ack every delivery of ``deliveries`` (the batch handler's settlement): deleted 10
        per ``DeleteMessageBatch``; returns once SQS confirmed them all. Raises
        ``AlreadySettledError``, acking none, if one was settled already; ``SettleError``
        (after the others were deleted) if SQS did not delete one."""
        for delivery in deliveries:
            if delivery.settled is not None:
                delivery._claim("acked")  # raises AlreadySettledError
        mine: list[SqsDelivery] = []
        others: list[Delivery] = []
        for delivery in deliveries:
            if isinstance(delivery, SqsDelivery) and delivery._subscription is self:
                mine.append(delivery)
            else:
                others.append(delivery)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for sqs_delivery in mine:
            sqs_delivery._claim("acked")
            sqs_delivery._check_lease("ack")
            self._forget(sqs_delivery)
            future: asyncio.Future[None] = loop.create_future()
            self._acks.append((sqs_delivery.receipt, future))
            futures.append(future)
        if futures:
            self._flush_soon(0)
        results = await asyncio.gather(*futures, return_exceptions=True)
        for delivery in others:
            await delivery.ack()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _flush_soon(self, _: int) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        batch, self._acks = self._acks, []
        for start in range(0, len(batch), BATCH_SIZE):
            task = asyncio.create_task(self._delete_batch(batch[start : start + BATCH_SIZE]))
            self._deleting.add(task)
            task.add_done_callback(self._delete_done)

    async def flush(self) -> None:
        """Send the acks waiting for a batch and wait for them."""
        if self._acks:
            self._flush_soon(0)
        while self._deleting:
            await asyncio.gather(*list(self._deleting), return_exceptions=True)

    def _delete_done(self, task: asyncio.Task[None]) -> None:
        self._deleting.discard(task)
        if not self._deleting and self._acks:
            self._flush_soon(0)  # the acks that came in while the delete was out

    async def _delete_batch(self, batch: list[tuple[str, asyncio.Future[None]]]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": r} for i, (r, _) in enumerate(batch)]
        try:
            reply = await self._conn.call(
                self._conn.sqs.delete_message_batch, QueueUrl=self._url, Entries=entries
            )
        except Exception as exc:
            error = convert(exc, f"acking on {self.topic!r}/{self.group!r}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(SettleError(str(error)))
            return
        failed = {int(f["Id"]): f for f in reply.get("Failed", [])}
        for index, (_, future) in enumerate(batch):
            if future.done():
                continue
            failure = failed.get(index)
            if failure is None:
                future.set_result(None)
            else:
                future.set_exception(
                    SettleError(f"SQS did not delete a message: {failure.get('Code')}")
                )

    async def release(self, delivery: SqsDelivery, delay: float | None) -> None:
        """Nack: make the message visible again after ``delay`` seconds (rounded up)."""
        self._forget(delivery)
        seconds = self._config.delay_seconds(delay)
        async with self._visibility_lock:
            try:
                await self._conn.call(
                    self._conn.sqs.change_message_visibility,
                    QueueUrl=self._url,
                    ReceiptHandle=delivery.receipt,
                    VisibilityTimeout=seconds,
                )
            except Exception as exc:
                error = convert(exc, f"nacking on {self.topic!r}/{self.group!r}")
                raise SettleError(str(error)) from exc

    # --- heartbeat ------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        interval = self._config.heartbeat_interval
        timeout = self._config.visibility_timeout
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            due = [d for d in self._held.values() if d.deadline - now < timeout - interval / 2]
            if not due:
                continue
            async with self._visibility_lock:
                due = [d for d in due if d.receipt in self._held]
                now = time.monotonic()  # the new visibility counts from no earlier than this
                for delivery in due:
                    if delivery.deadline < now:
                        delivery._lapsed = True  # SQS may have redelivered it already
                failed = await self._set_visibility([d.receipt for d in due], timeout, "extend")
                for delivery in due:
                    if delivery.receipt not in failed:
                        delivery.deadline = now + timeout

    async def _set_visibility(self, receipts: list[str], seconds: int, why: str) -> set[str]:
        """Set the visibility of ``receipts``; returns those SQS did not change."""
        failed: set[str] = set()
        for start in range(0, len(receipts), BATCH_SIZE):
            chunk = receipts[start : start + BATCH_SIZE]
            entries = [
                {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": seconds}
                for i, r in enumerate(chunk)
            ]
            try:
                reply = await self._conn.call(
                    self._conn.sqs.change_message_visibility_batch,
                    QueueUrl=self._url,
                    Entries=entries,
                )
            except Exception as exc:
                log.warning("sqs:// could not %s visibility: %s", why, convert(exc, why))
                failed.update(chunk)
                continue
            for failure in reply.get("Failed", []):
                log.warning("sqs:// could not %s visibility: %s", why, failure.get("Code"))
                with contextlib.suppress(KeyError, ValueError, IndexError):
                    failed.add(chunk[int(failure["Id"])])
        return failed


def _in_daemon_thread(
    fn: Callable[[], list[dict[str, Any]]],
    orphaned: Callable[[list[dict[str, Any]]], None],
    name: str,
) -> asyncio.Future[list[dict[str, Any]]]:
    """Run ``fn`` on a daemon thread; its result goes to ``orphaned`` if nobody awaits it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[list[dict[str, Any]]] = loop.create_future()

    def run() -> None:
        result: list[dict[str, Any]] = []
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as exc:
            error = exc

        def settle() -> None:
            if future.done():
                if result:
                    threading.Thread(target=orphaned, args=(result,), daemon=True).start()
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is gone
            if result:
                orphaned(result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
