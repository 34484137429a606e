"""Report a consumer thread that stopped coming back to its poll loop.

librdkafka's own log lines reach Python only through the consumer's poll calls (see
``logs.py``), so a consumer thread stuck anywhere else goes silent: no error, no log line,
no records. ``ThreadWatch`` runs on the event loop, notices a thread that has not polled for
``stall_s`` seconds and says where it is (its innermost frames), once per stall, and again
when it polls again.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

STALL_S = 60.0
"""Seconds without a poll before a consumer thread is reported. Longer than anything the
thread waits for on purpose (a revocation waits at most ``revoke_timeout`` + 5 s)."""

log = logging.getLogger("mqkit.kafka.subscriber")


class ThreadWatch:
    """``polled()`` from the watched thread on every turn of its loop; ``watch(thread)`` on
    the event loop until the thread ends (or the task is cancelled)."""

    def __init__(self, name: str, stall_s: float = STALL_S) -> None:
        self.name = name
        self.stall_s = stall_s
        self.polled_at = time.monotonic()

    def polled(self) -> None:
        self.polled_at = time.monotonic()

    async def watch(self, thread: threading.Thread) -> None:
        interval = min(5.0, self.stall_s / 4)
        self.polled_at = time.monotonic()  # the clock starts with the watch, not before
        stalled_since: float | None = None
        while thread.is_alive():
            await asyncio.sleep(interval)
            polled_at = self.polled_at
            idle = time.monotonic() - polled_at
            if idle < self.stall_s:
                if stalled_since is not None and polled_at > stalled_since:
                    log.warning("%s: the consumer thread polls again", self.name)
                    stalled_since = None
                continue
            if stalled_since is None and thread.is_alive():
                stalled_since = polled_at
                log.warning(
                    "%s: the consumer thread has not polled Kafka for %.0f s (no records, "
                    "no rebalance, no librdkafka log line until it does); it is in:\n%s",
                    self.name, idle, where(thread),
                )


def where(thread: threading.Thread, frames: int = 6) -> str:
    """The innermost ``frames`` frames of ``thread``'s stack, formatted."""
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None:
        return "  (no frame: the thread is not running Python code)"
    return "".join(traceback.format_stack(frame, limit=frames))
