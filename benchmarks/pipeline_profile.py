"""Where a pipeline process spends its time: pyinstrument, summarised by code owner.

Samples the event loop's thread (not the Kafka adapter's consumer and producer threads,
whose CPU still shows in the process's CPU seconds). Each frame's own time is credited to
who owns its file: mqkit's core, mqkit's adapters, the benchmark, a client library,
pydantic, asyncio, or waiting in the selector (idle: nothing to do, or waiting on a broker).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pyinstrument import Profiler

OWNERS = (
    ("/adapters/mqkit_", "mqkit adapters"),
    ("/mqkit/", "mqkit core"),
    ("/benchmarks/", "benchmark code"),
    ("confluent_kafka", "confluent-kafka"),
    ("/nats/", "nats-py"),
    ("/pika/", "pika"),
    ("/psycopg", "psycopg"),
    ("/pydantic", "pydantic"),
    ("selectors.py", "idle (selector wait)"),
    ("/asyncio/", "asyncio"),
)


C_CALLS = (
    ("epoll", "idle (selector wait)"),
    ("select", "idle (selector wait)"),
    ("Producer.", "confluent-kafka"),
    ("Consumer.", "confluent-kafka"),
    ("SchemaValidator", "pydantic"),
)


def owner_of(file_path: str | None, function: str, caller: str) -> str:
    """Who owns a frame: by its file, or for a C call by its name, else its caller's owner."""
    path = file_path or ""
    if path and not path.startswith("<"):
        for marker, owner in OWNERS:
            if marker in path:
                return owner
        return "other Python (stdlib)"
    for marker, owner in C_CALLS:
        if marker in function:
            return owner
    return caller


class RoleProfiler:
    def __init__(self, directory: str, role: str) -> None:
        self.path = Path(directory) / f"{role}.txt"
        self.profiler = Profiler(interval=0.002, async_mode="disabled")
        self.profiler.start()

    @classmethod
    def maybe(cls, directory: str | None, role: str) -> RoleProfiler | None:
        return cls(directory, role) if directory else None

    def finish(self) -> dict[str, Any]:
        """Stop; write the text report; return the share of time per owner and top frames."""
        session = self.profiler.stop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(self.profiler.output_text(unicode=True, show_all=False))
        root = session.root_frame()
        owners: Counter[str] = Counter()
        frames: Counter[str] = Counter()
        stack = [(root, "other Python (stdlib)")] if root is not None else []
        while stack:
            frame, caller = stack.pop()
            owner = owner_of(frame.file_path, frame.function, caller)
            stack.extend((child, owner) for child in frame.children)
            own = frame.total_self_time
            if own <= 0:
                continue
            owners[owner] += own
            where = frame.file_path_short if not frame.is_synthetic else owner
            frames[f"{frame.function} ({where}:{frame.line_no})"] += own
        total = sum(owners.values()) or 1.0
        return {
            "file": str(self.path),
            "seconds": total,
            "owners": {k: round(100 * v / total, 1) for k, v in owners.most_common()},
            "top_frames": [[k, round(100 * v / total, 1)] for k, v in frames.most_common(12)],
        }
