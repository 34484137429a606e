"""``mqkit bench``: how fast mqkit moves messages on one broker, next to what it is built on.

For ``--url`` it runs, in one process and in interleaved rounds (round 1: a, b, c, d;
round 2: a, b, c, d; ...), and reports the median of each figure:

- (a) the bare transport: publish in batches, ``subscribe`` and ack each delivery;
- (b) the ``Client`` with the full stack: logging, dead-letter, retry, idempotency (in
  memory) and a timeout, publishing through ``publish_batch``;
- (c) on ``memory://``: a bounded ``asyncio.Queue`` pass of the same bodies, the ceiling;
- (d) on ``memory://``, when Kombu is installed: Kombu's own ``memory://`` transport.

Figures: publish msgs/s; consume msgs/s end to end (first publish to last ack); latency
p50/p99 from publish timestamp to handler start, in a separate phase at a fixed
``LATENCY_RATE``; CPU microseconds per message (process time over the throughput phase,
steadier than msgs/s on a shared machine); the process's peak RSS. Ratios compare end-to-end
rates with (a) and (c). Targets are reported, never asserted: this is a benchmark, not a test.

``main`` blocks and runs its own event loop: call it from synchronous code.
"""

from __future__ import annotations

import asyncio
import gc
import math
import platform
import resource
import statistics
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from rich import box
from rich.console import Console
from rich.table import Table

from mqkit.bench_baselines import KombuMemory, PlainQueue, kombu_available
from mqkit.bench_runners import BareTransport, FullStack, Runner, Throughput
from mqkit.errors import ConfigurationError
from mqkit.url import BrokerURL

LATENCY_RATE = 5000.0
"""Messages per second in the latency phase."""
LATENCY_SECONDS = 1.0

__all__ = ["Row", "Target", "main", "percentile", "runners_for", "targets"]


@dataclass(frozen=True)
class Row:
    """One contender's medians over the rounds. Rates are msgs/s, times milliseconds."""

    key: str
    label: str
    count: int
    size: int
    rounds: int
    consumed: int
    """The fewest messages consumed in any round (``count`` when nothing was lost)."""
    publish_rate: float
    consume_rate: float
    latency_p50_ms: float
    latency_p99_ms: float
    cpu_us_per_msg: float
    peak_rss_mib: float
    """The process's peak RSS after this contender's last round (process-wide, so it only grows)."""
    rss_growth_mib: float
    """How much this contender's phases raised the process's peak RSS, summed over rounds."""
    vs_bare: float | None
    """``consume_rate`` over the bare transport's (None if (a) is missing)."""
    vs_queue: float | None
    """``consume_rate`` over the ``asyncio.Queue`` ceiling's (memory:// only)."""


@dataclass(frozen=True)
class Target:
    """A goal we want to know whether we meet: ``measured >= wanted`` (ratios)."""

    name: str
    measured: float
    wanted: float

    @property
    def met(self) -> bool:
        return self.measured >= self.wanted


