"""The consumer-thread watchdog: a thread that stops polling is reported with where it is."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import pytest

from mqkit.testing import wait_until
from mqkit.transport import TopicSpec
from mqkit_kafka import KafkaTransport
from mqkit_kafka.watchdog import ThreadWatch
from tests.kafka.helpers import topic_name


def _stuck_here(release: threading.Event) -> None:
    release.wait(10)


def _poll_until(watch: ThreadWatch, stop: threading.Event) -> None:
    while not stop.is_set():
        watch.polled()
        time.sleep(0.01)


def _watched(
    watch: ThreadWatch, run: Callable[[], None]
) -> tuple[threading.Thread, asyncio.Task[None]]:
    """Start ``run`` on a thread and ``watch`` on it."""
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, asyncio.create_task(watch.watch(thread))


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_a_thread_that_stops_polling_is_reported_once_with_where_it_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mqkit.kafka.subscriber")
    # Given a watched thread that polls, then blocks outside its loop, then polls again
    watch = ThreadWatch("orders/billing", stall_s=0.2)
    release, finish = threading.Event(), threading.Event()

    def run() -> None:
        watch.polled()
        _stuck_here(release)
        _poll_until(watch, finish)

    thread, watcher = _watched(watch, run)
    try:
        # When it stays blocked for several times the stall limit
        await asyncio.sleep(0.8)
        # Then one warning names the subscription and the function it is stuck in
        stalls = _lines(caplog, "has not polled")
        assert len(stalls) == 1, stalls
        assert "orders/billing" in stalls[0] and "_stuck_here" in stalls[0]
        # And once it polls again, that is said too
        release.set()
        await wait_until(lambda: bool(_lines(caplog, "polls again")), 5, what="the recovery")
    finally:
        release.set()
        finish.set()
        thread.join(5)
    # And the watch ends by itself with the thread
    await asyncio.wait_for(watcher, 5)


async def test_a_polling_thread_is_never_reported(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mqkit.kafka.subscriber")
    watch = ThreadWatch("quiet/group", stall_s=0.2)
    stop = threading.Event()
    thread, watcher = _watched(watch, lambda: _poll_until(watch, stop))
    await asyncio.sleep(0.6)
    stop.set()
    thread.join(5)
    await asyncio.wait_for(watcher, 5)
    assert not _lines(caplog, "polled") and not _lines(caplog, "polls again")


async def test_the_stall_clock_starts_with_the_watch(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mqkit.kafka.subscriber")
    # Given a watch made well before its thread starts (a subscription made, started later)
    watch = ThreadWatch("late/start", stall_s=0.2)
    await asyncio.sleep(0.4)
    stop = threading.Event()

    def run() -> None:
        time.sleep(0.1)  # connecting: the first poll comes a moment after the start
        _poll_until(watch, stop)

    # Then the time before the start does not count as a stall
    thread, watcher = _watched(watch, run)
    await asyncio.sleep(0.4)
    stop.set()
    thread.join(5)
    await asyncio.wait_for(watcher, 5)
    assert not _lines(caplog, "has not polled")


async def test_a_subscriptions_consumer_thread_is_watched_until_it_closes(
    transport: KafkaTransport,
) -> None:
    # Given a live subscription on the real broker
    topic = topic_name("watched")
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    sub = transport.subscription(topic, "g")
    await sub.wait_assigned(60)
    # Then its consumer thread keeps telling the watch that it polls
    first = sub._watch.polled_at
    await wait_until(lambda: sub._watch.polled_at > first + 0.3, 10, what="later polls")
    watcher = sub._watcher
    assert watcher is not None and not watcher.done()
    # And closing the subscription ends the watch
    await sub.aclose()
    await asyncio.sleep(0)
    assert watcher.done()