def runners_for(url: str) -> list[Runner]:
    """The contenders for ``url``: (a) and (b) always; (c) and (d) on ``memory://`` only."""
    found: list[Runner] = [BareTransport(url), FullStack(url)]
    if BrokerURL.parse(url).scheme == "memory":
        found.append(PlainQueue())
        if kombu_available():
            found.append(KombuMemory())
    return found


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank ``pct`` percentile of ``values`` (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def peak_rss_mib() -> float:
    """The process's peak resident set size so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@dataclass
class _Samples:
    runs: list[Throughput]
    p50: list[float]
    p99: list[float]
    peak: float = 0.0
    growth: float = 0.0


async def _measure(
    runners: Sequence[Runner], count: int, size: int, rounds: int
) -> dict[str, _Samples]:
    run_id = uuid.uuid4().hex[:8]
    latency_count = max(1, min(count, int(LATENCY_RATE * LATENCY_SECONDS)))
    samples = {r.key: _Samples([], [], []) for r in runners}
    for round_no in range(1, rounds + 1):
        tag = f"mqkit-bench.{run_id}.r{round_no}"
        for runner in runners:
            s = samples[runner.key]
            gc.collect()
            before = peak_rss_mib()
            s.runs.append(await runner.throughput(count, size, tag))
            gc.collect()
            seen = await runner.latency(latency_count, size, LATENCY_RATE, tag)
            s.p50.append(percentile(seen, 50) * 1000)
            s.p99.append(percentile(seen, 99) * 1000)
            s.peak = peak_rss_mib()
            s.growth += s.peak - before
    return samples


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0


def _rows(
    runners: Sequence[Runner], samples: dict[str, _Samples], count: int, size: int, rounds: int
) -> list[Row]:
    med = statistics.median
    consume = {
        key: med(_rate(t.consumed, t.total_seconds) for t in s.runs) for key, s in samples.items()
    }
    bare, queue = consume.get("bare"), consume.get("queue")
    rows = []
    for runner in runners:
        s = samples[runner.key]
        rate = consume[runner.key]
        rows.append(
            Row(
                key=runner.key,
                label=runner.label,
                count=count,
                size=size,
                rounds=rounds,
                consumed=min(t.consumed for t in s.runs),
                publish_rate=med(_rate(t.count, t.publish_seconds) for t in s.runs),
                consume_rate=rate,
                latency_p50_ms=med(s.p50),
                latency_p99_ms=med(s.p99),
                cpu_us_per_msg=med(t.cpu_seconds / max(1, t.consumed) * 1e6 for t in s.runs),
                peak_rss_mib=s.peak,
                rss_growth_mib=s.growth,
                vs_bare=rate / bare if bare else None,
                vs_queue=rate / queue if queue else None,
            )
        )
    return rows


def targets(rows: Sequence[Row]) -> list[Target]:
    """The goals that can be checked from ``rows`` (the memory:// ones need (c) and (d))."""
    by = {r.key: r for r in rows}
    found: list[Target] = []
    bare = by.get("bare")
    if bare is None or bare.consume_rate <= 0:
        return found
    if "queue" in by and by["queue"].consume_rate > 0:
        found.append(Target("bare ≥ 15% of asyncio.Queue", bare.vs_queue or 0.0, 0.15))
    if "kombu" in by and by["kombu"].consume_rate > 0:
        found.append(
            Target("bare ≥ 3x kombu memory://", bare.consume_rate / by["kombu"].consume_rate, 3.0)
        )
    if "client" in by:
        found.append(Target("full stack ≥ 50% of bare", by["client"].vs_bare or 0.0, 0.5))
    return found


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _safe_url(url: str) -> str:
    safe = BrokerURL.parse(url).safe()
    # urlsplit/urlunsplit drops the "//" of an empty host ("memory://" -> "memory:").
    return safe.replace(":", "://", 1) if "://" in url and "://" not in safe else safe


def render(rows: Sequence[Row], url: str, console: Console) -> None:
    """Print ``rows`` as a table, then the targets and what the figures mean."""
    first = rows[0]
    try:
        mqkit_version = version("mqkit")
    except PackageNotFoundError:
        mqkit_version = "unknown"
    table = Table(
        title=(
            f"mqkit bench {_safe_url(url)}: {first.count:,} msgs of {first.size} B, "
            f"medians of {first.rounds} interleaved round(s)\n"
            f"Python {platform.python_version()} ({platform.python_implementation()}), "
            f"mqkit {mqkit_version}"
        ),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("", no_wrap=True)
    for name in ("pub k/s", "e2e k/s", "vs bare", "vs queue", "p50 ms", "p99 ms", "CPU µs"):
        table.add_column(name, justify="right")
    table.add_column("RSS MiB", justify="right", no_wrap=True)
    for r in rows:
        lost = "" if r.consumed >= r.count else f" LOST {r.count - r.consumed}"
        table.add_row(
            f"{r.label[:3]} {r.key}{lost}",
            f"{r.publish_rate / 1000:,.1f}",
            f"{r.consume_rate / 1000:,.1f}",
            _ratio(r.vs_bare),
            _ratio(r.vs_queue),
            f"{r.latency_p50_ms:.3f}",
            f"{r.latency_p99_ms:.3f}",
            f"{r.cpu_us_per_msg:.1f}",
            f"{r.peak_rss_mib:.0f} +{r.rss_growth_mib:.0f}",
        )
    console.print(table)
    for r in rows:
        console.print(f"  {r.label}", highlight=False)
    for t in targets(rows):
        verdict = "[green]met[/green]" if t.met else "[red]MISSED[/red]"
        console.print(
            f"target {t.name}: measured {t.measured:.2f}, wanted ≥ {t.wanted:g}: {verdict}"
        )
    console.print(
        f"pub: publish rate; e2e: first publish to last ack; vs bare/queue: e2e over (a)/(c). "
        f"Latency: {LATENCY_RATE:,.0f} msgs/s for up to {LATENCY_SECONDS:g} s, publish "
        "timestamp to handler start. CPU: process time per message in the throughput phase. "
        "RSS: the process's peak so far +how much this contender raised it.",
        highlight=False,
    )


def main(url: str, count: int, size: int, rounds: int, console: Console | None = None) -> list[Row]:
    """Run the benchmark on ``url``, print its table, return its rows. Blocks; runs a loop."""
    if count < 1 or size < 0 or rounds < 1:
        raise ConfigurationError("bench needs count >= 1, size >= 0 and rounds >= 1")
    runners = runners_for(url)
    samples = asyncio.run(_measure(runners, count, size, rounds))
    rows = _rows(runners, samples, count, size, rounds)
    render(rows, url, console or Console())
    return rows
